"""`mix_problems`: one training set from named parts (e.g. medium problems + the `hard_train`
half of level 5), so NuRL and its baseline train on exactly the same list."""

from __future__ import annotations

from collections.abc import Sequence

from nudgekit.data.problem import Problem
from nudgekit.errors import NudgekitError


def mix_problems(**parts: Sequence[Problem] | None) -> list[Problem]:
    """The parts concatenated in the order given (a None or empty part adds nothing).

    Raises:
        NudgekitError: a problem id appears twice, or the result is empty.
    """
    out: list[Problem] = []
    seen: set[str] = set()
    for name, part in parts.items():
        for p in part or ():
            if p.id in seen:
                raise NudgekitError(f"mix_problems: problem {p.id} appears twice (part {name!r})")
            seen.add(p.id)
            out.append(p)
    if not out:
        raise NudgekitError(f"mix_problems: no problems in parts {sorted(parts)}")
    return out
