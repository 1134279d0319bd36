"""Run-time helpers for the CLI: seeding, config validation, user-error unwrapping."""

from __future__ import annotations

import importlib
import inspect
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from nudgekit.errors import NudgekitError

_HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and, when present, CUDA)."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def find_user_error(exc: BaseException) -> NudgekitError | None:
    """The `NudgekitError` behind `exc`, looking through Hydra's instantiation wrappers."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, NudgekitError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def import_target(path: str) -> Any:
    """Import `pkg.mod.attr` (or `pkg.mod:attr`)."""
    module_name, _, attr = path.replace(":", ".").rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise NudgekitError(f"_target_ '{path}' cannot be imported: {exc}") from None


def iter_targets(node: Any, key: str = "") -> Iterator[tuple[str, DictConfig]]:
    """Yield `(dotted_key, node)` for every config node that has a `_target_`."""
    if isinstance(node, (DictConfig, ListConfig)) and (node._is_none() or node._is_missing()):
        return
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield key, node
        for k in node.keys():
            child = node._get_node(k)
            if OmegaConf.is_interpolation(node, k):
                continue  # validated where it is defined
            yield from iter_targets(child, f"{key}.{k}" if key else str(k))
    elif isinstance(node, ListConfig):
        for i, child in enumerate(node):
            yield from iter_targets(child, f"{key}[{i}]")


def validate_targets(cfg: DictConfig) -> list[str]:
    """Signature-bind every `_target_` node (without calling it). Returns problems found."""
    problems = []
    for key, node in iter_targets(cfg):
        if key.startswith("hydra"):
            continue
        try:
            target = import_target(str(node._target_))
        except NudgekitError as exc:
            problems.append(f"{key}: {exc}")
            continue
        kwargs = {k: None for k in node.keys() if k not in _HYDRA_KEYS}
        try:
            sig = inspect.signature(target)
        except (TypeError, ValueError):
            continue
        try:
            if node.get("_partial_", False):
                sig.bind_partial(**kwargs)
            else:
                sig.bind(**kwargs)
        except TypeError as exc:
            problems.append(f"{key} ({node._target_}): {exc}")
    return problems
