"""Run-time helpers for the CLI: seeding, config validation, user-error unwrapping.

`check_config` runs before anything is instantiated, so that a value the user left out
(``model=local`` without ``model.name_or_path``) or mistyped (``eval.n=abc``,
``decoder.gamma=abc``) is one line naming the key they set, not a ``TypeError`` from deep inside
a constructor. Numbers are checked against the annotations of the ``_target_`` that receives
them; only plain ``int`` / ``float`` / ``bool`` parameters (optionally ``| None``) are checked.
`find_user_error` also turns OmegaConf's own config errors (a missing value, an interpolation
that does not resolve) into one-line `NudgekitError`s naming the key.
"""

from __future__ import annotations

import importlib
import inspect
import os
import random
import re
import types
import typing
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from nudgekit.errors import NudgekitError

_HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
# Config errors OmegaConf raises while a config is read; any other OmegaConf error is a bug.
_CONFIG_ERRORS = (MissingMandatoryValue, InterpolationResolutionError)
# annotation -> the value types it accepts (bool is an int subclass, so it is refused explicitly)
_SCALAR_TYPES: dict[Any, tuple[type, ...]] = {int: (int,), float: (int, float), bool: (bool,)}
_SIMPLE_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][\w.\-]*)\}")


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
        if isinstance(exc, _CONFIG_ERRORS):
            return config_error(exc)
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def config_error(exc: OmegaConfBaseException) -> NudgekitError:
    """One line for an OmegaConf config error: its message and the key it names."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    key = getattr(exc, "full_key", None)
    return NudgekitError(f"config: {message}" + (f" (key: {key})" if key else ""))


def check_config(cfg: DictConfig) -> None:
    """Refuse missing values and non-numbers given to numeric parameters, before any loading.

    Args:
        cfg: the composed run config (without the ``hydra`` node).

    Raises:
        NudgekitError: one line listing every missing key and every mistyped number.
    """
    problems = [f"{key} is required (set it: {key}=...)" for key in missing_keys(cfg)]
    seed = cfg.get("seed")  # read by the CLI itself, not by a _target_
    if seed is not None and not _fits(seed, (int,)):
        problems.append(f"seed: expected an integer, got {seed!r}")
    problems += type_problems(cfg)
    if problems:
        raise NudgekitError("config: " + "; ".join(problems))


def missing_keys(node: Any, key: str = "") -> Iterator[str]:
    """Yield the dotted keys whose value is ``???``, without resolving any interpolation."""
    if isinstance(node, DictConfig):
        children = [(str(k), node._get_node(k)) for k in node.keys()]
    elif isinstance(node, ListConfig):
        children = [(f"[{i}]", node._get_node(i)) for i in range(len(node))]
    else:
        return
    for name, child in children:
        path = name if not key else (f"{key}{name}" if name.startswith("[") else f"{key}.{name}")
        if isinstance(child, (DictConfig, ListConfig)):
            if child._is_missing():
                yield path
            else:
                yield from missing_keys(child, path)
        elif child is not None and child._value() == "???":
            yield path


def type_problems(cfg: DictConfig) -> list[str]:
    """Values that do not fit the ``int`` / ``float`` / ``bool`` parameter they are passed to.

    Args:
        cfg: the composed run config.

    Returns:
        One message per offending key, naming the key the user set (the end of an
        interpolation chain such as ``pipeline.n: ${eval.n}``), the value and the receiver.
    """
    problems: dict[str, str] = {}
    for key, node in iter_targets(cfg):
        if key.startswith("hydra"):
            continue
        try:
            target = import_target(str(node._target_))
        except NudgekitError:
            continue  # validate_targets / instantiate report it
        for name, accepted in scalar_parameters(target).items():
            if name not in node:
                continue
            try:
                value = node[name]
            except OmegaConfBaseException:
                continue  # missing or unresolvable: reported by check_config / instantiate
            if value is None or _fits(value, accepted):
                continue
            source = source_key(cfg, f"{key}.{name}")
            receiver = f"{node._target_} `{name}`"
            problems.setdefault(
                source, f"{source}: expected {_describe(accepted)}, got {value!r} ({receiver})"
            )
    return list(problems.values())


def scalar_parameters(target: Any) -> dict[str, tuple[type, ...]]:
    """The parameters of a callable annotated ``int`` / ``float`` / ``bool`` (or ``X | None``).

    Args:
        target: a class or function.

    Returns:
        Parameter name -> accepted value types; parameters with other annotations are left out.
    """
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return {}
    func = target.__init__ if isinstance(target, type) else target
    namespace = getattr(inspect.unwrap(func), "__globals__", {})
    found = {}
    for param in sig.parameters.values():
        accepted = _scalar_types(_evaluate(param.annotation, namespace))
        if accepted:
            found[param.name] = accepted
    return found


def source_key(cfg: DictConfig, key: str, max_hops: int = 10) -> str:
    """Follow ``${a.b}`` interpolations from `key` to the key that holds the value."""
    for _ in range(max_hops):
        node: Any = cfg
        for part in key.split("."):
            if not isinstance(node, DictConfig) or part not in node:
                return key
            node = node._get_node(part)
        match = _SIMPLE_INTERPOLATION.fullmatch(str(node._value()))
        if match is None:
            return key
        key = match.group(1)
    return key


def _evaluate(annotation: Any, namespace: dict[str, Any]) -> Any:
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, namespace)  # noqa: S307 - annotations of our own _target_ code
    except Exception:  # noqa: BLE001 - an annotation that names a TYPE_CHECKING import
        return None


def _scalar_types(annotation: Any) -> tuple[type, ...]:
    if annotation in _SCALAR_TYPES:
        return _SCALAR_TYPES[annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if args and all(a in _SCALAR_TYPES for a in args):
            return tuple(dict.fromkeys(t for a in args for t in _SCALAR_TYPES[a]))
    return ()


def _describe(accepted: tuple[type, ...]) -> str:
    if bool in accepted:
        return "true or false"
    return "a number" if float in accepted else "an integer"


def _fits(value: Any, accepted: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in accepted
    return isinstance(value, accepted)


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
