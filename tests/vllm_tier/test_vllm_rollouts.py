"""The vLLM tier: GRPO and NuRL with `engine=vllm` rollouts and live weight sync.

After setup and after every step the trainer's vLLM engine must serve the trainer's weights:
greedy ids equal `HFEngine` on the trainer's module and top-1 log-probs within 1e-4 (both
float32), while the policy itself moves. In one process (plain torch backend) and under
`torchrun --nproc_per_node=2` with DeepSpeed ZeRO-3 on gloo (every parameter partitioned, so
each push gathers module by module). NuRL's two-stage run goes through `run.py` with
`engine=vllm` under `debug=tiny`: hints written by the rollout engine, stage 1, the filter and
stage 2 all sample from vLLM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")

from helpers.rl.build import make_trainer  # noqa: E402
from helpers.torchrun import torchrun  # noqa: E402
from vllm_tier.rollout_helpers import (  # noqa: E402
    build_policy,
    probe_prompts,
    vllm_engine_factory,
    weight_gap,
)

pytestmark = pytest.mark.vllm

ROOT = Path(__file__).resolve().parents[2]
ATOL = 1e-4
MOVED = 1e-3  # the run must move the probes' top-1 log-probs by more than this


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory) -> Path:
    return build_policy(tmp_path_factory.mktemp("policy") / "tiny-policy-h64")


def _moved(checks: list[dict]) -> float:
    first, last = checks[0]["lp"], checks[-1]["lp"]
    return max(abs(a - b) for r0, r1 in zip(first, last) for a, b in zip(r0, r1))


def test_grpo_vllm_one_process_syncs_after_every_step(policy_dir, tmp_path):
    trainer = make_trainer(
        policy_dir, engine=vllm_engine_factory(policy_dir), max_steps=3, val_every=3, tis_cap=2.0
    )
    trainer.setup(tmp_path / "run")
    try:
        prompts = probe_prompts(trainer)
        checks = [weight_gap(trainer, prompts)]
        steps = []
        for _ in range(3):
            steps.append(trainer.train_step())
            checks.append(weight_gap(trainer, prompts))
        for i, c in enumerate(checks):
            assert c["same_ids"], f"greedy ids differ after step {i}"
            assert c["max_lp_diff"] <= ATOL, (
                f"step {i}: top-1 log-probs differ by {c['max_lp_diff']}"
            )
        assert _moved(checks) > MOVED
        assert trainer.engine.pushes == 4  # setup + one per step
        for m in steps:
            assert m["perf/weight_sync_s"] > 0
            # vLLM's processed log-probs are the trainer's old ones: TIS weights ~1, none capped
            assert m["train/logprob_abs_diff"] < ATOL
            assert abs(m["train/tis/weight"] - 1.0) < 1e-3 and m["train/tis/clip_frac"] == 0.0
        final = trainer.train()  # no steps left: validation through vLLM and the checkpoint
        assert 0.0 <= final["val/pass@1"] <= 1.0 and final["train/steps"] == 3
    finally:
        trainer.cleanup()
    assert trainer.engine is None


def test_grpo_vllm_two_process_zero3_syncs_after_every_step(policy_dir, tmp_path):
    out = tmp_path / "out.json"
    worker = ROOT / "tests/vllm_tier/rollout_worker.py"
    args = (policy_dir, tmp_path / "run", out, "--steps", 3)
    torchrun(worker, *args, timeout=600, paths=(ROOT / "tests",))
    ranks = json.loads(out.read_text())
    assert [r["rank"] for r in ranks] == [0, 1]
    for r in ranks:
        assert r["pushes"] == 4
        for i, c in enumerate(r["checks"]):
            assert c["same_ids"], f"rank {r['rank']}: greedy ids differ after step {i}"
            assert c["max_lp_diff"] <= ATOL, (r["rank"], i, c["max_lp_diff"])
        assert _moved(r["checks"]) > MOVED
        assert all(c["metrics"]["train/logprob_abs_diff"] < ATOL for c in r["checks"][1:])
    # both ranks' engines serve the same (gathered) weights
    last = [[x for row in r["checks"][-1]["lp"] for x in row] for r in ranks]
    assert last[0] == pytest.approx(last[1], abs=ATOL)
    assert ranks[0]["final"]["val/pass@1"] == ranks[1]["final"]["val/pass@1"]


def test_nurl_two_stage_engine_vllm_debug_tiny(policy_dir, tmp_path):
    """run.py end to end: self-hints through the rollout engine, stage 1, filter, stage 2."""
    run = tmp_path / "run"
    env = {
        **os.environ,
        "WANDB_SILENT": "true",
        "WANDB_MODE": "offline",
        "HF_HUB_OFFLINE": "1",
        "WANDB_DIR": str(tmp_path),
    }
    cmd = [
        sys.executable,
        "run.py",
        "experiment=nurl_tiny",
        "debug=tiny",
        "budget.steps=1",
        "engine=vllm",
        "hints=self",
        f"model.name_or_path={policy_dir}",
        "pipeline.schedule.injector.gate=always",
        f"hydra.run.dir={run}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["nurl/stage"] == 2 and summary["train/steps"] == 2
    assert summary["nurl/stage2_start"] == 1 and summary["hints/accepted"] >= 1
    # one vLLM engine for the whole run (hints, rollouts, validation, filter)
    log = proc.stdout + proc.stderr
    assert log.count("Using external launcher") == 0
    assert log.count("non-default args") == 1 and "processed_logprobs" in log
