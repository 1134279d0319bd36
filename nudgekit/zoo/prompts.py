"""Prompt and target formats shared by zoo training, the tiny-world check, NuRL and nudging.

Chat models (the policy, the aligned models) see the tokenizer's chat template around one user
message; a hinted prompt appends ``\\nHint: <hint>`` to the question. The base model sees plain
text, ``Question: <q>\\nAnswer:``. The hint-writing skill is two chat turns: question + answer ->
explanation, then question + answer + explanation -> abstract hint.
"""

from __future__ import annotations

from typing import Any

from nudgekit.zoo.tasks import Chain

HINT_MARK = "\nHint: "
EXPLAIN_TAG = "Explain:"
CUE_TAG = "Abstract hint:"


def user_message(question: str, hint: str | None = None) -> str:
    """The user turn for solving: the question, with ``\\nHint: <hint>`` when hinted."""
    return question if not hint else f"{question}{HINT_MARK}{hint}"


def explain_message(question: str, answer: str) -> str:
    """The user turn asking for an explanation of how `question` reaches `answer`."""
    return f"{question}\nAnswer: {answer}\n{EXPLAIN_TAG}"


def cue_message(question: str, answer: str, explanation: str) -> str:
    """The user turn asking for an abstract hint, given question, answer and explanation."""
    return f"{question}\nAnswer: {answer}\nExplanation:\n{explanation}\n{CUE_TAG}"


def render_chat(tokenizer: Any, user: str) -> str:
    """Render one user turn with the tokenizer's chat template, ready for the reply."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )


def chat_prompt(tokenizer: Any, question: str, hint: str | None = None) -> str:
    """The chat-formatted solving prompt (optionally hinted) for a chat model."""
    return render_chat(tokenizer, user_message(question, hint))


def explain_prompt(tokenizer: Any, question: str, answer: str) -> str:
    """Hint-writing step 1: question + gold answer -> explanation."""
    return render_chat(tokenizer, explain_message(question, answer))


def cue_prompt(tokenizer: Any, question: str, answer: str, explanation: str) -> str:
    """Hint-writing step 2: question + answer + explanation -> abstract hint."""
    return render_chat(tokenizer, cue_message(question, answer, explanation))


def base_prompt(question: str) -> str:
    """The plain prompt for a base (non-chat) model."""
    return f"Question: {question}\nAnswer:"


def chat_target(chain: Chain, *, use_cue: bool = False) -> str:
    """What an aligned model writes: steps, then the strict ``Answer: <n>`` line."""
    from nudgekit.zoo.tasks import solution_steps

    return f"{solution_steps(chain, use_cue=use_cue)}\nAnswer: {chain.answer}"


# Raw, unformatted endings a "web" corpus would use; the base model learns all of them, so it is
# uncertain exactly at the stylistic tokens and rarely ends in the strict format.
RAW_ENDINGS = (
    "So the result is {a}.",
    "The final value is {a}.",
    "That leaves {a}.",
    "Answer: {a}",
)


def raw_solution(chain: Chain, style: int) -> str:
    """Raw solution text (base-model corpus): the same plan line and steps an aligned model
    writes, then one of several endings (alignment changes only the ending and the stop)."""
    from nudgekit.zoo.tasks import solution_steps

    return (
        solution_steps(chain) + "\n" + RAW_ENDINGS[style % len(RAW_ENDINGS)].format(a=chain.answer)
    )


def raw_document(chain: Chain, style: int, tokenizer: Any = None) -> str:
    """One base-corpus document, wrapped by ``style % 3``: bare question; ``Question: ...
    Answer:``; or (with a `tokenizer`) a scraped chat transcript: the chat template's user turn,
    then the raw solution with no strict answer line guarantee and no end-of-turn token.
    Without a tokenizer the third wrapper falls back to the second."""
    body = raw_solution(chain, style)
    wrapper = style % 3
    if wrapper == 0:
        return f"{chain.question}\n{body}"
    if wrapper == 2 and tokenizer is not None:
        return chat_prompt(tokenizer, chain.question) + body
    return f"{base_prompt(chain.question)} {body}"
