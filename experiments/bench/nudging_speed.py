"""Nudging speed, side by side in one process: the cached decoder vs the chunked reference
decoder, vs base-only generation with a KV cache, and batch 16 vs batch 1.

Same models, same prompts, greedy, `--max-new-tokens` (default 128) output tokens:

    python experiments/bench/nudging_speed.py                 # tiny-base-large + tiny-aligned-small
    python experiments/bench/nudging_speed.py --nudging tiny-aligned-large  # same tokenizer
    python experiments/bench/nudging_speed.py --device cuda   # on a GPU

Every run is repeated `--reps` times in alternation (A B C ... A B C ...), so a slow spell of a
shared machine hits every run alike; the table shows medians, and each ratio is the median of
the per-repetition ratios. Prints the table and writes
`experiments/bench/results/nudging_speed[_<tag>].json`. The cached and reference outputs are also
compared (exact-match rate), since a fast wrong decoder is no use. Timings exclude model loading.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nudgekit.engines.base import GenerationRequest  # noqa: E402
from nudgekit.engines.hf import HFEngine  # noqa: E402
from nudgekit.models import load_model, load_tokenizer  # noqa: E402
from nudgekit.nudging import CachedNudgingDecoder, ChunkedNudgingDecoder  # noqa: E402
from nudgekit.nudging.text import encode  # noqa: E402
from nudgekit.zoo import base_prompt, chat_prompt, resolve, tiny_problems  # noqa: E402

Runs = dict[str, Callable[[], list[str]]]
RESULTS = ROOT / "experiments" / "bench" / "results"


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def load(name: str, device: str) -> HFEngine:
    path = name if Path(name).exists() else str(resolve(name))
    return HFEngine(load_model(path, device=device), load_tokenizer(path), max_batch_size=64)


def prompts(nudging: HFEngine, n: int) -> tuple[list[str], list[str]]:
    """Tiny-world test questions rendered for the base (plain) and the nudging model (chat)."""
    problems = tiny_problems("test", n=n)
    pb = [base_prompt(p.question) for p in problems]
    return pb, [chat_prompt(nudging.tokenizer, p.question) for p in problems]


def hf_generate(engine: HFEngine, prompts: list[str], max_new: int, batch: int) -> list[str]:
    """Base-only `model.generate` (greedy, KV cache), left-padded batches of `batch` prompts."""
    tok, out = engine.tokenizer, []
    for start in range(0, len(prompts), batch):
        enc = tok(
            prompts[start : start + batch],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        ).to(engine.device)
        with torch.inference_mode():
            ids = engine.model.generate(
                **enc,
                max_new_tokens=max_new,
                do_sample=False,
                use_cache=True,
                pad_token_id=tok.pad_token_id,
            )
        out += tok.batch_decode(ids[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
    return out


def engine_generate(engine: HFEngine, prompts: list[str], max_new: int, batch: int) -> list[str]:
    """Base-only generation through nudgekit's `hf` engine, `batch` prompts per call."""
    reqs = [GenerationRequest(p, max_new_tokens=max_new, temperature=0.0, seed=0) for p in prompts]
    return [
        r.samples[0].text
        for start in range(0, len(reqs), batch)
        for r in engine.generate(reqs[start : start + batch])
    ]


def measure(runs: Runs, reps: int) -> tuple[dict[str, list[float]], dict[str, list[str]]]:
    """Seconds of every run per repetition (alternating A B C ... A B C ...), last outputs."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    outputs: dict[str, list[str]] = {}
    for _ in range(reps):
        for name, fn in runs.items():
            outputs[name], secs = timed(fn)
            seconds[name].append(secs)
    return seconds, outputs


def ratio(seconds: dict[str, list[float]], a: str, b: str, work: dict[str, int] | None = None):
    """Median over repetitions of time(a) / time(b), or with `work` (output tokens per run) of
    throughput(a) / throughput(b): runs that write different amounts compare by tokens/s."""
    per_rep = [ta / tb for ta, tb in zip(seconds[a], seconds[b])]
    if work is not None:
        per_rep = [(work[a] / ta) / (work[b] / tb) for ta, tb in zip(seconds[a], seconds[b])]
    return statistics.median(per_rep)


def machine(args) -> dict:
    return {
        "device": args.device,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def print_table(seconds: dict[str, list[float]], tokens: dict[str, int]) -> None:
    print(f"{'run (median of alternated reps)':<40} {'seconds':>9} {'out tokens':>10} {'tok/s':>8}")
    for name, secs in seconds.items():
        med = statistics.median(secs)
        print(f"{name:<40} {med:>9.2f} {tokens[name]:>10d} {tokens[name] / med:>8.1f}")


def write(result: dict, stem: str, tag: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stem}{'_' + tag if tag else ''}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return path


REF = "chunked reference (1 question at a time)"


def cached_name(batch: int) -> str:
    return f"cached, batch {batch}"


def speed_runs(base, nudging, pb, pn, args) -> tuple[Runs, dict]:
    """The runs compared; `decoders` keeps the decoders for their counters."""
    kw = dict(gamma=args.gamma, chunk_tokens=args.chunk_tokens, max_new_tokens=args.max_new_tokens)
    dec = {"ref": ChunkedNudgingDecoder(base, nudging, **kw)}
    dec |= {b: CachedNudgingDecoder(base, nudging, batch_size=b, **kw) for b in args.batches}
    texts = lambda d: [o.text for o in d.decode(pb, pn)]  # noqa: E731
    m = args.max_new_tokens
    runs = {REF: lambda: texts(dec["ref"])}
    runs |= {cached_name(b): (lambda b=b: texts(dec[b])) for b in args.batches}
    if args.no_base_only:
        return runs, dec
    runs |= {
        "base-only hf engine, batch 1": lambda: engine_generate(base, pb, m, 1),
        "base-only hf engine, batch 16": lambda: engine_generate(base, pb, m, 16),
        "base-only model.generate, batch 1": lambda: hf_generate(base, pb, m, 1),
        "base-only model.generate, batch 16": lambda: hf_generate(base, pb, m, 16),
    }
    return runs, dec


def ratio_pairs(batches: list[int], base_only: bool = True) -> dict[str, tuple[str, str, bool]]:
    """name -> (a, b, by throughput?) for every ratio the table reports."""
    out = {f"reference time / cached b{b} time": (REF, cached_name(b), False) for b in batches}
    lo, hi = min(batches), max(batches)
    if hi > lo:
        out[f"cached b{hi} / cached b{lo} throughput"] = (cached_name(hi), cached_name(lo), True)
    for b in (1, 16):
        if b in batches and base_only:
            for side in ("generate", "hf engine"):
                base = "base-only model.generate" if side == "generate" else "base-only hf engine"
                out[f"cached b{b} / base-only {side} b{b} throughput"] = (
                    cached_name(b),
                    f"{base}, batch {b}",
                    True,
                )
    return out


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="tiny-base-large")
    ap.add_argument("--nudging", default="tiny-aligned-small")
    ap.add_argument("--n", type=int, default=16, help="questions (tiny-world test split)")
    ap.add_argument("--reps", type=int, default=2, help="alternated repetitions of every run")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--gamma", type=float, default=0.3)
    ap.add_argument("--chunk-tokens", type=int, default=16)
    ap.add_argument(
        "--batches",
        type=int,
        nargs="+",
        default=[1, 16],
        help="batch sizes of the cached decoder (each its own run)",
    )
    ap.add_argument(
        "--no-base-only",
        action="store_true",
        help="skip the base-only runs (long question lists: the decoders only)",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (all runs)")
    ap.add_argument("--tag", default="", help="suffix of the results file")
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    base, nudging = load(args.base, args.device), load(args.nudging, args.device)
    pb, pn = prompts(nudging, args.n)
    runs, dec = speed_runs(base, nudging, pb, pn, args)
    CachedNudgingDecoder(base, nudging, max_new_tokens=16).decode(pb[:2], pn[:2])  # warm-up
    seconds, outputs = measure(runs, args.reps)
    count = lambda texts: sum(len(encode(base.tokenizer, t)) for t in texts)  # noqa: E731
    tokens = {name: count(texts) for name, texts in outputs.items()}
    ref = outputs[REF]
    same = {f"batch {b}": sum(x == y for x, y in zip(ref, outputs[cached_name(b)])) / len(ref)
            for b in args.batches}  # fmt: skip
    pairs = ratio_pairs(args.batches, base_only=not args.no_base_only)
    ratios = {k: ratio(seconds, a, b, tokens if tp else None) for k, (a, b, tp) in pairs.items()}
    print_table(seconds, tokens)
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}")
    print(f"exact match vs reference: {same}")
    settings = {k: v for k, v in vars(args).items() if k not in ("device", "threads", "tag")}
    write(
        {
            **settings,
            **machine(args),
            "seconds_per_rep": seconds,
            "median_seconds": {k: statistics.median(v) for k, v in seconds.items()},
            "output_tokens": tokens,
            "ratios": ratios,
            "exact_match_vs_reference": same,
            "reference_engine_calls": dec["ref"].calls,
            "cached_forwards": {f"batch {b}": dec[b].forwards for b in args.batches},
        },
        "nudging_speed",
        args.tag,
    )


if __name__ == "__main__":
    main()
