"""The GPU smoke script (experiments/gpu/smoke.py, `make gpu-smoke`) in its CPU mode: its lines,
its exit status and which checks it skips where, so the script is known to work before a GPU."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "gpu" / "smoke.py"
LINE = re.compile(r"^(PASS|FAIL|SKIP) (\w+) (\d+\.\d) (.*)$")

spec = importlib.util.spec_from_file_location("gpu_smoke", SCRIPT)
smoke = importlib.util.module_from_spec(spec)
sys.modules["gpu_smoke"] = smoke  # dataclasses look their module up while the class is built
spec.loader.exec_module(smoke)


def machine(**kw) -> smoke.Machine:
    base = dict(device="cuda", n_gpus=1, has_vllm=True)
    return smoke.Machine(**{**base, **kw})


def test_skips_follow_the_machine():
    one_gpu = machine()
    assert [smoke.skip_reason(c, one_gpu) is None for c in smoke.CHECKS] == [
        True, True, False, False, True,
    ]  # fmt: skip
    assert "found 1" in smoke.skip_reason("zero2", one_gpu)
    assert all(smoke.skip_reason(c, machine(n_gpus=8)) is None for c in smoke.CHECKS)
    cpu = machine(device="cpu", n_gpus=0, has_vllm=False)
    assert smoke.skip_reason("grpo_tiny", cpu) is None
    assert "vllm" in smoke.skip_reason("engine_parity", cpu)
    assert "vllm" in smoke.skip_reason("nurl_vllm", cpu)
    assert "--cpu-zero" in smoke.skip_reason("zero3", cpu)
    assert smoke.skip_reason("zero3", machine(device="cpu", n_gpus=0, cpu_zero=True)) is None


def test_overrides_are_real_config_keys():
    """The overrides the checks pass compose against conf/ (cuda and cpu variants)."""
    from helpers.config import compose_cfg

    gpu, cpu = machine(), machine(device="cpu", n_gpus=0)
    cfg = compose_cfg(["experiment=grpo_tiny", *smoke.grpo_overrides(gpu, 5)], tiny=False)
    assert (cfg.model.device, cfg.model.dtype, cfg.pipeline.max_steps) == ("cuda", "bfloat16", 5)
    cfg = compose_cfg(["experiment=grpo_tiny", *smoke.grpo_overrides(cpu, 2)], tiny=False)
    assert (cfg.model.device, cfg.pipeline.max_steps, cfg.budget.zoo) == ("cpu", 2, "test")
    cfg = compose_cfg(smoke.nurl_overrides(gpu, "/models/m", 3), tiny=False)
    assert cfg.pipeline.schedule._target_ == "nudgekit.nurl.NuRLSchedule"
    assert (cfg.model.name_or_path, cfg.model.dtype) == ("/models/m", "bfloat16")
    assert cfg.trainer.rollout._target_.endswith("vllm_rollouts")  # engine=vllm rollouts
    assert cfg.trainer.rollout.max_model_len is None
    assert cfg.budget.steps == 3


def test_a_failed_or_timed_out_check_is_a_fail_line(tmp_path):
    rc, out = smoke.run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=1)
    assert rc == 124
    res = smoke.judge_run("grpo_tiny", 0.0, rc, out, tmp_path, 2)
    assert res.status == "FAIL" and LINE.match(res.line())
    # a run that exits 0 without training is a FAIL too
    (tmp_path / "summary.json").write_text('{"train/steps": 1.0}')
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "train/loss": 0.5}\n')
    assert smoke.judge_run("grpo_tiny", 0.0, 0, "", tmp_path, 2).status == "FAIL"
    assert smoke.judge_run("grpo_tiny", 0.0, 0, "", tmp_path, 1).status == "PASS"
    res = smoke.judge_run("nurl_vllm", 0.0, 0, "", tmp_path, 1, need="perf/weight_sync_s")
    assert res.status == "FAIL" and "perf/weight_sync_s" in res.detail


def test_budget_spent_is_a_fail_and_exit_status_one(tmp_path, capsys):
    m = machine(device="cpu", n_gpus=0, has_vllm=False, out=tmp_path)
    results = smoke.run_checks(m, ["grpo_tiny", "zero2"], budget_s=5, atol=1e-3)
    assert [(r.status, r.check) for r in results] == [("FAIL", "grpo_tiny"), ("SKIP", "zero2")]
    assert "--budget-s" in results[0].detail


def test_cpu_mode_runs_grpo_tiny_and_skips_what_needs_a_gpu_or_vllm(tmp_path):
    """The script end to end as `make gpu-smoke` runs it, on the CPU: grpo_tiny trains 2 steps."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    lines = [LINE.match(x) for x in proc.stdout.splitlines() if not x.startswith("#")]
    assert all(lines), proc.stdout + proc.stderr[-2000:]
    got = {m.group(2): m.group(1) for m in lines}
    want_vllm = "PASS" if importlib.util.find_spec("vllm") else "SKIP"
    assert got == {
        "engine_parity": want_vllm,
        "grpo_tiny": "PASS",
        "zero2": "SKIP",
        "zero3": "SKIP",
        "nurl_vllm": want_vllm,
    }, proc.stdout
    assert proc.returncode == 0
    assert "steps=2" in next(m.group(4) for m in lines if m.group(2) == "grpo_tiny")
    assert (tmp_path / "grpo_tiny" / "summary.json").is_file()


@pytest.mark.slow
def test_cpu_zero_runs_both_stages_on_gloo(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--cpu-zero", "--only", "zero2", "zero3"]
        + ["--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert re.search(r"^PASS zero2 ", proc.stdout, re.M) and re.search(
        r"^PASS zero3 ", proc.stdout, re.M
    )
