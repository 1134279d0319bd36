"""`compose_cfg`: the real Hydra config from `conf/`, shrunk by `debug=tiny` unless told not to."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

import nudgekit.config  # noqa: F401  (resolvers)

CONF = Path(__file__).resolve().parents[2] / "conf"


def compose_cfg(
    overrides: Sequence[str] = (),
    *,
    tiny: bool = True,
    hydra: bool = False,
    output_dir: str | Path | None = None,
) -> DictConfig:
    """Compose `conf/config.yaml` with `overrides`, as `run.py` would.

    Args:
        overrides: Hydra command-line overrides.
        tiny: add `debug=tiny` (the shrink `run.py ... debug=tiny` applies) unless `overrides`
            already choose a `debug` option; False gives the full config.
        hydra: keep the `hydra` node (`return_hydra_config`: launcher, sweeper, run dir).
        output_dir: set `paths.output_dir` (where an in-process `nudgekit.cli.run` writes).
    """
    overrides = list(overrides)
    if tiny and not any(_key(o) == "debug" for o in overrides):
        overrides.insert(0, "debug=tiny")
    if output_dir is not None:
        overrides.append(f"paths.output_dir={output_dir}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=overrides, return_hydra_config=hydra)


def _key(override: str) -> str:
    """The config key of an override (`debug` for `debug=tiny`, `+debug=x`, `~debug`)."""
    return override.split("=", 1)[0].lstrip("+~")
