"""Crash safety of NuRL's two-stage run through the real CLI: a run SIGKILLed in stage 2 (after
the 8/8 filter) and resumed with `resume=auto` ends where an uninterrupted run ends: the same
weights and optimizer state, and the same stage, filtered problem set and hint store.

The policy is a random tiny Qwen2 and the reward is `char_parity` (~50/50 per sample), so every
step really updates the weights, the filter (n=2) drops the problems solved 2/2, and stage 2
hints the zero-pass groups with the tiny world's oracle hints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
STAGE1, STAGE2 = 3, 12
FINAL = STAGE1 + STAGE2
PROBLEMS = 8


def _command(model_dir: Path, ckpt: Path, run: Path, seed: int = 0) -> list[str]:
    return [
        sys.executable,
        "run.py",
        "experiment=nurl_tiny",
        "debug=tiny",
        "model=local",
        f"model.name_or_path={model_dir}",
        "reward.name=tests.helpers.rl.rewards:char_parity",
        "hints=oracle",
        "hints.leak_filter=null",
        f"budget.problems={PROBLEMS}",
        "budget.hard_train=0",
        f"pipeline.schedule.stage1_max_steps={STAGE1}",
        f"pipeline.schedule.stage2_steps={STAGE2}",
        "pipeline.schedule.filter_n=2",
        "pipeline.prompts_per_step=4",
        "pipeline.update.micro_batch_size=8",
        "pipeline.optimizer.lr=3e-3",
        "pipeline.plateau=null",
        "pipeline.validation.every=0",
        "pipeline.checkpoint.every=1",
        "pipeline.checkpoint.keep=null",
        "pipeline.export=false",
        "pipeline.num_threads=1",
        f"pipeline.checkpoint.dir={ckpt}",
        f"hydra.run.dir={run}",
        f"seed={seed}",
    ]


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def _wait(proc: subprocess.Popen, log: Path) -> None:
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]


def _state(ckpt: Path, step: int) -> dict:
    return json.loads((ckpt / f"step-{step:06d}" / "trainer_state.json").read_text())


def _weights(ckpt: Path, step: int) -> dict:
    return torch.load(ckpt / f"step-{step:06d}" / "torch_state.pt", weights_only=True)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _kill_in_stage2(cmd: list[str], ckpt: Path, log: Path) -> int:
    """Start the run, SIGKILL it once a stage-2 step has been checkpointed; the last step saved."""
    victim = _start(cmd, log)
    first = ckpt / f"step-{STAGE1 + 1:06d}" / "trainer_state.json"
    deadline = time.monotonic() + 240
    while not first.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL, log.read_text()[-3000:]
    assert first.exists(), "the run was killed before its first stage-2 checkpoint"
    done = sorted(int(p.name.split("-")[1]) for p in ckpt.glob("step-*"))
    assert done[-1] < FINAL, "the run finished before it could be killed"
    assert _state(ckpt, done[-1])["extra_state"]["stage"] == 2
    return done[-1]


def test_sigkill_in_stage2_then_resume_equals_uninterrupted_run(tiny_qwen_dir, tmp_path):
    ck_a, ck_b = tmp_path / "ck_a", tmp_path / "ck_b"
    baseline = _start(_command(tiny_qwen_dir, ck_a, tmp_path / "run_a"), tmp_path / "a.log")
    killed_at = _kill_in_stage2(
        _command(tiny_qwen_dir, ck_b, tmp_path / "run_b1"), ck_b, tmp_path / "b1.log"
    )
    resumed = _start(_command(tiny_qwen_dir, ck_b, tmp_path / "run_b2"), tmp_path / "b2.log")
    _wait(resumed, tmp_path / "b2.log")
    _wait(baseline, tmp_path / "a.log")

    logged = [m for m in _metrics(tmp_path / "run_b2") if "nurl/stage" in m]
    assert logged[0]["step"] == killed_at + 1 and logged[-1]["step"] == FINAL  # not restarted
    assert all(m["nurl/stage"] == 2 for m in logged)
    # the run is not vacuous: stage 2 hinted groups, also after the kill, and weights moved
    full = {m["step"]: m for m in _metrics(tmp_path / "run_a") if "nurl/stage" in m}
    assert sum(full[s]["nurl/groups_hinted"] for s in range(killed_at + 1, FINAL + 1)) > 0
    a, b = _weights(ck_a, FINAL), _weights(ck_b, FINAL)
    start = _weights(ck_a, 0)
    assert any(not torch.equal(a["model"][k], start["model"][k]) for k in a["model"])

    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(pa["exp_avg"], pb["exp_avg"]) and torch.equal(
            pa["exp_avg_sq"], pb["exp_avg_sq"]
        )
    state_a, state_b = _state(ck_a, FINAL), _state(ck_b, FINAL)
    extra_a, extra_b = state_a["extra_state"], state_b["extra_state"]
    assert extra_b["stage"] == extra_a["stage"] == 2 and extra_b["stage2_start"] == STAGE1
    assert 0 < len(extra_a["filtered_ids"]) < PROBLEMS  # the filter dropped some problems
    assert extra_b["filtered_ids"] == extra_a["filtered_ids"]
    # the hint store sits beside the trainer state, not inside it
    assert "hints" not in extra_a and extra_b["hint_count"] == extra_a["hint_count"] == PROBLEMS
    hints_a = (ck_a / f"step-{FINAL:06d}" / "hints.jsonl").read_text()
    assert (ck_b / f"step-{FINAL:06d}" / "hints.jsonl").read_text() == hints_a
    assert len(hints_a.splitlines()) == PROBLEMS
    # the resumed run writes the store into its own run dir too
    assert (tmp_path / "run_b2" / "hints.jsonl").read_text() == (
        tmp_path / "run_a" / "hints.jsonl"
    ).read_text()
    assert state_b["sampler"] == state_a["sampler"] and state_b["step"] == FINAL
