"""Seeded tiny-world reasoning tasks: chains of named modular operations.

A problem is a start value and a chain of named operations mod 10, e.g.
``Start 4: inc dbl neg`` (always mod 10); the chain of thought restates the operations to perform and
writes every intermediate value; the gold answer is the final value.

Difficulty is the chain length. Levels 1-3 are plain chains (no two adjacent operations cancel).
Levels 4-6 contain exactly one adjacent *cancelling pair* (``inc dec``, ``dec inc``, ``neg neg``,
``flp flp``) and no other: the pair is structure an abstract cue can exploit, because once it is
named ("inc then dec cancel out") the effective chain is two operations shorter. Levels 1-4 are
split into train/val/test by a hash of the question. Level 5 is hashed in halves: ``hard`` (the
held-out evaluation split, never in any training data) and ``hard_train`` (used only to teach the
policy to read an abstract cue: never solved without one). Level 6 is available through
``chains("hard", 6)`` for experiments but is not used by the zoo.

Every problem carries oracle hints at four abstraction levels (``meta["hints"]``): ``abstract``
(names the key idea: which pair cancels, or that nothing cancels; no values), ``partial`` (the
first half of the intermediate values, never the last one), ``full`` (every intermediate value)
and ``answer``.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from nudgekit.data.problem import Problem
from nudgekit.errors import NudgekitError

MOD = 10
OPS: dict[str, Callable[[int], int]] = {
    "inc": lambda x: (x + 1) % MOD,
    "dec": lambda x: (x - 1) % MOD,
    "dbl": lambda x: (2 * x) % MOD,
    "tpl": lambda x: (3 * x) % MOD,
    "neg": lambda x: (-x) % MOD,
    "flp": lambda x: (x + 5) % MOD,
}
# Adjacent pairs that compose to the identity for every input.
CANCEL_PAIRS = frozenset({("inc", "dec"), ("dec", "inc"), ("neg", "neg"), ("flp", "flp")})
PLAIN_LEVELS = (1, 2, 3)
PAIRED_LEVELS = (4, 5, 6)
SPLIT_LEVELS = (1, 2, 3, 4)  # hashed into train / val / test
HARD_LEVELS = (5, 6)  # the held-out hard split
LEVEL_NAMES: dict[str, tuple[int, ...]] = {
    "easy": (1, 2),
    "medium": (3, 4),
    "hard": (5,),
}
SPLITS = ("train", "val", "test", "hard", "hard_train")
# levels each held-out split can serve (the others serve SPLIT_LEVELS)
HARD_SPLIT_LEVELS = {"hard": HARD_LEVELS, "hard_train": HARD_LEVELS[:1]}
VERSION = "ops-mod10-v3"  # bump when generation changes: it is part of every zoo cache key


@dataclass(frozen=True)
class Chain:
    """One task instance: a start value and the operation names applied in order."""

    start: int
    ops: tuple[str, ...]

    @property
    def question(self) -> str:
        return f"Start {self.start}: {' '.join(self.ops)}"

    def values(self, ops: Sequence[str] | None = None) -> list[int]:
        """Intermediate values after each op (of `ops`, default the whole chain)."""
        x, out = self.start, []
        for name in self.ops if ops is None else ops:
            x = OPS[name](x)
            out.append(x)
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    @property
    def pair_index(self) -> int | None:
        """Index of the first op of the cancelling pair, or None for a plain chain."""
        for i in range(len(self.ops) - 1):
            if (self.ops[i], self.ops[i + 1]) in CANCEL_PAIRS:
                return i
        return None

    @property
    def reduced_ops(self) -> tuple[str, ...]:
        """The chain with its cancelling pair removed (the chain itself when plain)."""
        i = self.pair_index
        return self.ops if i is None else self.ops[:i] + self.ops[i + 2 :]


def count_pairs(ops: Sequence[str]) -> int:
    return sum((a, b) in CANCEL_PAIRS for a, b in zip(ops, ops[1:]))


def _valid(ops: tuple[str, ...], level: int) -> bool:
    if level in PLAIN_LEVELS:
        return count_pairs(ops) == 0
    if count_pairs(ops) != 1:
        return False
    # Removing the pair must not create a new adjacent pair: exactly one cancellation to find.
    return count_pairs(Chain(0, ops).reduced_ops) == 0


# ---------------------------------------------------------------- text forms of a chain


def step_lines(start: int, ops: Sequence[str], values: Sequence[int]) -> list[str]:
    """One ``<input> <op> <output>`` line per op: the input is the previous line's output, so
    every line is a local computation (why: tiny models learn this in minutes)."""
    inputs = [start, *values[:-1]]
    return [f"{x} {name} {v}" for x, name, v in zip(inputs, ops, values)]


def solution_steps(chain: Chain, *, use_cue: bool = False) -> str:
    """The chain-of-thought body (without the answer line).

    Args:
        chain: the problem.
        use_cue: skip the cancelling pair, as a solver does once the abstract cue named it.

    Returns:
        ``do <ops>`` followed by one ``<input> <op> <output>`` line per op performed.
    """
    ops = chain.reduced_ops if use_cue else chain.ops
    values = chain.values(ops)
    return "\n".join([f"do {' '.join(ops)}", *step_lines(chain.start, ops, values)])


def abstract_hint(chain: Chain) -> str:
    i = chain.pair_index
    if i is None:
        return "No two neighbouring steps cancel; apply each in order."
    a, b = chain.ops[i], chain.ops[i + 1]
    return f"{a} then {b} cancel out."


def partial_hint(chain: Chain) -> str:
    lines = step_lines(chain.start, chain.ops, chain.values())
    k = len(lines) // 2  # never the last value, which is the answer
    if k == 0:
        return f"Apply {chain.ops[0]} to {chain.start}."
    return "; ".join(lines[:k])


def full_hint(chain: Chain) -> str:
    return "; ".join(step_lines(chain.start, chain.ops, chain.values()))


def answer_hint(chain: Chain) -> str:
    return f"The answer is {chain.answer}."


HINT_LEVELS = ("abstract", "partial", "full", "answer")


def hints(chain: Chain) -> dict[str, str]:
    return {
        "abstract": abstract_hint(chain),
        "partial": partial_hint(chain),
        "full": full_hint(chain),
        "answer": answer_hint(chain),
    }


# ---------------------------------------------------------------- splits and problems


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def split_of(chain: Chain) -> str:
    """The split a chain belongs to: levels 1-4 hash to train/val/test (80/10/10); level 5 hashes
    to `hard` / `hard_train` (50/50); level 6 is `hard`."""
    bucket = int(_digest(chain.question)[:8], 16) % 10
    if len(chain.ops) in HARD_LEVELS:
        return "hard_train" if len(chain.ops) == HARD_LEVELS[0] and bucket < 5 else "hard"
    return "train" if bucket < 8 else ("val" if bucket == 8 else "test")


@lru_cache(maxsize=16)
def _all_chains(level: int) -> tuple[Chain, ...]:
    """Every valid chain of a level, in a fixed canonical order."""
    out = []
    for ops in itertools.product(sorted(OPS), repeat=level):
        if _valid(ops, level):
            out.extend(Chain(start, ops) for start in range(MOD))
    return tuple(out)


def chains(split: str, level: int, seed: int = 0) -> list[Chain]:
    """All chains of `level` in `split`, shuffled by `seed`."""
    members = [c for c in _all_chains(level) if split_of(c) == split]
    random.Random(f"{seed}-{split}-{level}").shuffle(members)
    return members


def to_problem(chain: Chain) -> Problem:
    level = len(chain.ops)
    cot = solution_steps(chain)
    return Problem(
        id=f"tiny/{_digest(chain.question)[:16]}",
        question=chain.question,
        answer=str(chain.answer),
        meta={
            "level": level,
            "split": split_of(chain),
            "start": chain.start,
            "ops": list(chain.ops),
            "cot": cot,
            "solution": f"{cot}\nAnswer: {chain.answer}",
            "cue_solution": f"{solution_steps(chain, use_cue=True)}\nAnswer: {chain.answer}",
            "hints": hints(chain),
        },
    )


def parse_levels(split: str, level: int | str | None) -> tuple[int, ...]:
    """Levels named by `level` (an int, "easy"/"medium"/"hard", "1,2" or None = split default)."""
    if level is None:
        return (HARD_LEVELS[0],) if split in HARD_SPLIT_LEVELS else SPLIT_LEVELS
    if isinstance(level, int):
        levels: tuple[int, ...] = (level,)
    elif level in LEVEL_NAMES:
        levels = LEVEL_NAMES[level]
    else:
        try:
            levels = tuple(int(x) for x in str(level).split(","))
        except ValueError:
            raise NudgekitError(
                f"tiny_problems: level={level!r} is not an int, a comma list or one of "
                f"{sorted(LEVEL_NAMES)}"
            ) from None
    allowed = HARD_SPLIT_LEVELS.get(split, SPLIT_LEVELS)
    bad = [lv for lv in levels if lv not in allowed]
    if bad:
        raise NudgekitError(f"tiny_problems: split={split!r} has levels {list(allowed)}, not {bad}")
    return levels


def tiny_problems(
    split: str = "test",
    *,
    level: int | str | None = None,
    n: int | None = None,
    seed: int = 0,
) -> list[Problem]:
    """Tiny-world problems of one split.

    Args:
        split: ``train``, ``val``, ``test`` (levels 1-4) or ``hard`` (levels 5-6, held out).
        level: an int, a comma list ("1,2"), a name ("easy" = 1-2, "medium" = 3-4,
            "hard" = 5) or None (all levels of the split; level 5 for ``hard``).
        n: how many problems (spread round-robin over the levels); None = all of them.
        seed: shuffling seed; the same arguments always give the same list.

    Returns:
        Problems with stable content-derived ids ("tiny/<hash>"); ``meta`` carries level, cot,
        solution, cue_solution and the four oracle hints under ``meta["hints"]``.
    """
    if split not in SPLITS:
        raise NudgekitError(f"tiny_problems: split={split!r} is not one of {list(SPLITS)}")
    if n is not None and n < 0:
        raise NudgekitError(f"tiny_problems: n={n} must be >= 0")
    pools = [chains(split, lv, seed) for lv in parse_levels(split, level)]
    picked: list[Chain] = []
    # Round-robin over levels so a small n still covers every level.
    for group in itertools.zip_longest(*pools):
        picked.extend(c for c in group if c is not None)
        if n is not None and len(picked) >= n:
            break
    return [to_problem(c) for c in (picked if n is None else picked[:n])]


def chain_of(problem: Problem) -> Chain:
    """Recover the chain of a tiny-world problem (from meta, or by parsing the question)."""
    meta = problem.meta or {}
    if "ops" in meta and "start" in meta:
        return Chain(int(meta["start"]), tuple(meta["ops"]))
    return parse_question(problem.question)


def parse_question(question: str) -> Chain:
    try:
        head, rest = question.split(":", 1)
        ops = tuple(rest.split())
        start = int(head.split()[1])
    except (ValueError, IndexError):
        raise NudgekitError(f"not a tiny-world question: {question!r}") from None
    if not ops or any(o not in OPS for o in ops):
        raise NudgekitError(f"not a tiny-world question (unknown op): {question!r}")
    return Chain(start, ops)
