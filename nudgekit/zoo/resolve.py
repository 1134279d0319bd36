"""Resolve a zoo name to its local HF directory, building it (and its parent) on first use.

Above both the registry (names, specs, cache paths) and the builder (`nudgekit.zoo.build`), which
imports only the registry: the builder needs a parent's directory, this module builds the parent
first.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from nudgekit.errors import NudgekitError
from nudgekit.zoo.registry import (
    FULL,
    META_FILE,
    NAMES,
    VARIANTS,
    config_hash,
    full_name,
    is_built,
    model_dir,
    parse_name,
    spec_of,
)


def resolve(name: str, *, progress: bool = True) -> Path:
    """The local HF directory of zoo model `name`, building it on first use.

    Args:
        name: ``<model>[@<variant>]``, e.g. ``"tiny-policy"`` or ``"tiny-policy@test"``.
        progress: show a tqdm bar while building.

    Returns:
        A directory loadable by ``AutoModelForCausalLM`` / ``AutoTokenizer``.
    """
    parse_name(name)
    target = model_dir(name)
    if (target / META_FILE).is_file():
        return target
    spec = spec_of(name)
    if spec.init_from:
        resolve(full_name(spec.init_from, parse_name(name)[1]), progress=progress)
    from nudgekit.zoo.build import build_into  # lazy: pulls in torch/transformers training

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        start = time.perf_counter()
        meta = build_into(name, spec, tmp, progress=progress)
        meta.update(
            name=name, config_hash=config_hash(name), build_seconds=time.perf_counter() - start
        )
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        try:
            tmp.rename(target)
        except OSError:
            if not (target / META_FILE).is_file():  # not a concurrent builder's win: re-raise
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_groups(models: list[str] | tuple[str, ...] = NAMES) -> list[list[str]]:
    """`models` (plus their parents) grouped into chains that can build independently, each
    parent before its children, biggest chain first."""

    def root(base: str) -> str:
        return base if not FULL[base].init_from else root(FULL[base].init_from)

    groups: dict[str, list[str]] = {}
    for base in NAMES:  # NAMES lists parents before children
        if base in models or any(root(m) == base or FULL[m].init_from == base for m in models):
            groups.setdefault(root(base), []).append(base)
    return sorted(groups.values(), key=lambda g: -sum(FULL[b].steps for b in g))


def _build_group(group: list[str], variant: str, progress: bool) -> list[tuple[str, str]]:
    return [
        (full_name(b, variant), str(resolve(full_name(b, variant), progress=progress)))
        for b in group
    ]


def build_all(
    variant: str = "full",
    *,
    progress: bool = True,
    workers: int = 1,
    models: list[str] | tuple[str, ...] = NAMES,
) -> dict[str, Path]:
    """Build (or reuse) zoo models of `variant`; returns name -> directory.

    Args:
        variant: "full" or "test".
        progress: tqdm bars while training.
        workers: independent chains (e.g. the policy vs base -> aligned-large) built in this many
            processes at once; every build uses one thread, so 2 workers use 2 cores.
        models: which models (default all; parents are built too).
    """
    if variant not in VARIANTS:
        raise NudgekitError(f"zoo: unknown variant {variant!r}; known: {list(VARIANTS)}")
    groups = build_groups(models)
    if workers <= 1 or all(is_built(full_name(b, variant)) for g in groups for b in g):
        pairs = [p for g in groups for p in _build_group(g, variant, progress)]
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_build_group, g, variant, progress) for g in groups]
            pairs = [p for f in futures for p in f.result()]
    return {name: Path(path) for name, path in pairs if parse_name(name)[0] in models}
