"""Tracker end to end: real offline W&B runs plus the JSONL mirror, in a temp run dir."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from nudgekit.errors import NudgekitError
from nudgekit.tracking import Tracker, read_jsonl

REPO = Path(__file__).resolve().parents[1]
CONFIG_KEY = "cfg-secret-7f3a9b2c4d5e"  # planted in the config under an api_key
ENV_KEY = "env-wandb-key-0c1d2e3f4a5b6c7d"  # planted in WANDB_API_KEY and inside a string


@pytest.fixture(autouse=True)
def _wandb_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep W&B's files outside the run dir (artifact staging, core logs) inside tmp_path."""
    home = tmp_path / "wandb_home"
    monkeypatch.setenv("WANDB_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / "config"))
    return home


def _all_files_text(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _wandb_file(run_dir: Path) -> Path:
    (run,) = sorted((run_dir / "wandb").glob("offline-run-*"))
    (wandb_file,) = run.glob("run-*.wandb")
    return wandb_file


def test_offline_run_writes_wandb_run_and_mirror_without_leaking_secrets(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    _wandb_home: Path,
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", ENV_KEY)
    config = {
        "seed": 3,
        "model": {"max_new_tokens": 32, "pad_token": "<pad>"},
        "tracking": {"api_key": CONFIG_KEY, "mode": "offline"},
        "engine": {"base_url": f"http://u:{ENV_KEY}@127.0.0.1:8000/v1"},
    }
    run_dir = tmp_path / "run"
    with Tracker(run_dir, config=config, name="e2e", tags=["test"], group="g") as tracker:
        for step in range(3):
            tracker.log(
                {"train/reward": torch.tensor(0.5 * step), "train/kl": np.float32(0.1)}, step=step
            )
        tracker.log({"eval/pass@1": 0.25})  # step=None -> previous + 1
        tracker.log_table(
            "eval/samples",
            [
                {"prompt": "1+1=", "completion": "2", "reward": 1.0},
                {"prompt": "2+2=", "completion": f"leaked {ENV_KEY}?", "reward": 0},
            ],
        )
        tracker.summary({"eval/pass@1": 0.25, "train/steps": 4})
        wandb_dir = tracker.wandb_dir
    # W&B: a real offline run directory with its .wandb log, holding what we logged.
    wandb_file = _wandb_file(run_dir)
    assert wandb_dir == wandb_file.parent
    wandb_bytes = wandb_file.read_bytes()
    assert wandb_bytes.startswith(b":W&B")
    for name in (b"train/reward", b"eval/pass@1", b"eval/samples", b"max_new_tokens"):
        assert name in wandb_bytes, name
    # The mirror: one line per log call with step, time and converted values.
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 1, 2, 3]
    assert [m.get("train/reward") for m in metrics] == [0.0, 0.5, 1.0, None]
    assert metrics[3]["eval/pass@1"] == 0.25
    assert metrics[0]["train/kl"] == pytest.approx(0.1) and isinstance(metrics[0]["time"], float)
    rows = read_jsonl(run_dir / "tables" / "eval_samples.jsonl")
    assert [r["prompt"] for r in rows] == ["1+1=", "2+2="] and {r["step"] for r in rows} == {3}
    assert rows[1]["completion"] == "leaked ***?"
    assert json.loads((run_dir / "summary.json").read_text()) == {
        "eval/pass@1": 0.25,
        "train/steps": 4,
    }
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["tracking"] == {"api_key": "***", "mode": "offline"}
    assert saved["engine"]["base_url"] == "http://u:***@127.0.0.1:8000/v1"
    assert saved["model"] == config["model"]
    # No secret anywhere under run_dir: our files, W&B's binary log, W&B's debug logs.
    files = _all_files_text(run_dir)
    assert len(files) >= 6
    files.update(_all_files_text(_wandb_home))  # W&B's table staging copy included
    for path, data in files.items():
        assert CONFIG_KEY.encode() not in data, path
        assert ENV_KEY.encode() not in data, path
    # W&B stays quiet: nothing of its own reaches the terminal.
    out, err = capfd.readouterr()
    assert "wandb" not in (out + err).lower(), out + err


def test_sequential_trackers_in_one_process_each_get_a_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A Hydra multirun executes its jobs one after another in one process.
    for job in range(2):
        tracker = Tracker(tmp_path / f"job{job}", config={"job": job}, mode="offline")
        tracker.log({"loss": 1.0 + job}, step=5)
        with caplog.at_level(logging.WARNING, logger="nudgekit.tracking"):
            tracker.log({"loss": 9.0}, step=3)  # W&B would drop it: mirror-only, with a warning
        start = time.perf_counter()
        tracker.finish()
        # finish() waits for W&B's flush; it must not fall back to its 5 s timeout.
        assert time.perf_counter() - start < 3.0
        tracker.finish()  # idempotent
        # Read right after finish: the .wandb file must already hold the logged metric.
        assert b"loss" in _wandb_file(tmp_path / f"job{job}").read_bytes()
        metrics = read_jsonl(tmp_path / f"job{job}" / "metrics.jsonl")
        assert [(m["step"], m["loss"]) for m in metrics] == [(5, 1.0 + job), (3, 9.0)]
    assert "step 3 < 5" in caplog.text
    run_ids = {_wandb_file(tmp_path / f"job{j}").name for j in range(2)}
    assert len(run_ids) == 2


def test_disabled_mode_writes_mirror_but_no_wandb(tmp_path: Path) -> None:
    with Tracker(tmp_path, config={"a": {"b": 1}}, mode="disabled") as tracker:
        tracker.log({"x": 1})
        tracker.log({"x": 2})
        tracker.log_table("samples", [{"completion": "c", "meta": {"k": [1, 2]}}], step=7)
        assert tracker.wandb_run is None and tracker.wandb_dir is None
    assert not (tmp_path / "wandb").exists()
    assert [(m["step"], m["x"]) for m in read_jsonl(tmp_path / "metrics.jsonl")] == [(0, 1), (1, 2)]
    assert read_jsonl(tmp_path / "tables" / "samples.jsonl") == [
        {"step": 7, "completion": "c", "meta": {"k": [1, 2]}}
    ]
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == {"a": {"b": 1}}


def test_bad_mode_is_a_one_line_user_error(tmp_path: Path) -> None:
    with pytest.raises(NudgekitError, match="tracking.mode: 'ofline' is not one of") as err:
        Tracker(tmp_path, mode="ofline")
    assert "\n" not in str(err.value)
    assert not any(tmp_path.iterdir()), "nothing may be written for a rejected config"


def test_config_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(NudgekitError, match="config must be a mapping, got list"):
        Tracker(tmp_path, config=[1, 2], mode="disabled")


def test_omegaconf_config_is_resolved_and_redacted(tmp_path: Path) -> None:
    cfg = OmegaConf.create(
        {"lr": 0.1, "opt": {"lr": "${lr}"}, "hub": {"hf_token": "hf_0123456789"}, "todo": "???"}
    )
    tracker = Tracker(tmp_path, config=cfg, mode="disabled", tags=OmegaConf.create(["a"]))
    tracker.finish()
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved == {"lr": 0.1, "opt": {"lr": 0.1}, "hub": {"hf_token": "***"}, "todo": "???"}


def test_reserved_keys_nan_and_unknown_values(tmp_path: Path) -> None:
    with Tracker(tmp_path, mode="disabled") as tracker:
        tracker.log({"step": 99, "time": 1, "loss": float("nan"), "path": Path("/x")}, step=4)
    (line,) = read_jsonl(tmp_path / "metrics.jsonl")
    assert line["step"] == 4 and line["time"] != 1
    assert line["loss"] is None and line["path"] == "/x"


def test_use_after_finish_and_bad_table_name(tmp_path: Path) -> None:
    tracker = Tracker(tmp_path, mode="disabled")
    with pytest.raises(NudgekitError, match="table name '//' has no usable characters"):
        tracker.log_table("//", [{"a": 1}])
    tracker.finish()
    with pytest.raises(RuntimeError, match="after finish"):
        tracker.log({"x": 1})


def test_non_zero_rank_tracks_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    with Tracker(tmp_path / "r1", config={"a": 1}, mode="offline") as tracker:
        tracker.log({"x": 1})
        tracker.log_table("t", [{"a": 1}])
        tracker.summary({"x": 1})
        assert not tracker.active and tracker.wandb_run is None
    assert not (tmp_path / "r1").exists()


def test_online_without_api_key_fails_fast_with_one_line(tmp_path: Path) -> None:
    # In a fresh interpreter with an empty HOME, so no ambient key or W&B setting can interfere.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(REPO), XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    code = (
        "from nudgekit.tracking import Tracker\n"
        "from nudgekit.errors import NudgekitError\n"
        "try:\n"
        f"    Tracker({str(tmp_path / 'run')!r}, mode='online')\n"
        "except NudgekitError as e:\n"
        "    print('ERR', e)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("ERR")]
    assert "W&B online run failed to start" in line and "WANDB_API_KEY" in line


def test_invalid_wandb_setting_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(
        NudgekitError, match=r"tracking.settings: invalid W&B setting .*nope"
    ) as err:
        Tracker(tmp_path, mode="offline", settings={"nope": 1})
    assert "\n" not in str(err.value)


def test_context_manager_finishes_on_error_and_keeps_lines(tmp_path: Path) -> None:
    with pytest.raises(ZeroDivisionError):
        with Tracker(tmp_path, mode="disabled") as tracker:
            tracker.log({"x": 1.0})
            1 / 0  # noqa: B018
    assert read_jsonl(tmp_path / "metrics.jsonl")[0]["x"] == 1.0
    with pytest.raises(RuntimeError, match="after finish"):
        tracker.summary({"x": 1})
