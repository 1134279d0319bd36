"""`ChatPrompt`: render a `Problem` (plus an optional hint) into prompt text for one model.

It joins a `PromptTemplate` (what to say) with the model's tokenizer (how its chat template wraps
it). Pipelines take it as a `prompt` component, so the same pipeline serves chat models
(`chat=true`) and base models (`chat=false`: the template's plain `Question: ...\\nAnswer:` form).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from nudgekit.data.problem import Problem
from nudgekit.data.prompts import PromptTemplate, get_template
from nudgekit.models.chat import apply_chat_template
from nudgekit.models.spec import ModelSpec


class ChatPrompt:
    """Callable `(problem, hint=None) -> str`.

    Args:
        model: the model whose tokenizer (and chat template) renders the prompt.
        template: a template name from `nudgekit.data.TEMPLATES` or a `PromptTemplate`.
        chat: use the chat template (True) or the plain base-model form (False).
    """

    def __init__(
        self, model: ModelSpec, template: str | PromptTemplate = "plain", chat: bool = True
    ):
        self.model = model
        self.template = get_template(template) if isinstance(template, str) else template
        self.chat = chat

    @cached_property
    def tokenizer(self) -> Any:
        return self.model.load_tokenizer()

    def __call__(self, problem: Problem | str, hint: str | None = None) -> str:
        if not self.chat:
            return self.template.plain(problem, hint)
        return apply_chat_template(self.tokenizer, self.template.messages(problem, hint))
