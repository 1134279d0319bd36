"""End-to-end runs through `run.py`: real W&B offline runs, real files, one-line user errors."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers.cli import assert_one_line_error, run_py

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NUDGEKIT_DATA", ROOT.parent / "shared" / "data"))
needs_data = pytest.mark.skipif(
    not (DATA / "gsm8k" / "test.jsonl").exists(), reason=f"shared benchmark files not at {DATA}"
)


def run_cli(args: list[str], tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_py([*args, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, timeout=timeout)


@needs_data
@pytest.mark.parametrize("benchmark", ["gsm8k", "math500"])
def test_eval_on_real_benchmark_writes_wandb_and_jsonl(tmp_path, tiny_qwen_dir, benchmark):
    out = run_cli(
        [
            f"experiment=eval_{benchmark}",
            f"model.name_or_path={tiny_qwen_dir}",
            "logger=wandb",
            "budget.problems=3",
            "eval.n=2",
            "eval.temperature=1.0",
            "budget.max_new_tokens=6",
            "eval.k=[1,2]",
        ],
        tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "run"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "eval/pass@1" in metrics[0] and "eval/pass@2" in metrics[0]
    assert 0.0 <= metrics[0]["eval/pass@1"] <= 1.0
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and all(len(s["completions"]) == 2 for s in samples)
    assert all(s["id"].startswith(f"{benchmark}/") for s in samples)
    assert (run / "pass_at_k.png").stat().st_size > 1000
    assert json.loads((run / "summary.json").read_text())["eval/problems"] == 3
    offline = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1 and offline[0].stat().st_size > 100
    assert (run / "tables").is_dir()


def test_dry_run_prints_plan_and_loads_nothing(tmp_path):
    out = run_cli(
        ["experiment=eval_gsm8k", "model.name_or_path=/no/such/model", "dry_run=true"], tmp_path
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "/no/such/model" in out.stdout and "every _target_ binds" in out.stdout


def gsm8k_rows(tmp_path) -> str:
    """Two GSM8K-format rows in a local file, so these tests never need ../shared/data."""
    path = tmp_path / "rows.jsonl"
    path.write_text(
        '{"question": "1+1?", "answer": "#### 2"}\n{"question": "2+2?", "answer": "#### 4"}\n'
    )
    return f"data.path={path}"


def test_unknown_model_path_is_one_line(tmp_path):
    out = run_cli(
        [
            "experiment=eval_gsm8k",
            "model.name_or_path=/no/such/model-dir",
            gsm8k_rows(tmp_path),
            "budget.problems=2",
        ],
        tmp_path,
    )
    assert_one_line_error(out, "/no/such/model-dir")


def test_unknown_verifier_is_one_line(tmp_path, tiny_qwen_dir):
    out = run_cli(
        [
            "experiment=eval_gsm8k",
            f"model.name_or_path={tiny_qwen_dir}",
            gsm8k_rows(tmp_path),
            "reward.name=no_such_verifier",
            "budget.problems=2",
        ],
        tmp_path,
    )
    assert_one_line_error(out, "no_such_verifier", "gsm8k")


def test_malformed_dataset_row_is_one_line(tmp_path, tiny_qwen_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "#### 2"}\n{"question": "2+2?"}\n')
    out = run_cli(
        ["experiment=eval_gsm8k", f"model.name_or_path={tiny_qwen_dir}", f"data.path={bad}"],
        tmp_path,
    )
    assert_one_line_error(out, "bad.jsonl", "row 2", "answer")


@pytest.mark.slow
def test_tinyworld_check_under_debug_tiny(tmp_path):
    out = run_cli(["experiment=tinyworld_check", "debug=tiny"], tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "tinyworld_check.json").read_text())
    for prop in ("P1", "P2", "P3", "P4"):
        assert isinstance(report[prop]["holds"], bool), prop
    assert (tmp_path / "run" / "tinyworld_check.md").read_text().count("|") > 8
