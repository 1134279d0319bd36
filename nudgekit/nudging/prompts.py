"""`NudgingPrompt`: the two models' prompts as the reference implementation builds them.

In fywalter/nudging (`run_api.py`, `dataset_utils.PROMPTS`, `utils.apply_instruct_template`)
both models get the same instruction ("Answer the question by walking through the reasoning
steps." for its reasoning sets), the question behind "Question: ", and an empty answer start:

- the base model reads plain text, `"{instruction}\\n{question prefix}{question}\\n"`: the
  instruction on the first line and a newline after the question, so the answer (and the
  nudging model's first word) starts on a line of its own;
- the nudging model reads its chat template around the same instruction and question: the
  instruction in the system turn (Llama-2-chat, Llama-3-instruct) or, for templates without one
  (Gemma), on the first line of the user turn, as the reference writes it.

Departures: the chat side renders the model's own `chat_template` instead of the reference's
hand-written ones (Llama-2's ends `[/INST]` where the reference's ends `[/INST] `); OLMo-2
instruct models get a system turn unless `instruction_in="user"` (the reference puts the
instruction in the user turn there; `nudging_olmo` sets it); templates for sets the reference
does not run (MATH-500: `math_boxed`) ask for a boxed answer, for the verifier. The tiny world
keeps its own format (`ChatPrompt` with the `tiny` template, the one its models were trained on).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from nudgekit.data.problem import Problem
from nudgekit.errors import NudgekitError


@dataclass(frozen=True)
class NudgingTemplate:
    """What both models are told: `instruction`, then `question_prefix` + the question, then
    `answer_start` (the reference's `system`, `question` and `answer_start`)."""

    instruction: str
    question_prefix: str = "Question: "
    answer_start: str = ""


_REASONING = "Answer the question by walking through the reasoning steps."
_BOXED = "Please reason step by step, and put your final answer within \\boxed{}."

NUDGING_TEMPLATES: dict[str, NudgingTemplate] = {
    "reasoning": NudgingTemplate(_REASONING),  # the reference's GSM8K, SVAMP, MMLU, ... prompt
    "gsm8k": NudgingTemplate(_REASONING),
    "instruct": NudgingTemplate("You are a helpful assistant.", "Instruction: "),  # just-eval
    "math_boxed": NudgingTemplate(_BOXED),
}


class NudgingPrompt:
    """Callable `(problem) -> str`: one model's nudging prompt (see the module docstring).

    Args:
        model: the `ModelSpec` whose tokenizer renders the chat template (unused for the base).
        template: a name in `NUDGING_TEMPLATES` or a `NudgingTemplate`.
        chat: the nudging model's chat prompt (True) or the base model's plain text (False).
        instruction_in: "system": a system turn, or the user turn's first line when the chat
            template refuses a system turn (Gemma); "user": always the user turn's first line.
    """

    def __init__(
        self,
        model: Any = None,
        template: str | NudgingTemplate = "reasoning",
        chat: bool = True,
        instruction_in: str = "system",
    ) -> None:
        if isinstance(template, str):
            if template not in NUDGING_TEMPLATES:
                known = ", ".join(NUDGING_TEMPLATES)
                raise NudgekitError(f"unknown nudging template '{template}' (known: {known})")
            template = NUDGING_TEMPLATES[template]
        if instruction_in not in ("system", "user"):
            raise NudgekitError(f"instruction_in={instruction_in!r}: use 'system' or 'user'")
        if chat and model is None:
            raise NudgekitError("NudgingPrompt(chat=True) needs the model whose template it uses")
        self.model, self.template, self.chat = model, template, chat
        self.instruction_in = instruction_in

    @cached_property
    def tokenizer(self) -> Any:
        return self.model.load_tokenizer()

    def __call__(self, problem: Problem | str) -> str:
        t = self.template
        question = problem if isinstance(problem, str) else problem.question
        body = f"{t.question_prefix}{question}"
        if not self.chat:
            return f"{t.instruction}\n{body}\n{t.answer_start}"
        return render(self.tokenizer, t.instruction, body, self.instruction_in) + t.answer_start


def render(tokenizer: Any, instruction: str, body: str, instruction_in: str = "system") -> str:
    """The chat prompt for `body` with `instruction` in a system turn, or on the user turn's
    first line when asked or when the template refuses a system turn."""
    from jinja2 import TemplateError

    from nudgekit.models.chat import apply_chat_template

    folded = [{"role": "user", "content": f"{instruction}\n{body}"}]
    if instruction_in == "user":
        return apply_chat_template(tokenizer, folded)
    try:
        return apply_chat_template(
            tokenizer,
            [{"role": "system", "content": instruction}, {"role": "user", "content": body}],
        )
    except TemplateError:  # e.g. Gemma: "System role not supported"
        return apply_chat_template(tokenizer, folded)
