"""Shared pieces of the GRPO benchmarks: build the same GRPO work for nudgekit and TRL, time
steps, run each side in its own subprocess (A B A B ...), and summarise.

Every side runs in a fresh subprocess with one torch thread, so its peak RSS is that process's
`ru_maxrss` and neither side inherits the other's allocator state. A worker prints one JSON line
(the last line of its stdout): per-step timings after the warm-up steps and the peak RSS.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Work:
    """One GRPO step's work, identical for both frameworks."""

    group_size: int = 8
    prompts: int = 16
    max_new_tokens: int = 64
    steps: int = 3  # timed steps (after `warmup`)
    warmup: int = 1
    lr: float = 1e-5
    level: int = 4  # tiny-world training level (grpo_tiny's)
    model: str = "tiny-policy"
    micro_batch_size: int = 32
    seed: int = 0


# ------------------------------------------------------------------ workers (in the subprocess)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def problems_and_verifier(work: Work) -> tuple[list[Any], Callable[[str, str], float]]:
    from nudgekit.rewards import load_verifier
    from nudgekit.zoo import tiny_problems

    return tiny_problems("train", level=work.level, seed=work.seed), load_verifier("tiny")


def nudgekit_trainer(work: Work, run_dir: str, **overrides: Any) -> Any:
    """nudgekit's `GRPOTrainer` on `work` (β = 0, μ = 1, token mean, T = 1), set up in run_dir.

    `overrides`: `GRPOTrainer` arguments, or fields of its `Update` node (e.g. `share_prompt`)."""
    import torch

    from nudgekit.engines.hf import HFEngine
    from nudgekit.models import ChatPrompt, ModelSpec
    from nudgekit.rl import ClippedPolicyLoss, GRPOTrainer, Sampling, TokenMean, Update, Validation
    from nudgekit.zoo import resolve

    spec = ModelSpec(str(resolve(work.model)))
    problems, verifier = problems_and_verifier(work)
    kwargs: dict[str, Any] = dict(
        model=spec,
        train_problems=problems,
        verifier=verifier,
        prompt=ChatPrompt(spec, template="tiny"),
        engine=functools.partial(HFEngine, max_batch_size=128),
        optimizer=functools.partial(
            torch.optim.AdamW, lr=work.lr, betas=(0.9, 0.99), weight_decay=0.0
        ),
        loss=ClippedPolicyLoss(
            epsilon_low=0.2, epsilon_high=0.2, beta=0.0, aggregation=TokenMean()
        ),
        max_steps=work.warmup + work.steps,
        prompts_per_step=work.prompts,
        sampling=Sampling(
            group_size=work.group_size, max_new_tokens=work.max_new_tokens, temperature=1.0
        ),
        update=Update(
            ppo_epochs=1,
            mini_batches=1,
            micro_batch_size=work.micro_batch_size,
            **{k: overrides.pop(k) for k in list(overrides) if k in Update.__dataclass_fields__},
        ),
        validation=Validation(every=0),
        export=False,
        resume=None,
        seed=work.seed,
        num_threads=1,
    )
    kwargs.update(overrides)
    trainer = GRPOTrainer(**kwargs)
    trainer.setup(run_dir)
    return trainer


def time_nudgekit(work: Work, trainer: Any) -> dict[str, Any]:
    """Run warm-up + timed steps of an already set-up trainer; per-step phase times."""
    import torch

    steps = []
    for i in range(work.warmup + work.steps):
        cpu = time.process_time()
        m = trainer.train_step()
        if i >= work.warmup:
            steps.append(
                {
                    "step_s": m["perf/step_s"],
                    "cpu_s": time.process_time() - cpu,
                    "threads": torch.get_num_threads(),
                    "generate_s": m["perf/generate_s"],
                    "update_s": m["perf/update_s"],
                    "tokens": m["perf/tokens_per_s"] * m["perf/step_s"],
                    "reward": m["train/reward"],
                    "hinted_frac": m.get("train/hinted_frac", 0.0),
                }
            )
    return {"steps": steps, "peak_rss_mb": peak_rss_mb()}


def emit(result: dict[str, Any]) -> None:
    """The worker's answer: one JSON line, last on stdout."""
    print(json.dumps(result), flush=True)


# ------------------------------------------------------------------ driver (in the parent)


def run_worker(script: Path, args: Sequence[str], timeout: float = 1800) -> dict[str, Any]:
    """Run `python script --worker ...args` with one thread; return its JSON line."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env.setdefault("NUDGEKIT_CACHE", "/work/zoo_cache")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(script), "--worker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if proc.returncode:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - start
    return out


def alternate(script: Path, sides: dict[str, Sequence[str]], rounds: int) -> dict[str, list[dict]]:
    """A B A B ...: `rounds` subprocess runs of every side, interleaved."""
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for r in range(rounds):
        for name, args in sides.items():
            res = run_worker(script, args)
            runs[name].append(res)
            print(
                f"  round {r + 1}/{rounds} {name}: step "
                f"{median_of(res['steps'], 'step_s'):.2f}s rss {res['peak_rss_mb']:.0f} MB",
                file=sys.stderr,
                flush=True,
            )
    return runs


def median_of(steps: Sequence[dict], key: str) -> float:
    vals = [s[key] for s in steps if s.get(key) is not None]
    return statistics.median(vals) if vals else float("nan")


def summarise(
    runs: Sequence[dict],
    keys: Sequence[str] = ("step_s", "cpu_s", "generate_s", "update_s"),
) -> dict[str, float]:
    """Medians over every timed step of every run, and the max peak RSS over runs."""
    steps = [s for r in runs for s in r["steps"]]
    out = {k: median_of(steps, k) for k in keys}
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    out["n_steps"] = len(steps)
    return out


def paired_ratios(a: Sequence[dict], b: Sequence[dict], key: str = "step_s") -> list[float]:
    """Per-round ratios a/b of the run medians (the A B pairs run back to back)."""
    return [median_of(x["steps"], key) / median_of(y["steps"], key) for x, y in zip(a, b)]


def table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table from dicts sharing keys (floats with 3 significant decimals)."""
    keys = list(rows[0])
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads_per_worker": 1,
    }


def write_json(name: str, work: Work, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"work": asdict(work), "machine": machine(), **payload}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
