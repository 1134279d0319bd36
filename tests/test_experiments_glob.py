"""DESIGN §4: every `*_tiny` experiment runs end to end in one Hydra multirun under `debug=tiny`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*_tiny.yaml"))


@pytest.mark.slow
def test_every_tiny_experiment_runs_in_one_multirun(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
    cmd = [
        sys.executable,
        "run.py",
        "-m",
        "experiment=glob(*_tiny)",
        "debug=tiny",
        "logger=disabled",
        f"hydra.sweep.dir={tmp_path}",
    ]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-4000:]
    assert len(TINY) >= 4, TINY
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == len(TINY), (jobs, TINY)
    ran = set()
    for job in jobs:
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        name = next(t for t in TINY if f"experiment={t}\n" in overrides + "\n")
        ran.add(name)
        summary = json.loads((job / "summary.json").read_text())
        assert summary and all(isinstance(k, str) for k in summary), (name, summary)
        metrics = (job / "metrics.jsonl").read_text().splitlines()
        assert metrics and all(json.loads(line) for line in metrics), name
    assert ran == set(TINY)
