"""`python run.py ...` as a user runs it, for the end-to-end tests: `run_py` (W&B and the hub kept
inside the test's tmp dir, offline) and `assert_one_line_error` (how every user error must look)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_py(
    args: list[str], tmp_path: Path, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """`python run.py ARGS` from the repo root, W&B kept inside `tmp_path`, no hub access;
    `env` is added last (it may override any of these)."""
    full_env = dict(os.environ)
    full_env.update(
        {
            "WANDB_DIR": str(tmp_path),
            "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
            "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
            "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
            "WANDB_SILENT": "true",
            "HF_HUB_OFFLINE": "1",
        }
    )
    full_env.pop("HYDRA_FULL_ERROR", None)  # it would turn the one-line errors into tracebacks
    full_env.update(env or {})
    cmd = [sys.executable, "run.py", *args]
    return subprocess.run(
        cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_error(out: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2, no traceback, and exactly one `error: ...` line on stderr (progress bars
    aside) holding every needle; returns that line."""
    assert out.returncode == 2, (out.returncode, out.stdout[-2000:], out.stderr[-3000:])
    assert "Traceback" not in out.stderr + out.stdout
    lines = [ln for ln in out.stderr.splitlines() if ln.strip() and "it/s]" not in ln]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
