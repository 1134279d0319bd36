"""OmegaConf resolvers and small config helpers shared by the CLI and the tests.

Resolvers:
    ``${nk.root:}``: the repository root (the folder above the ``nudgekit`` package).
    ``${nk.cache:}``: the cache root (``$NUDGEKIT_CACHE`` or ``~/.cache/nudgekit``).
    ``${nk.data:}``: the benchmark files (`shared_data_dir`).
    ``${nk.pow2:n}``: ``[1, 2, 4, ...]`` up to ``n`` (the default pass@k list for ``n`` samples).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
# the launcher presets (hydra/launcher=submitit_slurm|submitit_local|joblib) keep the plugins' own
# names, so Hydra validates them against the plugins' schemas and says so on every run
warnings.filterwarnings(
    "ignore",
    message=r"(?s).*is validated against ConfigStore schema with the same name",
    category=UserWarning,
)


def cache_root() -> Path:
    """Where built artefacts are cached (the tiny-world zoo in `zoo/`, converted packaged models
    in `pkg/`, reproduce stages): ``$NUDGEKIT_CACHE`` (unset or empty: ``~/.cache/nudgekit``)."""
    return Path(os.environ.get("NUDGEKIT_CACHE") or Path.home() / ".cache" / "nudgekit")


def shared_data_dir() -> Path:
    """The benchmark files: ``$NUDGEKIT_DATA`` or ``<repo>/../shared/data``."""
    return Path(os.environ.get("NUDGEKIT_DATA", ROOT.parent / "shared" / "data"))


def powers_of_two(n: int) -> list[int]:
    """``[1, 2, 4, ...]`` up to and including ``n`` when ``n`` is a power of two (``[1]`` for n < 2)."""
    ks = [1]
    while ks[-1] * 2 <= int(n):
        ks.append(ks[-1] * 2)
    return ks


def _register() -> None:
    resolvers = {
        "nk.root": lambda: str(ROOT),
        "nk.cache": lambda: str(cache_root()),
        "nk.data": lambda: str(shared_data_dir()),
        "nk.pow2": powers_of_two,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


_register()
