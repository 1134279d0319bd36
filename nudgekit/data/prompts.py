"""Prompt templates: a `Problem` (plus an optional hint) -> chat messages or a plain prompt.

Templates produce role/content messages only; the model's chat template is applied by the models
package. The hint is always an explicit argument and `Problem.hint` is ignored, so evaluation code,
which never passes a hint, cannot leak a stored one into a prompt. Placeholders are `{question}`
and `{hint}` only; any other braces (`\\boxed{}`) are literal, so templates written in YAML need
no escaping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nudgekit.data.problem import Problem
from nudgekit.errors import NudgekitError

_PLACEHOLDER = re.compile(r"\{(question|hint)\}")


def fill(template: str, question: str, hint: str = "") -> str:
    """Substitute `{question}` and `{hint}` in one pass (so text inside them is never re-read)."""
    values = {"question": question, "hint": hint}
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


@dataclass(frozen=True)
class PromptTemplate:
    """How a problem is shown to a model.

    Args:
        user: user turn without a hint; must contain `{question}` (`{hint}` is filled with "").
        system: optional system turn.
        hint_user: user turn when a hint is given; must contain `{question}` and `{hint}`.
        plain_user: base-model prompt body for `plain`, e.g. ``"Question: {question}\\nAnswer:"``;
            its `{question}` receives the question with the hint appended by `plain_hint`.
        plain_hint: how a hint joins the question inside `plain` prompts.
    """

    user: str = "{question}"
    system: str | None = None
    hint_user: str = "{question}\n\nHint: {hint}"
    plain_user: str = "Question: {question}\nAnswer:"
    plain_hint: str = "{question}\nHint: {hint}"

    def __post_init__(self) -> None:
        required = {
            "user": ("{question}",),
            "hint_user": ("{question}", "{hint}"),
            "plain_user": ("{question}",),
            "plain_hint": ("{question}", "{hint}"),
        }
        for field_name, placeholders in required.items():
            text = getattr(self, field_name)
            for placeholder in placeholders:
                if placeholder not in text:
                    raise NudgekitError(
                        f"PromptTemplate.{field_name} must contain '{placeholder}': {text!r}"
                    )

    def user_text(self, problem: Problem | str, hint: str | None = None) -> str:
        """The user turn for `problem`, using `hint_user` when `hint` is given."""
        question = _question(problem)
        if hint:
            return fill(self.hint_user, question, hint)
        return fill(self.user, question)

    def messages(self, problem: Problem | str, hint: str | None = None) -> list[dict[str, str]]:
        """Chat messages `[{"role": "system", ...}, {"role": "user", ...}]` (system if set)."""
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": self.user_text(problem, hint)})
        return messages

    def plain(self, problem: Problem | str, hint: str | None = None) -> str:
        """A base-model prompt: ``"<system>\\nQuestion: q\\nAnswer:"`` (system line if set)."""
        question = _question(problem)
        if hint:
            question = fill(self.plain_hint, question, hint)
        body = fill(self.plain_user, question)
        return f"{self.system}\n{body}" if self.system else body


def _question(problem: Problem | str) -> str:
    return problem if isinstance(problem, str) else problem.question


_BOXED = "Please reason step by step, and put your final answer within \\boxed{}."
_GSM8K = (
    "Solve the problem step by step. End your response with 'The answer is N.' where N is the "
    "final number."
)

TEMPLATES: dict[str, PromptTemplate] = {
    "plain": PromptTemplate(),
    "math_boxed": PromptTemplate(
        user=f"{{question}}\n{_BOXED}",
        hint_user=f"{{question}}\n\nHint: {{hint}}\n\n{_BOXED}",
    ),
    # the tiny world's format (nudgekit.zoo.prompts): the question alone, a hint on its own line
    "tiny": PromptTemplate(hint_user="{question}\nHint: {hint}"),
    "gsm8k": PromptTemplate(
        user=f"{{question}}\n{_GSM8K}",
        hint_user=f"{{question}}\n\nHint: {{hint}}\n\n{_GSM8K}",
    ),
}


def get_template(name: str) -> PromptTemplate:
    """A named template from `TEMPLATES`; unknown names raise a one-line error listing them."""
    template = TEMPLATES.get(name)
    if template is None:
        raise NudgekitError(f"unknown prompt template '{name}' (known: {', '.join(TEMPLATES)})")
    return template
