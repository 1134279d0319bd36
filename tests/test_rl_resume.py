"""Crash safety through the real CLI: a GRPO run killed with SIGKILL mid-run and resumed with
`resume=auto` ends bit-for-bit where an uninterrupted run ends (weights and optimizer state)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import torch
from helpers.rl.build import cli_command

ROOT = Path(__file__).resolve().parents[1]
STEPS = 12


def _command(model_dir: Path, ckpt: Path, run: Path) -> list[str]:
    return cli_command(
        model_dir,
        ckpt,
        run,
        f"pipeline.max_steps={STEPS}",
        "pipeline.checkpoint.every=2",
        "pipeline.update.micro_batch_size=4",
        "pipeline.optimizer.lr=3e-3",
    )


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def _wait(proc: subprocess.Popen, log: Path) -> None:
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]


def _final_state(ckpt: Path) -> dict:
    return torch.load(ckpt / f"step-{STEPS:06d}" / "torch_state.pt", weights_only=True)


def test_sigkill_mid_run_then_resume_equals_uninterrupted_run(tiny_qwen_dir, tmp_path):
    baseline = _start(
        _command(tiny_qwen_dir, tmp_path / "ck_a", tmp_path / "run_a"), tmp_path / "a.log"
    )
    victim_ckpt = tmp_path / "ck_b"
    victim = _start(_command(tiny_qwen_dir, victim_ckpt, tmp_path / "run_b1"), tmp_path / "b1.log")
    first = victim_ckpt / "step-000002" / "trainer_state.json"
    deadline = time.monotonic() + 240
    while not first.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL, (tmp_path / "b1.log").read_text()[-3000:]
    assert first.exists(), "the run was killed before its first checkpoint"
    done = sorted(p.name for p in victim_ckpt.glob("step-*"))
    assert f"step-{STEPS:06d}" not in done, "the run finished before it could be killed"

    resumed = _start(_command(tiny_qwen_dir, victim_ckpt, tmp_path / "run_b2"), tmp_path / "b2.log")
    _wait(resumed, tmp_path / "b2.log")
    _wait(baseline, tmp_path / "a.log")

    logged = [json.loads(line)["step"] for line in open(tmp_path / "run_b2" / "metrics.jsonl")]
    resumed_from = int(done[-1].split("-")[1])
    assert logged[0] == resumed_from + 1 and logged[-1] == STEPS  # it continued, not restarted
    a, b = _final_state(tmp_path / "ck_a"), _final_state(victim_ckpt)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(pa["exp_avg"], pb["exp_avg"]) and torch.equal(
            pa["exp_avg_sq"], pb["exp_avg_sq"]
        )
    state_a = json.loads(
        (tmp_path / "ck_a" / f"step-{STEPS:06d}" / "trainer_state.json").read_text()
    )
    state_b = json.loads((victim_ckpt / f"step-{STEPS:06d}" / "trainer_state.json").read_text())
    assert state_a["sampler"] == state_b["sampler"] and state_b["step"] == STEPS
