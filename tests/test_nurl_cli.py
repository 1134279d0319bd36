"""NuRL through `run.py`: the tiny experiments end to end, the real-scale config's fail-fast
paths, the pass@k curve, and (slow) every ablation sweep under debug=tiny."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli import assert_one_line_error, run_py

from nudgekit.nurl import HintStore, powers_of_two
from nudgekit.zoo import tiny_problems

ROOT = Path(__file__).resolve().parents[1]
# debug=tiny shrinks sizes; the step counts of the two stages read budget.steps
SHORT = ["debug=tiny", "budget.steps=1"]


def run_cli(
    args: list[str],
    tmp_path: Path,
    multirun: bool = False,
    env_extra: dict | None = None,
    timeout: int = 600,
) -> subprocess.CompletedProcess:
    where = (
        f"hydra.sweep.dir={tmp_path / 'multi'}" if multirun else f"hydra.run.dir={tmp_path / 'run'}"
    )
    args = [*(["-m"] if multirun else []), *args, where]
    return run_py(args, tmp_path, {"WANDB_MODE": "offline", **(env_extra or {})}, timeout)


error_line = assert_one_line_error


def test_powers_of_two():
    assert powers_of_two(256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert powers_of_two(2) == [1, 2]
    assert powers_of_two(6) == [1, 2, 4, 6]


@pytest.mark.slow
def test_nurl_qwen_dry_run_prints_the_plan(tmp_path):
    out = run_cli(["experiment=nurl_qwen", "dry_run=true"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    for needle in (
        "Qwen/Qwen3-4B-Instruct-2507",
        "nudgekit.engines.VLLMEngine",
        "zero_stage: 2",
        "mode: online",
        "hiyouga/math12k",
        "nudgekit.nurl.NuRLSchedule",
    ):
        assert needle in out.stdout, needle


def test_nurl_qwen_fails_fast_without_gpu_or_key(tmp_path):
    no_key = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    out = subprocess.run(
        [sys.executable, "run.py", "experiment=nurl_qwen", f"hydra.run.dir={tmp_path / 'a'}"],
        cwd=ROOT,
        timeout=300,
        env={**no_key, "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
    )
    assert "WANDB_API_KEY" in error_line(out)
    out = run_cli(["experiment=nurl_qwen", "logger.mode=offline"], tmp_path)
    if "vllm" in sys.modules or _has_vllm():  # a GPU box: the next thing missing is the hub
        pytest.skip("vllm is installed here")
    assert "vllm engine needs" in error_line(out) and "GPU" in error_line(out)


def _has_vllm() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def test_nurl_tiny_end_to_end_debug(tmp_path):
    """The whole two-stage run through the CLI, shrunk: hints, stage 1, filter, stage 2."""
    out = run_cli(["experiment=nurl_tiny", *SHORT, "hints=oracle"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["nurl/stage"] == 2 and summary["train/steps"] == 2
    # 4 medium + 4 hard_train (level 5) problems, each with a hint
    assert summary["nurl/stage2_start"] == 1 and summary["hints/accepted"] == 8
    assert summary["nurl/stage1_plateau"] == 0  # the 1-step cap, not a plateau
    store = HintStore.load(run / "hints.jsonl")
    hard_train = {p.id for p in tiny_problems("hard_train", n=4)}
    assert len(store) == 8 and hard_train <= set(store.hints())
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    stage2 = [s for s in steps if s.get("nurl/stage") == 2]
    assert stage2 and all("nurl/signal_unhinted" in s and "train/reward_mixed" in s for s in stage2)
    assert (run / "policy" / "config.json").is_file()


@pytest.mark.slow
def test_hints_experiment_writes_a_reusable_store(tmp_path):
    out = run_cli(
        ["experiment=nurl_tiny_hints", "debug=tiny", "hints=oracle", "hints.type=partial"], tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    store = HintStore.load(tmp_path / "run" / "hints.jsonl")
    report = json.loads((tmp_path / "run" / "hints_report.json").read_text())
    assert len(store) + len(report["dropped"]) == 4
    assert all(r.type == "partial" and r.source == "oracle" for r in store)
    assert "lift/lifted_frac" in report["metrics"]


SWEEPS = {"nurl_gate": 4, "nurl_hint_type": 4, "nurl_source": 2, "nurl_hinted": 2}


@pytest.mark.slow
@pytest.mark.parametrize("sweep", sorted(SWEEPS))
def test_ablation_sweep_runs_end_to_end(sweep, tmp_path):
    out = run_cli(
        ["experiment=nurl_tiny", f"sweep={sweep}", *SHORT], tmp_path, multirun=True, timeout=1200
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summaries = sorted((tmp_path / "multi").glob("*/summary.json"))
    assert len(summaries) == SWEEPS[sweep]
    for path in summaries:
        assert json.loads(path.read_text())["train/steps"] == 2
