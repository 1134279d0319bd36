"""NuRL under 2-process DeepSpeed ZeRO-3 where only one rank's group needs hints.

Each step has two prompts, one per rank: A (pass rate 0: its rank regenerates G-1 hinted
rollouts) and B (pass rate 1: its rank regenerates nothing). Under ZeRO-3 every parameter is
partitioned (`stage3_param_persistence_threshold=0`), so a rank that ran forward passes the other
does not would deadlock if generation used ZeRO-3's hooked, collective forward. The run must
finish (the test has a timeout) and reach the single-process run's weights.

This file is also the torchrun worker:
    DS_ACCELERATOR=cpu torchrun --nproc_per_node=2 tests/test_nurl_distributed.py MODEL RUN OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers.nurl import make_nurl  # noqa: E402
from helpers.torchrun import torchrun  # noqa: E402

RUN = dict(
    start="step0", stage1_max_steps=2, stage2_steps=0, filter_solved=False, micro_batch_size=2
)


def test_zero3_two_processes_uneven_hinting(hint_model, tmp_path):
    out = tmp_path / "out.pt"
    torchrun(__file__, hint_model, tmp_path / "run", out)
    dist = torch.load(out, weights_only=False)
    # every step: exactly one group (A, on one rank) hinted, the other rank hinted none
    for step in dist["steps"]:
        assert step["nurl/groups_hinted"] == 1 and step["nurl/groups_zero_pass"] == 1
        assert step["nurl/hinted_pass_rate"] == 1.0
        assert step["ranks_hinting"] == [1, 0] or step["ranks_hinting"] == [0, 1]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = make_nurl(hint_model, **RUN)
        single.setup(tmp_path / "single")
        single.train()
        ref = single.backend.full_state_dict()
        single.cleanup()
    finally:
        torch.set_num_threads(threads)
    diff = max((ref[k] - dist["state"][k]).abs().max().item() for k in ref)
    assert diff < 1e-5, f"ZeRO-3 NuRL differs from one process by {diff:.2e}"


def main() -> None:
    from nudgekit.rl import DeepSpeedBackend

    model_dir, run_dir, out = sys.argv[1:4]
    torch.set_num_threads(1)
    backend = DeepSpeedBackend(
        3, config={"zero_optimization": {"stage3_param_persistence_threshold": 0}}
    )
    trainer = make_nurl(Path(model_dir), backend=backend, **RUN)
    trainer.setup(run_dir)
    trainer.tracker = None
    steps = []
    trainer.schedule.on_train_start(trainer.context)  # hints (start=step0 opens the gate)
    injector = trainer.schedule.injector
    while trainer.step < trainer.end_step():
        metrics = trainer.train_step()
        hinted = sum(r.hinted for r in injector._last["merged"])
        metrics["ranks_hinting"] = trainer.backend.all_gather_object(int(hinted > 0))
        steps.append(metrics)
    state = trainer.backend.full_state_dict()
    if trainer.backend.is_main:
        torch.save({"state": state, "steps": steps}, out)
    trainer.cleanup()


if __name__ == "__main__":
    main()
