"""TRL's `GRPOTrainer` with colocated vLLM rollouts (`use_vllm=True, vllm_mode="colocate"`) on
the `_timing_rl.Work` of the GRPO benchmarks: the `trl-vllm` side of `grpo_vllm.py`. Needs a
CUDA machine with TRL and vLLM in one venv (TRL's colocate mode runs vLLM on the training GPU)."""

from __future__ import annotations

from _timing_rl import Work
from grpo_vs_trl import trl_worker


def trl_vllm_worker(work: Work, out_dir: str, gpu_memory_utilization: float = 0.3) -> dict:
    """Per-step wall time (callback) and generation time of TRL with colocated vLLM."""
    vllm = {"vllm_mode": "colocate", "vllm_gpu_memory_utilization": gpu_memory_utilization}
    result = trl_worker(work, out_dir, vllm=vllm)
    for step in result["steps"]:
        step["sync_s"] = None  # TRL syncs inside its generation; not timed apart
    return result
