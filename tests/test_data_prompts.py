"""Prompt templates: chat messages, plain base-model prompts, hints, and template validation."""

from __future__ import annotations

import pytest

from nudgekit.data import TEMPLATES, Problem, PromptTemplate, get_template
from nudgekit.errors import NudgekitError

PROBLEM = Problem("t/1", "Compute {x} + 1 when x = 2.", "3", hint="stored hint must not leak")


def test_messages_without_and_with_hint() -> None:
    template = PromptTemplate(system="You are precise.")
    assert template.messages(PROBLEM) == [
        {"role": "system", "content": "You are precise."},
        {"role": "user", "content": "Compute {x} + 1 when x = 2."},
    ]
    hinted = template.messages(PROBLEM, hint="Substitute x.")
    assert hinted[-1]["content"] == "Compute {x} + 1 when x = 2.\n\nHint: Substitute x."
    # No system turn when none is set; a bare string works as the question.
    assert PromptTemplate().messages("2+2?") == [{"role": "user", "content": "2+2?"}]


def test_stored_hint_is_never_used_implicitly() -> None:
    for template in TEMPLATES.values():
        text = template.user_text(PROBLEM) + template.plain(PROBLEM)
        assert "stored hint" not in text
        assert "Hint" not in text


def test_placeholders_are_filled_once_and_other_braces_are_literal() -> None:
    # A question containing "{hint}" must not get the hint spliced into it.
    problem = Problem("t/2", "What does {hint} mean?", "x")
    text = TEMPLATES["math_boxed"].user_text(problem, hint="H")
    assert text.startswith("What does {hint} mean?\n\nHint: H\n\n")
    assert text.endswith("within \\boxed{}.")
    assert TEMPLATES["math_boxed"].user_text(problem).endswith("within \\boxed{}.")


def test_plain_prompts() -> None:
    assert PromptTemplate().plain(PROBLEM) == "Question: Compute {x} + 1 when x = 2.\nAnswer:"
    with_system = PromptTemplate(system="Answer briefly.").plain("1+1?")
    assert with_system == "Answer briefly.\nQuestion: 1+1?\nAnswer:"
    assert PromptTemplate().plain("1+1?", hint="count") == "Question: 1+1?\nHint: count\nAnswer:"


def test_named_templates() -> None:
    assert {"plain", "math_boxed", "gsm8k"} <= set(TEMPLATES)
    assert get_template("plain").user_text(PROBLEM) == PROBLEM.question
    assert "\\boxed{}" in get_template("math_boxed").user_text(PROBLEM)
    gsm = get_template("gsm8k")
    assert "The answer is N" in gsm.user_text(PROBLEM)
    assert "Hint: h" in gsm.user_text(PROBLEM, hint="h") and "The answer is N" in gsm.user_text(
        PROBLEM, hint="h"
    )
    with pytest.raises(NudgekitError, match=r"unknown prompt template 'nope' \(known: plain"):
        get_template("nope")


def test_invalid_templates_are_refused() -> None:
    with pytest.raises(NudgekitError, match=r"PromptTemplate.user must contain '\{question\}'"):
        PromptTemplate(user="Solve it.")
    with pytest.raises(NudgekitError, match=r"PromptTemplate.hint_user must contain '\{hint\}'"):
        PromptTemplate(hint_user="{question}")
