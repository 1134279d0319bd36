"""Seeded case generators for the verifier fuzzer (`nudgekit.rewards.fuzz`).

A `Case` is a completion, a gold answer and what the verifier must say: ``expect=True`` for an
honest positive (a 0 is a false reject), ``expect=False`` for a trap, where a naive parse reads
the gold out of a completion that means something else (a 1 is a false accept, counted under
``category``), and ``expect=None`` for malformed, huge or adversarial input (only exceptions,
timeouts and latency count).

The trap categories are those of issue 19: ``exponent`` (``1.5e3`` read as 1.5),
``unicode_minus``, ``latex_minus`` (``$-$7``) and ``paren_minus`` (``-(7)``) read as 7,
``power`` (``2^{10}`` read as 2), ``sqrt`` (``3\\sqrt{2}`` read as 3), ``decimal_comma``
(``3,5`` read as 3), ``tolerance`` (1000099 accepted for 1000000) and ``negated_choice``
(the last option named, though rejected).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction

LETTERS = "ABCDE"
NUMBER_TEMPLATES = (
    "#### {t}",
    "\\boxed{{{t}}}",
    "The answer is {t}.",
    "Answer: {t}",
    "So the final answer is ${t}$.",
    "Therefore the result is {t}",
)
PHRASE_TEMPLATES = NUMBER_TEMPLATES[2:4] + NUMBER_TEMPLATES[5:]  # no box, no math delimiters
NEGATED_TEMPLATES = (
    "Option {x} is correct, not Option {y}.",
    "The answer is ({x}). Option {y} is wrong.",
    "It is ({x}), not ({y}).",
    "We can rule out option {y}; the answer is {x}.",
    "({y}) isn't right, ({x}) is.",
    "Option {y} is incorrect. So the answer is option {x}.",
    "Rather than ({y}), I choose ({x}).",
    "The answer is {x}, since option {y} is false.",
)
CHOICE_TEMPLATES = ("The answer is ({x}).", "\\boxed{{{x}}}", "Answer: {x}", "I pick ({x}).")
ADVERSARIAL_PIECES = (
    "0", "7", "42", "1,000", "3.5", "\\frac{", "}", "{", "^", "\\sqrt", "$", "-", "e", " ", "\n",
    "(", ")", ",", ".", "Answer:", "####", "Option", "\\boxed{", "\u2212", "\\pi", "not", "A",
    "\u00d7", "\\times", "10^{", "!", "\x00", "\U0001f600", "\u202e", "e3", "%", "\\text{",
)  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One fuzz case (see the module docstring)."""

    verifier: str
    completion: str
    answer: str
    expect: bool | None
    category: str


def _decimal(value: Fraction) -> str:
    """An exact decimal string of a value with a finite decimal expansion."""
    if value.denominator == 1:
        return str(value.numerator)
    places = 0
    while (value * 10**places).denominator != 1:
        places += 1
    return f"{float(value):.{places}f}" if places < 15 else str(value)


def _trap(rng: random.Random, category: str) -> tuple[str, str, str | None]:
    """(text as written, what a naive parse reads, the true value or None) for a category."""
    n = rng.randint(1, 999)
    if category == "exponent":
        mantissa = rng.choice(["1.5", "2", "3.25", "7.1", "9"])
        k = rng.randint(1, 6)
        text = f"{mantissa}{rng.choice(['e', 'E', 'e+'])}{k}"
        return text, mantissa, _decimal(Fraction(mantissa) * 10**k)
    if category == "unicode_minus":
        return f"\u2212{n}", str(n), f"-{n}"
    if category == "latex_minus":
        return f"$-${n}", str(n), f"-{n}"
    if category == "paren_minus":
        return f"-({n})", str(n), f"-{n}"
    if category == "power":
        base, exp = rng.randint(2, 9), rng.randint(2, 12)
        text = rng.choice([f"{base}^{{{exp}}}", f"{base}^{exp}"])
        return text, str(base), str(base**exp)
    if category == "sqrt":
        a, b = rng.randint(2, 9), rng.choice([2, 3, 5, 6, 7, 10, 11])
        return f"{a}\\sqrt{{{b}}}", str(rng.choice([a, b])), None
    if category == "decimal_comma":
        return f"{n},{rng.randint(1, 99)}", str(n), None
    raise ValueError(category)


def _preamble(rng: random.Random, wrong: str) -> str:
    """Prose with distractor numbers, the naive reading among them."""
    a, b = rng.randint(2, 50), rng.randint(2, 50)
    return rng.choice(
        [
            "",
            f"We have {a} boxes of {b} apples.\n",
            f"First {wrong} and {a} give {a + b}; then we simplify.\n",
            f"Let x = {a}.\n",
        ]
    )


NUMBER_TRAPS = (
    "exponent",
    "unicode_minus",
    "latex_minus",
    "paren_minus",
    "power",
    "sqrt",
    "decimal_comma",
)


def number_case(rng: random.Random, verifier: str) -> Case:
    """A trap or an honest positive for a verifier that reads a final number."""
    extra = ("honest_float",) if verifier == "numeric" else ()
    category = rng.choice((*NUMBER_TRAPS, "tolerance", "honest", *extra))
    if category == "tolerance":
        gold = rng.randint(10**5, 10**8)
        written = gold + max(1, round(gold * rng.uniform(2e-6, 5e-4)))
        text, wrong, right = str(written), str(gold), str(written)
    elif category == "honest":
        grouped = f"{rng.randint(1, 999)},000" if verifier != "tiny" else "0"
        text = wrong = right = str(rng.choice([rng.randint(-999, 9999), grouped]))
    elif category == "honest_float":
        a, b = Fraction(rng.randint(1, 99), 10), Fraction(rng.randint(1, 99), 100)
        text, wrong, right = repr(float(a) + float(b)), "", _decimal(a + b)
    else:
        text, wrong, right = _trap(rng, category)
    templates = PHRASE_TEMPLATES if category == "latex_minus" else NUMBER_TEMPLATES
    if verifier == "tiny":
        templates = ("Answer: {t}",)
        if category == "sqrt":
            right = None
    completion = _preamble(rng, wrong) + rng.choice(templates).format(t=text)
    if category.startswith("honest"):
        return Case(verifier, completion, right, True, category)
    if verifier == "math" and category == "sqrt" and rng.random() < 0.5:
        return Case(verifier, completion, text, True, "honest_sqrt")
    if right is not None and rng.random() < 0.3:
        return Case(verifier, completion, right, True, f"honest_{category}")
    return Case(verifier, completion, wrong, False, category)


def choice_case(rng: random.Random) -> Case:
    """A negated-option trap or an honest positive for the ``choice`` verifier."""
    x, y = rng.sample(LETTERS, 2)
    if rng.random() < 0.5:
        completion = rng.choice(NEGATED_TEMPLATES).format(x=x, y=y)
        if rng.random() < 0.6:
            return Case("choice", completion, y, False, "negated_choice")
        return Case("choice", completion, x, True, "honest_negated")
    return Case("choice", rng.choice(CHOICE_TEMPLATES).format(x=x), x, True, "honest")


def adversarial_text(rng: random.Random) -> str:
    """Huge, malformed or pathological text (long whitespace runs, deep nesting, soup)."""
    n = rng.choice([2_000, 20_000, 100_000])
    k = rng.choice([30, 300, 5_000])
    return rng.choice(
        [
            lambda: " " * n,
            lambda: "\n" * n,
            lambda: " \n" * (n // 2) + "A",
            lambda: rng.choice(["option", "answer", "Answer:", "choice is"]) + " " * n + "x",
            lambda: "\\boxed{" * k + "1" + "}" * k,
            lambda: "(" * k + "1" + ")" * k,
            lambda: "\\boxed{" + "(" * 30 + "1" + ")" * 30 + "}",
            lambda: "\\boxed{10^{10^{10}}}",
            lambda: "\\boxed{" + "x^" * k + "x}",
            lambda: "\\boxed{" + "9" * n + "}",
            lambda: "1e" * k,
            lambda: "1," * k,
            lambda: "-(" * k,
            lambda: "2^{" * k,
            lambda: "not option B " * k,
            lambda: "\\boxed{" + "+".join(["1"] * k) + "}",
            lambda: "".join(rng.choice(ADVERSARIAL_PIECES) for _ in range(rng.randint(1, 3_000))),
            lambda: "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(1, 2_000))),
        ]
    )()


def adversarial_case(rng: random.Random, verifier: str) -> Case:
    """Adversarial text as the completion (usually) or as the gold answer."""
    text = adversarial_text(rng)
    gold = rng.choice(LETTERS) if verifier == "choice" else str(rng.randint(0, 9))
    if rng.random() < 0.1:
        return Case(verifier, "The answer is 7.", text[:5_000], None, "adversarial_gold")
    return Case(verifier, text, gold, None, "adversarial")


def generate_cases(verifiers: list[str], cases: int, seed: int) -> list[Case]:
    """``cases`` cases spread evenly over ``verifiers`` (about 1 in 5 adversarial), seeded."""
    rng = random.Random(seed)
    out = []
    for i in range(cases):
        verifier = verifiers[i % len(verifiers)]
        if rng.random() < 0.2:
            out.append(adversarial_case(rng, verifier))
        elif verifier == "choice":
            out.append(choice_case(rng))
        else:
            out.append(number_case(rng, verifier))
    return out
