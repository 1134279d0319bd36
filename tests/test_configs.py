"""Every config composes, every `_target_` binds, and the CLI shows its groups."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers.config import compose_cfg
from omegaconf import OmegaConf

from nudgekit.runtime import iter_targets, validate_targets

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
SWEEPS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))


def test_there_are_experiments():
    assert "eval_tiny" in EXPERIMENTS


@pytest.mark.parametrize("debug", [None, "tiny"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_binds(experiment, debug):
    cfg = compose_cfg([f"experiment={experiment}"], tiny=debug == "tiny", hydra=True)
    # every value resolves (the hydra node needs a running app; the rest must not)
    body = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in ("hydra", "paths")])
    OmegaConf.to_container(body, resolve=True, throw_on_missing=False)
    assert cfg.pipeline._target_
    assert list(iter_targets(cfg.pipeline))
    assert validate_targets(cfg) == []


def test_debug_tiny_shrinks_budget():
    full = compose_cfg(["experiment=eval_tiny"], tiny=False, hydra=True)
    tiny = compose_cfg(["experiment=eval_tiny"], hydra=True)
    assert tiny.budget.problems < full.budget.problems
    assert tiny.budget.samples < full.budget.samples
    assert tiny.budget.zoo == "test"
    assert tiny.logger.mode == "disabled"
    # pass@k follows the shrunk n (a fixed [1, 2, 4, 8] made `eval_tiny debug=tiny` a user error)
    assert list(full.pipeline.k) == [1, 2, 4, 8] and list(tiny.pipeline.k) == [1, 2]
    assert max(tiny.pipeline.k) <= tiny.pipeline.n


def test_compose_cfg_shrinks_once():
    """`compose_cfg` adds `debug=tiny` by default, and not twice when the overrides have it."""
    tiny = compose_cfg(["experiment=eval_tiny"])
    assert tiny == compose_cfg(["experiment=eval_tiny", "debug=tiny"])
    assert tiny != compose_cfg(["experiment=eval_tiny"], tiny=False)


@pytest.mark.parametrize("sweep", SWEEPS)
def test_sweeps_are_multirun(sweep):
    cfg = compose_cfg(["experiment=eval_tiny", f"sweep={sweep}"], tiny=False, hydra=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.hydra.sweeper.params


def test_validate_targets_reports_unknown_keys():
    cfg = compose_cfg(
        ["experiment=eval_tiny", "+pipeline.not_a_parameter=1"], tiny=False, hydra=True
    )
    problems = validate_targets(cfg)
    assert any("not_a_parameter" in p for p in problems)


def test_cli_help_lists_groups():
    out = subprocess.run(
        [sys.executable, "run.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    for group in ("pipeline", "model", "data", "reward", "engine", "logger", "experiment", "debug"):
        assert f"{group}:" in out.stdout
