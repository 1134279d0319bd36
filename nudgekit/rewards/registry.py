"""Verifiers by name: `load_verifier("math")` -> a guarded `Verifier`.

Built-in names resolve lazily to ``module:function`` paths, so importing `nudgekit.rewards` does
not import sympy, and the tiny-world verifier (written with the zoo) is only needed when asked
for. Any other ``"package.module:function"`` string is accepted as a user verifier.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from nudgekit.errors import NudgekitError
from nudgekit.rewards.guard import RawVerifier, Verifier

VERIFIERS: dict[str, str] = {
    "math": "nudgekit.rewards.math_verifier:verify_math",
    "gsm8k": "nudgekit.rewards.verifiers:verify_gsm8k",
    "numeric": "nudgekit.rewards.verifiers:verify_numeric",
    "choice": "nudgekit.rewards.verifiers:verify_choice",
    "tiny": "nudgekit.rewards.tiny:verify_tiny",
}


def resolve_verifier(name: str) -> RawVerifier:
    """The raw (unguarded) function behind a registry name or a ``"pkg.mod:fn"`` path.

    Raises:
        NudgekitError: one line naming the unknown verifier and listing the known names.
    """
    path = VERIFIERS.get(name, name) if isinstance(name, str) else None
    if path is None or ":" not in path:
        known = ", ".join(sorted(VERIFIERS))
        raise NudgekitError(
            f"unknown verifier {name!r}: known names are {known} (or 'package.module:function')"
        )
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise NudgekitError(f"verifier {name!r}: cannot import {module_name!r} ({exc})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise NudgekitError(f"verifier {name!r}: {module_name!r} has no function {attr!r}")
    return fn


def load_verifier(
    name: str | Callable,
    timeout_s: float | None = 5.0,
    max_chars: int = 20_000,
    isolation: str = "process",
) -> Verifier:
    """A `Verifier` ``(completion, answer) -> float`` that never raises and never hangs.

    Args:
        name: a registry name (``math``, ``gsm8k``, ``numeric``, ``choice``, ``tiny``), a
            ``"package.module:function"`` path, or a raw callable to guard.
        timeout_s: per-call time limit in seconds; a call past it scores 0.0 (None: no limit).
        max_chars: completions keep only their last ``max_chars`` characters.
        isolation: ``"process"`` (default) runs calls in a worker-process pool whose hard
            timeout kills a runaway call from any thread; ``"inline"`` runs them in this
            process under the signal / thread guard (see `nudgekit.rewards.guard`).

    Returns:
        The guarded verifier; its ``stats`` count calls, failures and timeouts.
    """
    if isinstance(name, Verifier):
        return name
    if callable(name):
        label = getattr(name, "__name__", type(name).__name__)
        return Verifier(name, label, timeout_s, max_chars, isolation)
    return Verifier(resolve_verifier(name), name, timeout_s, max_chars, isolation)
