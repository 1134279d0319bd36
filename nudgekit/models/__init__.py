"""Model loading: causal LMs and tokenizers from hub ids, local HF directories, the zoo (`zoo:`)
or GGUF weights shipped in pip packages (`pkg:`)."""

from nudgekit.models.chat import apply_chat_template, plain_chat_template
from nudgekit.models.loading import (
    check_device,
    load_model,
    load_tokenizer,
    parse_dtype,
    resolve_model_path,
)
from nudgekit.models.prompting import ChatPrompt
from nudgekit.models.spec import ModelSpec

__all__ = [
    "ChatPrompt",
    "ModelSpec",
    "apply_chat_template",
    "check_device",
    "load_model",
    "load_tokenizer",
    "parse_dtype",
    "plain_chat_template",
    "resolve_model_path",
]
