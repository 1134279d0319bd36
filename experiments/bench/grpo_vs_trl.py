"""One GRPO step, nudgekit vs TRL's `GRPOTrainer`, on the same work (CPU, HF generation in both).

Same `tiny-policy` checkpoint, same tiny-world training problems (level 4), G=8, 16 prompts per
step, 64 new tokens, μ=1, β=0, global token-mean loss (TRL: `loss_type="dapo"`), T=1, top_p=1
(no top-k), same lr and AdamW betas, micro-batch 32 rows (TRL: per-device batch 32 x 4
accumulation steps = one optimizer step per generation batch of 128 completions), the tiny
verifier as the reward in both. Each side runs in its own subprocess with one torch thread,
alternating A B A B; per-step wall time is the median over the timed steps after a warm-up step.

    NUDGEKIT_CACHE=/work/zoo_cache python experiments/bench/grpo_vs_trl.py            # 2 rounds
    NUDGEKIT_CACHE=/work/zoo_cache python experiments/bench/grpo_vs_trl.py --rounds 3 --steps 3
    python experiments/bench/grpo_vs_trl.py --steps 1 --max-new-tokens 32  # shrink

Prints a table of medians and ratios and writes `experiments/bench/results/grpo_vs_trl.json`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing_rl import (  # noqa: E402
    Work,
    alternate,
    emit,
    nudgekit_trainer,
    paired_ratios,
    peak_rss_mb,
    problems_and_verifier,
    summarise,
    table,
    time_nudgekit,
    write_json,
)

SCRIPT = Path(__file__).resolve()
SIDES = ("nudgekit", "trl", "nudgekit-full")


def trl_worker(work: Work, out_dir: str, vllm: dict[str, Any] | None = None) -> dict[str, Any]:
    """TRL's GRPOTrainer on `work`; per-step wall time from a callback, generation timed apart.

    `vllm`: None for TRL's own HF generation on CPU with one torch thread (the CPU benchmark), or
    TRL's vLLM arguments (e.g. ``{"vllm_mode": "colocate"}``) for vLLM rollouts on the GPU
    (`grpo_vllm.py`'s `trl-vllm` side, through `_trl_vllm.py`)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from nudgekit.models import ChatPrompt, ModelSpec
    from nudgekit.zoo import resolve

    if vllm is None:
        torch.set_num_threads(1)
    path = str(resolve(work.model))
    problems, verifier = problems_and_verifier(work)
    prompt = ChatPrompt(ModelSpec(path), template="tiny")
    data = Dataset.from_list([{"prompt": prompt(p), "answer": p.answer} for p in problems])

    def tiny_reward(completions: list[str], answer: list[str], **_: Any) -> list[float]:
        return [float(verifier(c, a)) for c, a in zip(completions, answer)]

    rows = work.prompts * work.group_size
    args = GRPOConfig(
        output_dir=out_dir,
        use_cpu=vllm is None,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        max_steps=work.warmup + work.steps,
        seed=work.seed,
        learning_rate=work.lr,
        adam_beta1=0.9,
        adam_beta2=0.99,
        weight_decay=0.0,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=1.0,
        per_device_train_batch_size=work.micro_batch_size,
        gradient_accumulation_steps=rows // work.micro_batch_size,
        num_generations=work.group_size,
        max_completion_length=work.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        num_iterations=1,
        beta=0.0,
        loss_type="dapo",
        epsilon=0.2,
        scale_rewards="group",
        dataloader_num_workers=0,
        use_vllm=vllm is not None,
        **(vllm or {}),
    )
    times: list[dict[str, float]] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_: Any, **__: Any) -> None:
            times.append(
                {"start": time.perf_counter(), "cpu": time.process_time(), "generate_s": 0.0}
            )

        def on_step_end(self, *_: Any, **__: Any) -> None:
            times[-1]["step_s"] = time.perf_counter() - times[-1]["start"]
            times[-1]["cpu_s"] = time.process_time() - times[-1]["cpu"]
            times[-1]["threads"] = torch.get_num_threads()

        def on_log(self, *_: Any, logs: dict | None = None, **__: Any) -> None:
            if times and logs and "completions/mean_length" in logs:  # equal work: tokens
                times[-1]["tokens"] = float(logs["completions/mean_length"]) * rows

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=tiny_reward,
        args=args,
        train_dataset=data,
        processing_class=AutoTokenizer.from_pretrained(path),
        callbacks=[StepTimer()],
    )
    generate = trainer._generate_and_score_completions

    def timed_generate(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        out = generate(*a, **k)
        times[-1]["generate_s"] += time.perf_counter() - t0
        return out

    trainer._generate_and_score_completions = timed_generate
    trainer.train()
    steps = [
        {
            "step_s": t["step_s"],
            "cpu_s": t["cpu_s"],
            "threads": t["threads"],
            "generate_s": t["generate_s"],
            "tokens": t.get("tokens"),
            "update_s": t["step_s"] - t["generate_s"],
        }
        for t in times[work.warmup :]
    ]
    return {"steps": steps, "peak_rss_mb": peak_rss_mb()}


def worker(side: str, work: Work) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if side == "trl":
            emit(trl_worker(work, tmp))
        else:  # "nudgekit-full": the update without prompt sharing (the optimisation's A/B)
            trainer = nudgekit_trainer(work, tmp, share_prompt=side == "nudgekit")
            emit(time_nudgekit(work, trainer))


def parse() -> tuple[argparse.Namespace, Work]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument(
        "--sides",
        default="nudgekit,trl",
        help=f"comma list of {','.join(SIDES)} (nudgekit-full: no prompt sharing)",
    )
    ap.add_argument("--rounds", type=int, default=2, help="A B rounds (subprocess runs per side)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per run (after 1 warm-up)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--tag", default="", help="suffix of the JSON file name")
    a = ap.parse_args()
    return a, Work(
        group_size=a.group_size, prompts=a.prompts, max_new_tokens=a.max_new_tokens, steps=a.steps
    )


def work_args(work: Work) -> list[str]:
    return [
        "--steps",
        str(work.steps),
        "--max-new-tokens",
        str(work.max_new_tokens),
        "--group-size",
        str(work.group_size),
        "--prompts",
        str(work.prompts),
    ]


def main() -> None:
    a, work = parse()
    if a.worker:
        return worker(a.worker, work)
    print(f"GRPO step, nudgekit vs TRL: {asdict(work)}", file=sys.stderr)
    sides = a.sides.split(",")
    runs = alternate(SCRIPT, {s: [s, *work_args(work)] for s in sides}, a.rounds)
    keys = ("step_s", "cpu_s", "generate_s", "update_s", "tokens")
    med = {s: summarise(r, keys) for s, r in runs.items()}
    rows = [{"side": s, **{k: float(v) for k, v in m.items()}} for s, m in med.items()]
    ratios = {}
    for other in sides[1:]:
        ratios[f"{sides[0]}/{other}"] = paired_ratios(runs[sides[0]], runs[other])
        ratios[f"{sides[0]}/{other} cpu"] = paired_ratios(runs[sides[0]], runs[other], "cpu_s")
        rows.append(
            {
                "side": f"{sides[0]} / {other}",
                **{k: float(med[sides[0]][k] / med[other][k]) for k in med[other]},
            }
        )
    print(table(rows))
    for name, values in ratios.items():
        print(f"per-round step ratios {name}: {[round(r, 3) for r in values]}")
    path = write_json(
        "grpo_vs_trl" + (f"_{a.tag}" if a.tag else ""),
        work,
        {"medians": med, "paired_step_ratios": ratios, "runs": runs},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
