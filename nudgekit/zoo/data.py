"""SFT examples for each zoo model role, drawn from the train split only (and, for the policy,
the ``hard_train`` half of level 5; never val, test or ``hard``).

An example is ``(prompt, target)``: loss is taken on the target tokens only. Chat examples are
rendered with the model's own tokenizer chat template and end with its EOS token; base-corpus
examples have an empty prompt (loss on everything) and no EOS.

Roles:
- ``policy``: solve levels 1-3 without a hint; solve levels 1-4 with a hint of any of the four
  levels (with the abstract cue the solution skips the named pair); write an explanation given
  question + answer, and the abstract cue given question + answer + explanation (levels 1-4, and
  level 5 from the ``hard_train`` half); read the abstract cue on ``hard_train`` level-5 problems
  (the cue-skipping solution of 3 ops). Levels 4-5 are never solved without a hint here (an
  explanation is written with the gold answer in the prompt), and no ``hard`` problem appears.
- ``base``: raw solution text (levels 1-4): the plan line and steps, then one of several endings,
  never an end-of-turn token; a third of the documents are scraped chat transcripts (the user turn
  of the chat template, then the raw solution); two documents per example joined by a blank line
  (so the model runs on into a new document instead of stopping).
- ``aligned``: chat-formatted solutions (levels 1-4) ending in the strict ``Answer:`` line.
- ``aligned_weak``: the same chat format, but written by a *weak solver* (the nudger's data): it
  restates the operations and chains the steps correctly (each line's input is the previous
  line's output), computes the additive operations (``inc``, ``dec``, ``flp``) right and guesses
  the others (``dbl``, ``tpl``, ``neg``: a seeded uniform digit), and its ``Answer:`` line repeats
  the last value in the text. 60% of these examples finish an answer whose first steps (half
  of the time all of them) are already written correctly in the prompt, as in nudging. A model
  trained on it learns the format, when to stop and to copy the last value into the answer
  line, but not the multiplicative steps (never supervised with the right digit beyond chance).
"""

from __future__ import annotations

import random
from typing import Any

from nudgekit.errors import NudgekitError
from nudgekit.zoo import prompts
from nudgekit.zoo.tasks import HINT_LEVELS, MOD, OPS, Chain, chains, hints, solution_steps

ROLES = ("policy", "base", "aligned", "aligned_weak")
# operations the weak solver computes; it guesses the rest (why: a weaker reasoner with a skill
# gradient: right on additive chains, near chance on a multiplicative step)
WEAK_KNOWS = frozenset({"inc", "dec", "flp"})
# share of weak-solver examples that finish an answer begun correctly in the prompt (why: the
# answer line must copy the last value *in context*, also where a stronger model wrote it)
WEAK_FINISH_SHARE = 0.6
# Policy task mix (why: hinted solving and hint writing must be seen often enough to be learned,
# while unhinted solving stays the bulk so pass@1 on easy problems is solid).
POLICY_MIX = (("solve", 0.45), ("hinted", 0.35), ("explain", 0.1), ("cue", 0.1))
# Level mix of the hinted, explanation and cue-writing examples (why: drawing chains uniformly
# would be mostly level 5, the largest level); level 5 comes from `hard_train`, and its hinted
# examples get the abstract cue only.
HINTED_LEVELS = ((1, 0.05), (2, 0.1), (3, 0.25), (4, 0.3), (5, 0.3))
HINT_MIX = (("abstract", 0.55), ("partial", 0.15), ("full", 0.15), ("answer", 0.15))


def _pool(levels: tuple[int, ...], split: str = "train") -> list[Chain]:
    out: list[Chain] = []
    for lv in levels:
        out.extend(chains(split, lv))
    return out


def _pick(rng: random.Random, mix: tuple[tuple[Any, float], ...]) -> Any:
    names, weights = zip(*mix)
    return rng.choices(names, weights=weights)[0]


def _policy_example(tok: Any, rng: random.Random, pools: dict[Any, list[Chain]]) -> tuple[str, str]:
    kind = _pick(rng, POLICY_MIX)
    eos = tok.eos_token
    if kind == "solve":
        c = rng.choice(pools["plain"])
        return prompts.chat_prompt(tok, c.question), prompts.chat_target(c) + eos
    if kind == "hinted":
        c = rng.choice(pools[_pick(rng, HINTED_LEVELS)])
        level = "abstract" if len(c.ops) == 5 else _pick(rng, HINT_MIX)
        assert level in HINT_LEVELS
        target = prompts.chat_target(c, use_cue=level == "abstract")
        return prompts.chat_prompt(tok, c.question, hints(c)[level]), target + eos
    if kind == "explain":
        c = rng.choice(pools[_pick(rng, HINTED_LEVELS)])
        return prompts.explain_prompt(tok, c.question, str(c.answer)), solution_steps(c) + eos
    c = rng.choice(pools[_pick(rng, HINTED_LEVELS)])
    prompt = prompts.cue_prompt(tok, c.question, str(c.answer), solution_steps(c))
    return prompt, hints(c)["abstract"] + eos


def policy_examples(tok: Any, n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(f"policy-{seed}")
    pools: dict[Any, list[Chain]] = {"plain": _pool((1, 2, 3))}
    pools.update({lv: _pool((lv,)) for lv in (1, 2, 3, 4)})
    pools[5] = _pool((5,), "hard_train")
    return [_policy_example(tok, rng, pools) for _ in range(n)]


def base_examples(tok: Any, n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(f"base-{seed}")
    pool = _pool((1, 2, 3, 4))

    def doc() -> str:
        return prompts.raw_document(rng.choice(pool), rng.randrange(12), tok)

    return [("", f"{doc()}\n\n{doc()}") for _ in range(n)]


def aligned_examples(tok: Any, n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(f"aligned-{seed}")
    pool = _pool((1, 2, 3, 4))
    out = []
    for _ in range(n):
        c = rng.choice(pool)
        out.append((prompts.chat_prompt(tok, c.question), prompts.chat_target(c) + tok.eos_token))
    return out


def weak_target(chain: Chain, rng: random.Random, given: int = 0) -> str:
    """The weak solver's chat answer to `chain` after the first `given` correct step lines (the
    plan line too when `given` > 0): plan line, chained steps (guessed values for the
    operations outside `WEAK_KNOWS`) and ``Answer:`` repeating the last value in the text."""
    lines = [] if given else [f"do {' '.join(chain.ops)}"]
    x = chain.values()[given - 1] if given else chain.start
    for name in chain.ops[given:]:
        y = OPS[name](x) if name in WEAK_KNOWS else rng.randrange(MOD)
        lines.append(f"{x} {name} {y}")
        x = y
    return "\n".join([*lines, f"Answer: {x}"])


def weak_aligned_examples(tok: Any, n: int, seed: int) -> list[tuple[str, str]]:
    """Whole weak answers, and (`WEAK_FINISH_SHARE`) answers to finish whose first steps are
    already written correctly in the prompt (loss on the weak rest and the answer line only)."""
    rng = random.Random(f"aligned_weak-{seed}")
    pool = _pool((1, 2, 3, 4))
    out = []
    for _ in range(n):
        c = rng.choice(pool)
        prompt = prompts.chat_prompt(tok, c.question)
        given = 0
        if rng.random() < WEAK_FINISH_SHARE:  # half of them give every step: the answer is a copy
            given = len(c.ops) if rng.random() < 0.5 else rng.randint(1, len(c.ops))
        if given:
            prompt += "\n".join(solution_steps(c).split("\n")[: given + 1]) + "\n"
        out.append((prompt, weak_target(c, rng, given) + tok.eos_token))
    return out


def examples(role: str, tok: Any, n: int, seed: int) -> list[tuple[str, str]]:
    """`n` SFT examples for `role` ("policy", "base" or "aligned"), deterministic in `seed`."""
    if role == "policy":
        return policy_examples(tok, n, seed)
    if role == "base":
        return base_examples(tok, n, seed)
    if role == "aligned":
        return aligned_examples(tok, n, seed)
    if role == "aligned_weak":
        return weak_aligned_examples(tok, n, seed)
    raise NudgekitError(f"zoo: data role={role!r} is not one of {list(ROLES)}")


def tokenizer_corpus(seed: int = 0, n: int = 3000) -> list[str]:
    """Text the BPE tokenizer is trained on: raw documents and chat-format solutions/hints."""
    rng = random.Random(f"corpus-{seed}")
    pool = _pool((1, 2, 3, 4))
    out = []
    for i in range(n):
        c = rng.choice(pool)
        out.append(prompts.raw_document(c, i))
        out.append(prompts.chat_target(c) + "\n" + "\n".join(hints(c).values()))
    return out
