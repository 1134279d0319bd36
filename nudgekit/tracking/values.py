"""Turn logged values into plain JSON (for the mirror) or W&B-ready values.

Trainers hand the tracker whatever they have: Python numbers, numpy scalars, 0-d torch tensors
(possibly on a GPU, possibly requiring grad), lists, nested dicts, paths. The rules:

- ``None``, ``bool``, ``int``, ``str`` pass through; floats too, except that the JSONL mirror is
  strict JSON, so NaN / ±inf become ``null`` there (W&B still receives the float).
- anything with ``.tolist()`` (numpy scalars and arrays, torch tensors) is converted with it, so a
  0-d tensor becomes a Python number and a vector becomes a list;
- mappings become dicts with string keys, lists / tuples / sets become lists;
- anything else is stringified with ``str()`` (a ``Path`` becomes its path, a dataclass its repr)
  rather than dropped, so a log line never disappears silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def to_jsonable(value: Any, finite_only: bool = True) -> Any:
    """Convert a value to JSON-compatible Python data (rules in the module docstring).

    Args:
        value: any logged value.
        finite_only: map NaN / ±inf to ``None`` (strict JSON); keep them when False.

    Returns:
        A value made only of dict / list / str / int / float / bool / None.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if (math.isfinite(value) or not finite_only) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, finite_only) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v, finite_only) for v in value]
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        try:
            return to_jsonable(tolist(), finite_only)
        except Exception:  # an exotic .tolist(): fall back to text rather than lose the value
            return str(value)
    return str(value)


def to_wandb(value: Any) -> Any:
    """Convert a value for `wandb.log`: W&B media objects pass through, the rest as JSON.

    Args:
        value: any logged value.

    Returns:
        The value itself when it is a W&B data type (``wandb.Histogram``, ``wandb.Image``, ...),
        otherwise `to_jsonable(value, finite_only=False)`.
    """
    if _is_wandb_value(value):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_wandb(v) for k, v in value.items()}
    return to_jsonable(value, finite_only=False)


def _is_wandb_value(value: Any) -> bool:
    # Checked by module name so this file never imports wandb (disabled mode stays import-free).
    return type(value).__module__.startswith("wandb.")
