"""Test helpers for the nudging tests: random tiny LMs that write tiny-world-like text.

A random-init model with the tiny world's tokenizer ("char" or "bpe") whose output projection is
zero except for tokens made of lowercase letters, digits, spaces, newlines and colons (and the
end-of-turn token) writes word-like text with top-1 probabilities spread over (0, 1). With gamma
in the middle both models then write: a real mix of takeovers, rejected drafts, end-of-turns and
word boundaries, on tiny-world prompts, built in well under a second. (The zoo's `@test`
variants are near-uniform, so the base would never take over; the full zoo models take minutes
to build and are used by the slow tests.)
"""

from __future__ import annotations

import copy
import functools
import string
from pathlib import Path

import torch

from nudgekit.engines.hf import HFEngine
from nudgekit.models import load_model, load_tokenizer

ALLOWED = set(string.ascii_lowercase + string.digits + " \n:")


@functools.cache
def build_tokenizer(kind: str):
    """The zoo's "char" or "bpe" tokenizer, or "bpe-noregex": a BPE whose merges may cross
    spaces (no pre-tokenizer split), like tokenizers that treat text as one stream."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from nudgekit.zoo import data, tokenizers

    corpus = data.tokenizer_corpus(0, n=300)
    if kind != "bpe-noregex":
        return tokenizers.build_tokenizer(kind, corpus)
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=tokenizers.SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(corpus, trainer=trainer)
    return tokenizers.to_hf(raw)


def write_lm(
    path: Path, tokenizer: str, arch: str = "llama", seed: int = 0, space_boost: float = 1.5
) -> Path:
    """Write a random tiny LM with tokenizer `tokenizer` (see `build_tokenizer`) to `path`."""
    from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig, Qwen2Config

    from nudgekit.zoo.build import pin_no_unk

    tok = copy.deepcopy(build_tokenizer(tokenizer))
    config_cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    config = config_cls(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        initializer_range=0.2,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        head = model.lm_head.weight
        head.normal_(0.0, 0.6)
        for i in range(len(tok)):
            text = tok.decode([i])
            if i == tok.eos_token_id:
                head[i] *= 0.7
            elif not text or not set(text) <= ALLOWED:
                head[i] = 0.0
            elif text.startswith(" "):
                head[i] *= space_boost
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    model.save_pretrained(path)
    tok.save_pretrained(path)
    pin_no_unk(path)  # else a qwen2 dir's tokenizer grows an unk token (see nudgekit.zoo.build)
    return path


def engine(path: Path) -> HFEngine:
    return HFEngine(load_model(path), load_tokenizer(path))


def with_eos_bias(lm: HFEngine, bias: float, zero_weights: bool = False) -> HFEngine:
    """Give `lm`'s output layer a bias on its end-of-turn token (and, optionally, no weights:
    then EOS is the only likely token)."""
    old = lm.model.lm_head
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(torch.zeros_like(old.weight) if zero_weights else old.weight)
        head.bias.zero_()
        head.bias[lm.tokenizer.eos_token_id] = bias
    lm.model.lm_head = head
    return lm


def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """The test pair's model directories, written once per test session (shared by modules).

    base: BPE Llama; small: character-tokenizer Qwen2 (the cross-tokenizer pair); large: BPE
    Llama (the same-tokenizer pair; a qwen2 directory would load the same vocabulary with
    Qwen2's own pre-tokenizer, which splits digits differently).
    """
    root = tmp_path_factory.getbasetemp() / "nudging_lms"
    specs = {
        "base": ("bpe", "llama", 1, 1.5),
        "small": ("char", "qwen2", 2, 3.0),
        "large": ("bpe", "llama", 3, 1.5),
    }
    dirs = {}
    for name, (tok, arch, seed, boost) in specs.items():
        path = root / name
        if not (path / "config.json").exists():
            write_lm(path, tok, arch, seed=seed, space_boost=boost)
        dirs[name] = path
    return dirs
