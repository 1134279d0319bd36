"""Tiny random-init checkpoints: a real HF checkpoint on disk in well under a second.

Used by the tests and by the GPU smoke script (`experiments/gpu/smoke.py`), whose vLLM checks
fall back to a random Qwen2 on a machine where no zoo model is built.

`build_tiny_model` trains a small byte-level BPE tokenizer with `tokenizers` on a few sentences
(every byte is in the alphabet, so any text round-trips), wraps it as a
`PreTrainedTokenizerFast` with `<|endoftext|>` as EOS, optionally a ChatML-style chat template,
and saves it next to a randomly initialised model written as safetensors. The checkpoint is
loaded through the same code path as any real model.

Architectures: Qwen2 and Llama (full attention, what `inference.lean` runs), and the ones whose
specifics the lean forward does not express, for the code paths that must fall back to the
`transformers` forward: Gemma-2 (alternating sliding-window / full layers, attention and final
logit soft-capping, scaled embeddings, query pre-attention scaling), Gemma-3 text
(`Gemma3ForCausalLM`: sliding-window layers with their own rotary base, QK norm) and OLMo-2 (QK
norm, norms after attention and MLP). The Gemma tokenizers add `<bos>` to every encoded text (a
`TemplateProcessing` post-processor, as real Gemma's `tokenizer.json` has); the others add nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch

EOS = "<|endoftext|>"
BOS = "<bos>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Question: what is 12 + 30? Answer: 42.",
    "Let us think step by step. First add the tens, then the ones.",
    "The answer is 7. The answer is 13. The answer is 100.",
    "Hello world! Hello there, general. Goodbye world.",
    "def add(a, b):\n    return a + b\n",
]


def build_tiny_tokenizer(
    vocab_size: int = 320, chat_template: bool = True, pad_token: bool = False, bos: bool = False
):
    """A byte-level BPE `PreTrainedTokenizerFast` trained on a fixed corpus (deterministic).

    Args:
        vocab_size: 256 bytes + specials + merges.
        chat_template: attach the ChatML-style template (False exercises the plain fallback).
        pad_token: set `<|endoftext|>` as pad token (False exercises the loader's fix-up).
        bos: add a `<bos>` token that the tokenizer puts before every text it encodes with
            special tokens (a `TemplateProcessing` post-processor, as Gemma's tokenizer has).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, IM_START, IM_END] + ([BOS] if bos else []),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    if bos:
        bos_id = tok.token_to_id(BOS)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        bos_token=BOS if bos else None,
        pad_token=EOS if pad_token else None,
        additional_special_tokens=[IM_START, IM_END],
    )
    if chat_template:
        fast.chat_template = CHATML_TEMPLATE
    return fast


ARCHS = ("qwen2", "llama", "gemma2", "gemma3", "olmo2")
BOS_ARCHS = ("gemma2", "gemma3")  # their tokenizers add <bos>, as Gemma's do


def build_tiny_model(
    path: str | Path,
    arch: str = "qwen2",
    vocab_size: int = 320,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    chat_template: bool = True,
    seed: int = 0,
    init_std: float = 0.2,
    lm_head_std: float = 1.0,
    sliding_window: int = 8,
) -> Path:
    """Write a random-init causal LM and its tokenizer to `path` (safetensors) and return it.

    Args:
        path: output directory (created).
        arch: one of `ARCHS` ("qwen2", "llama", "gemma2", "gemma3" text-only, "olmo2").
        vocab_size: tokenizer vocabulary size (the model's embedding matches it).
        hidden_size: model width (32-64 keeps tests fast).
        num_layers: decoder layers (Gemma: sliding-window and full layers alternate, first
            sliding).
        num_heads: attention heads.
        num_kv_heads: key/value heads (grouped-query attention when < num_heads).
        chat_template: give the tokenizer a chat template.
        seed: torch seed for the weights.
        init_std: weight init std; larger than HF's 0.02 so next-token distributions are peaked
            (a near-uniform random model makes greedy decoding hinge on float noise).
        lm_head_std: output-projection init std; ~1 gives logits with std ~sqrt(hidden), so
            the top token usually holds a clear share of the mass.
        sliding_window: (Gemma) tokens a sliding-window layer sees; small, so that test prompts
            outgrow it.
    """
    from transformers import AutoModelForCausalLM, GenerationConfig

    if arch not in ARCHS:
        raise ValueError(f"arch {arch!r}: use one of {sorted(ARCHS)}")
    path = Path(path)
    bos = arch in BOS_ARCHS
    tok = build_tiny_tokenizer(vocab_size, chat_template=chat_template, bos=bos)
    eos_id = tok.convert_tokens_to_ids(EOS)
    bos_id = tok.convert_tokens_to_ids(BOS) if bos else eos_id
    config = _config(arch, hidden_size, num_layers, sliding_window)(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=512,
        initializer_range=init_std,
        eos_token_id=eos_id,
        bos_token_id=bos_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, lm_head_std)
    model.generation_config = GenerationConfig(
        eos_token_id=eos_id, pad_token_id=eos_id, bos_token_id=bos_id
    )
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _config(arch: str, hidden_size: int, num_layers: int, sliding_window: int):
    """The config class of `arch`, with the architecture's own settings bound."""
    import functools

    import transformers

    if arch in ("qwen2", "llama", "olmo2"):
        name = {"qwen2": "Qwen2Config", "llama": "LlamaConfig", "olmo2": "Olmo2Config"}[arch]
        return getattr(transformers, name)
    layer_types = [("sliding_attention", "full_attention")[i % 2] for i in range(num_layers)]
    cls = transformers.Gemma2Config if arch == "gemma2" else transformers.Gemma3TextConfig
    # query_pre_attn_scalar != head_dim: Gemma's query scaling differs from 1/sqrt(head_dim)
    return functools.partial(
        cls, head_dim=16, query_pre_attn_scalar=24, sliding_window=sliding_window,
        layer_types=layer_types,
    )  # fmt: skip
