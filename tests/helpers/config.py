"""`compose_cfg`: the real Hydra config from `conf/`, shrunk by `debug=tiny` unless told not to.

`override(key, value)` spells a Python value as a Hydra command-line override, and
`apply_overrides(cfg, overrides)` applies `key=value` overrides to an already composed config the
way Hydra's compose applies them once the defaults are merged (so a composed config can be cached
and varied per test).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

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


def override(key: str, value: Any) -> str:
    """`key=value` as typed on the command line: None, bools, numbers, strings (paths too) and
    lists/tuples/dicts of them."""
    return f"{key}={_literal(value)}"


def _literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if "'" in text or "\\" in text or "${" in text:
            raise ValueError(f"no plain Hydra spelling for the string {text!r}")
        return f"'{text}'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no Hydra spelling for a {type(value).__name__}")


@functools.cache
def _parser() -> OverridesParser:
    return OverridesParser.create()


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Apply value overrides (`a.b=value`) to the composed `cfg` in place, as Hydra's compose does
    once the defaults are merged: the key must exist (a composed config is in struct mode, so an
    unknown key raises), dicts merge, anything else replaces. Group choices
    (`trainer/deepspeed=zero2`) and `+`/`~` overrides change what is composed: give those to
    `compose_cfg`."""
    for parsed in _parser().parse_overrides(list(overrides)):
        composing = parsed.is_add() or parsed.is_force_add() or parsed.is_delete()
        if composing or parsed.package is not None or "/" in parsed.key_or_group:
            raise ValueError(f"{parsed.input_line}: not a value override (use compose_cfg)")
        OmegaConf.update(cfg, parsed.key_or_group, parsed.value(), merge=True)
    return cfg
