"""Nudging speed, side by side in one process: the cached decoder vs the chunked reference
decoder, vs base-only generation with a KV cache, and batch 16 vs batch 1.

Same models, same prompts, greedy, `--max-new-tokens` (default 128) output tokens:

    python experiments/bench/nudging_speed.py                 # tiny-base-large + tiny-aligned-small
    python experiments/bench/nudging_speed.py --nudging tiny-aligned-large  # same tokenizer
    python experiments/bench/nudging_speed.py --device cuda   # on a GPU

Prints one table and writes `experiments/bench/results/nudging_speed[_<tag>].json`. The cached
and reference outputs are also compared (exact-match rate), since a fast wrong decoder is no
use. Timings exclude model loading; each side runs once after a short warm-up.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="tiny-base-large")
    ap.add_argument("--nudging", default="tiny-aligned-small")
    ap.add_argument("--n", type=int, default=16, help="questions (tiny-world test split)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--gamma", type=float, default=0.3)
    ap.add_argument("--chunk-tokens", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (both sides)")
    ap.add_argument("--tag", default="", help="suffix of the results file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    base, nudging = load(args.base, args.device), load(args.nudging, args.device)
    problems = tiny_problems("test", n=args.n)
    pb = [base_prompt(p.question) for p in problems]
    pn = [chat_prompt(nudging.tokenizer, p.question) for p in problems]
    kw = dict(gamma=args.gamma, chunk_tokens=args.chunk_tokens, max_new_tokens=args.max_new_tokens)
    count = lambda texts: sum(len(encode(base.tokenizer, t)) for t in texts)  # noqa: E731

    CachedNudgingDecoder(base, nudging, **kw).decode(pb[:2], pn[:2])  # warm-up
    ref_dec = ChunkedNudgingDecoder(base, nudging, **kw)
    ref, t_ref = timed(lambda: ref_dec.decode(pb, pn))
    one, t_one = timed(
        lambda: CachedNudgingDecoder(base, nudging, batch_size=1, **kw).decode(pb, pn)
    )
    dec16 = CachedNudgingDecoder(base, nudging, batch_size=16, **kw)
    many, t_many = timed(lambda: dec16.decode(pb, pn))
    reqs = [
        GenerationRequest(p, max_new_tokens=args.max_new_tokens, temperature=0.0, seed=i)
        for i, p in enumerate(pb)
    ]
    eng1, t_eng1 = timed(lambda: [base.generate([r])[0].samples[0].text for r in reqs])
    eng16, t_eng16 = timed(lambda: [r.samples[0].text for r in base.generate(reqs)])
    gen1, t_gen1 = timed(lambda: hf_generate(base, pb, args.max_new_tokens, 1))
    gen16, t_gen16 = timed(lambda: hf_generate(base, pb, args.max_new_tokens, 16))

    rows = {
        "chunked reference (1 question at a time)": (t_ref, count([o.text for o in ref])),
        "cached, batch 1": (t_one, count([o.text for o in one])),
        "cached, batch 16": (t_many, count([o.text for o in many])),
        "base-only hf engine, batch 1": (t_eng1, count(eng1)),
        "base-only hf engine, batch 16": (t_eng16, count(eng16)),
        "base-only model.generate, batch 1": (t_gen1, count(gen1)),
        "base-only model.generate, batch 16": (t_gen16, count(gen16)),
    }
    same1 = sum(a.text == b.text for a, b in zip(ref, one)) / len(ref)
    same16 = sum(a.text == b.text for a, b in zip(ref, many)) / len(ref)
    result = {
        "base": args.base,
        "nudging": args.nudging,
        "n": args.n,
        "max_new_tokens": args.max_new_tokens,
        "gamma": args.gamma,
        "chunk_tokens": args.chunk_tokens,
        "device": args.device,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "seconds": {k: v[0] for k, v in rows.items()},
        "output_tokens": {k: v[1] for k, v in rows.items()},
        "reference_engine_calls": ref_dec.calls,
        "cached_forwards_batch16": dec16.forwards,
        "exact_match_vs_reference": {"batch 1": same1, "batch 16": same16},
        "ratios": {
            "cached b16 vs reference (time)": t_ref / t_many,
            "cached b1 vs reference (time)": t_ref / t_one,
            "cached b16 throughput / cached b1 throughput": t_one / t_many,
            "cached b1 time / base-only model.generate b1 time": t_one / t_gen1,
            "cached b16 time / base-only model.generate b16 time": t_many / t_gen16,
        },
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(f"{'run':<40} {'seconds':>9} {'out tokens':>10} {'tok/s':>8}")
    for name, (secs, toks) in rows.items():
        print(f"{name:<40} {secs:>9.2f} {toks:>10d} {toks / secs:>8.1f}")
    for name, value in result["ratios"].items():
        print(f"{name}: {value:.2f}")
    print(
        f"exact match vs reference: batch 1 {same1:.3f}, batch 16 {same16:.3f}; "
        f"peak RSS {result['peak_rss_mb']:.0f} MB"
    )
    out = ROOT / "experiments" / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    name = f"nudging_speed{'_' + args.tag if args.tag else ''}.json"
    (out / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
