"""Rollout generation speed, `hf` engine vs `vllm` engine, side by side in one process.

Same model (float32), same tiny-world chat prompts, one engine call per round of
`--prompts` prompts x `--n` samples, T=1, top_p=1, up to `--new` tokens or EOS. The sides
alternate (hf vllm hf vllm ...) for `--rounds` rounds on `--threads` cores (vLLM's CPU worker
binds its OpenMP threads for the whole process, so both sides share that setting). Printed: the
median tokens/s of each side and the median of the per-round ratios vllm / hf. Tokens are
counted as the engines return them (up to and including EOS).

Runs in the vLLM venv (`make install-vllm`); on a CPU box it measures vLLM's CPU build, which is
no guide to GPU speed (record only):

    .venv-vllm/bin/python experiments/bench/engine_vllm.py --tag cpu
    python experiments/bench/engine_vllm.py --tag gpu                  # after `make install-gpu`

Writes `experiments/bench/results/engine_vllm[_<tag>].json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache for the CPU build

import torch  # noqa: E402

from nudgekit.engines import GenerationRequest, HFEngine, VLLMEngine  # noqa: E402
from nudgekit.models import ModelSpec  # noqa: E402
from nudgekit.zoo import chat_prompt, tiny_problems  # noqa: E402


def run(engine, prompts: list[str], n: int, new: int, seed: int) -> int:
    """Generated tokens of one engine call over all prompts."""
    reqs = [
        GenerationRequest(p, n=n, max_new_tokens=new, temperature=1.0, seed=seed + i)
        for i, p in enumerate(prompts)
    ]
    return sum(len(s.token_ids) for r in engine.generate(reqs) for s in r.samples)


def bench(sides: dict, prompts: list[str], n: int, new: int, rounds: int) -> dict:
    """Alternate the sides; tokens/s per round and the per-round ratios vllm / hf."""
    rates: dict[str, list[float]] = {name: [] for name in sides}
    tokens: dict[str, list[int]] = {name: [] for name in sides}
    for rnd in range(rounds):
        for name, engine in sides.items():
            start = time.perf_counter()
            count = run(engine, prompts, n, new, 1000 * rnd)
            rates[name].append(count / (time.perf_counter() - start))
            tokens[name].append(count)
    ratios = [v / h for v, h in zip(rates["vllm"], rates["hf"])]
    return {
        "tokens_per_s_median": {k: statistics.median(v) for k, v in rates.items()},
        "tokens_per_s_rounds": rates,
        "generated_tokens_rounds": tokens,
        "ratio_vllm_over_hf_median": statistics.median(ratios),
        "ratio_vllm_over_hf_rounds": ratios,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="zoo:tiny-policy", help="zoo:<name>, local dir or hub id")
    ap.add_argument("--prompts", type=int, default=16, help="questions (tiny-world test split)")
    ap.add_argument("--n", type=int, default=8, help="samples per prompt")
    ap.add_argument("--new", type=int, default=64, help="max new tokens")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (both sides)")
    ap.add_argument("--tag", default="", help="suffix of the results file")
    args = ap.parse_args()
    # vLLM's CPU worker pins its OpenMP threads to these cores, for the whole process
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{args.threads - 1}")
    torch.set_num_threads(args.threads)

    spec = ModelSpec(
        args.model, dtype="float32", device="cuda" if torch.cuda.is_available() else "cpu"
    )
    sides = {"hf": HFEngine(spec, max_batch_size=args.prompts * args.n), "vllm": VLLMEngine(spec)}
    prompts = [
        chat_prompt(sides["hf"].tokenizer, p.question)
        for p in tiny_problems("test", n=args.prompts)
    ]
    for engine in sides.values():  # warm-up
        run(engine, prompts[:2], 2, 8, 0)
    res = bench(sides, prompts, args.n, args.new, args.rounds)
    rate = res["tokens_per_s_median"]
    print(
        f"{args.prompts} prompts x {args.n} samples x {args.new} tokens | hf {rate['hf']:.0f} tok/s"
        f" | vllm {rate['vllm']:.0f} tok/s | vllm/hf {res['ratio_vllm_over_hf_median']:.2f}"
        f" (rounds {', '.join(f'{r:.2f}' for r in res['ratio_vllm_over_hf_rounds'])})",
        flush=True,
    )
    import vllm

    result = {
        "model": args.model,
        "prompts": args.prompts,
        "n": args.n,
        "max_new_tokens": args.new,
        "rounds": args.rounds,
        "temperature": 1.0,
        "vllm_device": sides["vllm"].device,
        "vllm": vllm.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        **res,
    }
    out = ROOT / "experiments" / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    name = f"engine_vllm{'_' + args.tag if args.tag else ''}.json"
    (out / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
