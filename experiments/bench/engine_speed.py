"""Rollout generation speed, side by side in one process: nudgekit's `hf` engine (with and
without the shared-prefix prefill; with its lean forward, the default, and with the model's own
`transformers` forward) vs raw `model.generate(num_return_sequences=n)`.

Same model, same tiny-world chat prompts, T=1, top_p=1 (top_k off), sampling until EOS or the
token budget. Every setting (prompts per call x samples per prompt x new tokens) runs its three
sides in alternation (A B C A B C ...) for `--rounds` rounds; the table reports median tokens/s
and the median of the per-round ratios. Generated tokens are counted honestly: per row, up to and
including the first EOS (`generate` pads finished rows; those pads are not counted).

    NUDGEKIT_CACHE=/work/zoo_cache python experiments/bench/engine_speed.py
    python experiments/bench/engine_speed.py --settings 16x8x64 --rounds 5   # one setting
    python experiments/bench/engine_speed.py --device cuda --tag gpu

Writes `experiments/bench/results/engine_speed[_<tag>].json`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nudgekit.engines.base import GenerationRequest  # noqa: E402
from nudgekit.engines.hf import HFEngine  # noqa: E402
from nudgekit.models import load_model, load_tokenizer  # noqa: E402
from nudgekit.zoo import chat_prompt, resolve, tiny_problems  # noqa: E402

SIDES = ("engine, shared prefix", "engine, per-row prefill", "model.generate",
         "engine, shared prefix, transformers forward")  # fmt: skip
DEFAULT_SETTINGS = "16x8x64,16x8x128,1x8x64,1x8x128,16x1x64,16x1x128,1x1x64,1x1x128"


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_engine(engine: HFEngine, prompts: list[str], per_call: int, n: int, new: int, seed: int):
    """Generated tokens (EOS included) of all prompts, `per_call` prompts per engine call."""
    tokens = 0
    for start in range(0, len(prompts), per_call):
        reqs = [
            GenerationRequest(p, n=n, max_new_tokens=new, temperature=1.0, seed=seed + start + i)
            for i, p in enumerate(prompts[start : start + per_call])
        ]
        tokens += sum(len(s.token_ids) for r in engine.generate(reqs) for s in r.samples)
    return tokens


def count_until_eos(ids: torch.Tensor, eos: list[int]) -> int:
    """Tokens per row up to and including its first EOS (all of the row when there is none)."""
    hit = torch.isin(ids, torch.tensor(eos, device=ids.device))
    first = torch.where(hit.any(-1), hit.int().argmax(-1) + 1, ids.shape[1])
    return int(first.sum())


def run_generate(engine: HFEngine, prompts: list[str], per_call: int, n: int, new: int, seed: int):
    """What a researcher writes: left-padded batches and `num_return_sequences=n` sampling."""
    tok, model, tokens = engine.tokenizer, engine.model, 0
    torch.manual_seed(seed)
    for start in range(0, len(prompts), per_call):
        enc = tok(
            prompts[start : start + per_call],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        ).to(engine.device)
        with torch.inference_mode():
            out = model.generate(
                **enc,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                num_return_sequences=n,
                max_new_tokens=new,
                pad_token_id=tok.pad_token_id,
                eos_token_id=engine.eos_token_ids,
            )
        tokens += count_until_eos(out[:, enc.input_ids.shape[1] :], engine.eos_token_ids)
    return tokens


def bench_setting(sides, prompts, per_call, n, new, rounds) -> dict:
    """Alternate the sides for `rounds` rounds; medians of tokens/s and of per-round ratios."""
    rates: dict[str, list[float]] = {name: [] for name in sides}
    tokens: dict[str, list[int]] = {name: [] for name in sides}
    for rnd in range(rounds):
        for name, fn in sides.items():
            _sync()
            start = time.perf_counter()
            count = fn(prompts, per_call, n, new, 1000 * rnd)
            _sync()
            rates[name].append(count / (time.perf_counter() - start))
            tokens[name].append(count)
    base = rates["model.generate"]
    ratios = {
        k: [a / b for a, b in zip(v, base)] for k, v in rates.items() if k != "model.generate"
    }
    return {
        "prompts_per_call": per_call,
        "n": n,
        "max_new_tokens": new,
        "tokens_per_s_median": {k: statistics.median(v) for k, v in rates.items()},
        "tokens_per_s_rounds": rates,
        "generated_tokens_rounds": tokens,
        "ratio_vs_generate_median": {k: statistics.median(v) for k, v in ratios.items()},
        "ratio_vs_generate_rounds": ratios,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-policy")
    ap.add_argument("--prompts", type=int, default=16, help="questions (tiny-world test split)")
    ap.add_argument("--settings", default=DEFAULT_SETTINGS, help="PROMPTSxNxTOKENS,...")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (all sides)")
    ap.add_argument("--tag", default="", help="suffix of the results file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    path = args.model if Path(args.model).exists() else str(resolve(args.model))
    model, tok = load_model(path, device=args.device), load_tokenizer(path)
    shared = HFEngine(model, tok, max_batch_size=128)
    per_row = HFEngine(model, tok, max_batch_size=128, share_prefix=False)
    hf_forward = HFEngine(model, tok, max_batch_size=128, lean=False)
    prompts = [chat_prompt(tok, p.question) for p in tiny_problems("test", n=args.prompts)]
    sides = {
        SIDES[0]: lambda *a: run_engine(shared, *a),
        SIDES[1]: lambda *a: run_engine(per_row, *a),
        SIDES[2]: lambda *a: run_generate(shared, *a),
        SIDES[3]: lambda *a: run_engine(hf_forward, *a),
    }
    for fn in sides.values():  # warm-up
        fn(prompts[:2], 2, 2, 8, 0)
    results = []
    for spec in args.settings.split(","):
        per_call, n, new = (int(x) for x in spec.split("x"))
        res = bench_setting(sides, prompts, per_call, n, new, args.rounds)
        results.append(res)
        rate, ratio = res["tokens_per_s_median"], res["ratio_vs_generate_median"]
        print(
            f"{per_call:>3} prompts/call n={n} {new:>3} tok | "
            + " | ".join(f"{k} {v:7.0f} tok/s" for k, v in rate.items())
            + " | ratios "
            + ", ".join(
                f"{v:.2f} [{min(r):.2f}-{max(r):.2f}]"
                for v, r in zip(ratio.values(), res["ratio_vs_generate_rounds"].values())
            ),
            flush=True,
        )
    result = {
        "model": args.model,
        "prompts": args.prompts,
        "rounds": args.rounds,
        "temperature": 1.0,
        "device": args.device,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "settings": results,
    }
    out = ROOT / "experiments" / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    name = f"engine_speed{'_' + args.tag if args.tag else ''}.json"
    (out / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
