"""Two different tiny-world tokenizers, built with `tokenizers` and saved as HF fast tokenizers.

- ``char``: byte-level, no merges: one token per character (the policy, the small aligned model).
- ``bpe``: byte-level BPE trained on the tiny-world corpus (the large base / aligned models).

Both decode back to the exact input text, share the same special tokens and the same chat
template, and differ in how they cut text, so nudging across them exercises re-tokenisation.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from nudgekit.errors import NudgekitError

SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
KINDS = ("char", "bpe")


def _byte_level(tok: Tokenizer) -> Tokenizer:
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def char_tokenizer() -> Tokenizer:
    """A byte-level tokenizer without merges: every character is a token."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    tok = _byte_level(Tokenizer(models.BPE(vocab=vocab, merges=[])))
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok


def bpe_tokenizer(corpus: Iterable[str], vocab_size: int = 384) -> Tokenizer:
    """A byte-level BPE tokenizer trained on `corpus` (deterministic for a fixed corpus)."""
    tok = _byte_level(Tokenizer(models.BPE()))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return tok


def to_hf(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap a `tokenizers.Tokenizer` as an HF fast tokenizer with the tiny chat template."""
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        eos_token="<|end|>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"],
        clean_up_tokenization_spaces=False,
    )
    hf.chat_template = CHAT_TEMPLATE
    hf.padding_side = "left"  # generation pads on the left
    return hf


def build_tokenizer(kind: str, corpus: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """Build the tokenizer named `kind` ("char" or "bpe"; bpe trains on `corpus`)."""
    if kind == "char":
        return to_hf(char_tokenizer())
    if kind == "bpe":
        return to_hf(bpe_tokenizer(corpus))
    raise NudgekitError(f"zoo tokenizer kind={kind!r} is not one of {list(KINDS)}")
