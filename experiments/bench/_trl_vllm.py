"""TRL's `GRPOTrainer` with colocated vLLM rollouts (`use_vllm=True, vllm_mode="colocate"`) on
the `_timing_rl.Work` of the GRPO benchmarks: the `trl-vllm` side of `grpo_vllm.py`. Needs a
CUDA machine with TRL and vLLM in one venv (TRL's colocate mode runs vLLM on the training GPU)."""

from __future__ import annotations

import time
from typing import Any

from _timing_rl import Work, peak_rss_mb, problems_and_verifier


def trl_vllm_worker(work: Work, out_dir: str, gpu_memory_utilization: float = 0.3) -> dict:
    """Per-step wall time (callback) and generation time of TRL with colocated vLLM."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from nudgekit.models import ChatPrompt, ModelSpec
    from nudgekit.zoo import resolve

    path = str(resolve(work.model))
    problems, verifier = problems_and_verifier(work)
    prompt = ChatPrompt(ModelSpec(path), template="tiny")
    data = Dataset.from_list([{"prompt": prompt(p), "answer": p.answer} for p in problems])

    def tiny_reward(completions: list[str], answer: list[str], **_: Any) -> list[float]:
        return [float(verifier(c, a)) for c, a in zip(completions, answer)]

    rows = work.prompts * work.group_size
    args = GRPOConfig(
        output_dir=out_dir,
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
        use_vllm=True,
        vllm_mode="colocate",
        vllm_gpu_memory_utilization=gpu_memory_utilization,
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
            "generate_s": t["generate_s"],
            "update_s": t["step_s"] - t["generate_s"],
            "sync_s": None,
        }
        for t in times[work.warmup :]
    ]
    return {"steps": steps, "peak_rss_mb": peak_rss_mb()}
