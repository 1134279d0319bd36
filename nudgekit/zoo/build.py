"""Build one zoo model into a directory: tokenizer, transformers config, SFT, save_pretrained."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from nudgekit.errors import NudgekitError
from nudgekit.zoo import data
from nudgekit.zoo.registry import ZooSpec, full_name, is_built, model_dir, parse_name
from nudgekit.zoo.tokenizers import build_tokenizer
from nudgekit.zoo.train import sft, weight_hash

ARCHS = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}


def new_model(spec: ZooSpec, tok: Any) -> torch.nn.Module:
    """A freshly initialised model of `spec` (seeded) sized for `tok`."""
    if spec.arch not in ARCHS:
        raise NudgekitError(f"zoo: arch={spec.arch!r} is not one of {list(ARCHS)}")
    config_cls, model_cls = ARCHS[spec.arch]
    config = config_cls(
        vocab_size=len(tok),
        hidden_size=spec.hidden,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        intermediate_size=spec.ffn,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(spec.seed)
    return model_cls(config)


def _start(name: str, spec: ZooSpec) -> tuple[torch.nn.Module, Any]:
    """The model and tokenizer SFT starts from: a parent zoo model, or a fresh init."""
    if spec.init_from:
        parent_name = full_name(spec.init_from, parse_name(name)[1])
        if not is_built(parent_name):  # `nudgekit.zoo.resolve` builds parents first
            raise NudgekitError(f"zoo: {name} continues from {parent_name}, which is not built")
        parent = model_dir(parent_name)
        tok = AutoTokenizer.from_pretrained(parent)
        return AutoModelForCausalLM.from_pretrained(parent), tok
    corpus = data.tokenizer_corpus(spec.seed, n=min(3000, 4 * spec.n_examples))
    tok = build_tokenizer(spec.tokenizer, corpus)
    return new_model(spec, tok), tok


def pin_no_unk(out: Path) -> None:
    """Record ``unk_token: null``: otherwise AutoTokenizer on a qwen2 dir picks Qwen2Tokenizer,
    whose default unk ``<|endoftext|>`` is added as a new token beyond the model's vocabulary."""
    path = Path(out) / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["unk_token"] = None
    path.write_text(json.dumps(config, indent=2))


def build_into(name: str, spec: ZooSpec, out: Path, *, progress: bool = True) -> dict:
    """Train zoo model `name` per `spec` and save model + tokenizer into `out`.

    Returns:
        The build record: spec, parameter count, weight hash, training losses summary.
    """
    threads = torch.get_num_threads()
    # One thread: float reductions then split the same way on every machine, so the same seed
    # gives bit-identical weights anywhere (and on a shared box one thread is also faster).
    torch.set_num_threads(1)
    try:
        return _build(name, spec, out, progress=progress)
    finally:
        torch.set_num_threads(threads)


def _build(name: str, spec: ZooSpec, out: Path, *, progress: bool) -> dict:
    cpu0 = time.process_time()
    model, tok = _start(name, spec)
    examples = data.examples(spec.role, tok, spec.n_examples, spec.seed)
    losses = sft(
        model,
        tok,
        examples,
        steps=spec.steps,
        batch_size=spec.batch_size,
        lr=spec.lr,
        seed=spec.seed,
        max_len=spec.max_len,
        desc=f"zoo: building {name}",
        progress=progress,
    )
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    pin_no_unk(out)
    tail = losses[-20:] or [float("nan")]
    return {
        "spec": spec.__dict__,
        "arch": spec.arch,
        "tokenizer": spec.tokenizer,
        "n_params": sum(p.numel() for p in model.parameters()),
        "weight_hash": weight_hash(model),
        "first_loss": losses[0] if losses else None,
        "final_loss": statistics.fmean(tail),
        "train_loss_curve": [round(x, 4) for x in losses[:: max(1, len(losses) // 20)]],
        "cpu_seconds": time.process_time() - cpu0,
    }
