"""Nudging time vs output length: the cached decoder vs base-only generation, side by side.

For each output budget (default 32, 64, 128, 256 new tokens), the cached nudging decoder and
base-only generation through the `hf` engine (KV cache) decode the same tiny-world questions,
greedy, at the same batch size, alternating A B A B; the table shows medians and the median
per-repetition throughput ratio:

    python experiments/bench/nudging_scaling.py                       # cross-tokenizer pair
    python experiments/bench/nudging_scaling.py --nudging tiny-aligned-large --tag same

Writes `experiments/bench/results/nudging_scaling[_<tag>].json`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nudging_speed import engine_generate, load, machine, measure, prompts, ratio, write  # noqa: E402

from nudgekit.nudging import CachedNudgingDecoder  # noqa: E402
from nudgekit.nudging.text import encode  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="tiny-base-large")
    ap.add_argument("--nudging", default="tiny-aligned-small")
    ap.add_argument("--n", type=int, default=16, help="questions (tiny-world test split)")
    ap.add_argument("--batch", type=int, default=16, help="batch size of both runs")
    ap.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--gamma", type=float, default=0.3)
    ap.add_argument("--chunk-tokens", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="")
    return ap.parse_args(argv)


def one_length(base, nudging, pb, pn, length: int, args) -> dict:
    """Cached nudging vs base-only at one output budget: medians, tokens, throughput ratio."""
    dec = CachedNudgingDecoder(
        base,
        nudging,
        gamma=args.gamma,
        chunk_tokens=args.chunk_tokens,
        max_new_tokens=length,
        batch_size=args.batch,
    )
    runs = {
        "nudging (cached)": lambda: [o.text for o in dec.decode(pb, pn)],
        "base-only (hf engine)": lambda: engine_generate(base, pb, length, args.batch),
    }
    seconds, outputs = measure(runs, args.reps)
    tokens = {k: sum(len(encode(base.tokenizer, t)) for t in v) for k, v in outputs.items()}
    return {
        "seconds_per_rep": seconds,
        "median_seconds": {k: statistics.median(v) for k, v in seconds.items()},
        "output_tokens": tokens,
        "nudging / base-only time": ratio(seconds, *runs),
        "nudging / base-only throughput": ratio(seconds, *runs, work=tokens),
        "forwards": dec.forwards,
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    base, nudging = load(args.base, args.device), load(args.nudging, args.device)
    pb, pn = prompts(nudging, args.n)
    CachedNudgingDecoder(base, nudging, max_new_tokens=16).decode(pb[:2], pn[:2])  # warm-up
    rows = {}
    print(
        f"{'new tokens':>10} {'nudging s':>10} {'base s':>8} {'nudge tok':>10} {'time x':>7} {'tok/s x':>8}"
    )
    for length in args.lengths:
        row = rows[length] = one_length(base, nudging, pb, pn, length, args)
        med, toks = row["median_seconds"], row["output_tokens"]
        print(
            f"{length:>10} {med['nudging (cached)']:>10.2f} {med['base-only (hf engine)']:>8.2f} "
            f"{toks['nudging (cached)']:>10} {row['nudging / base-only time']:>7.2f} "
            f"{row['nudging / base-only throughput']:>8.2f}"
        )
    settings = {k: v for k, v in vars(args).items() if k not in ("device", "threads", "tag")}
    write({**settings, **machine(args), "by_length": rows}, "nudging_scaling", args.tag)


if __name__ == "__main__":
    main()
