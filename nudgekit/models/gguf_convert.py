"""Convert one GGUF file into an ordinary safetensors HF directory, and check the round trip.

transformers reads a GGUF (`from_pretrained(dir, gguf_file=...)`, with the `gguf` package) and
dequantises it to float32 on load. `convert_gguf` copies that state into a fresh model of the
same class (so the saved `config.json` carries no GGUF quantisation record), saves it with the
tokenizer (its chat template included) and the generation config, then reloads the directory
and checks that it is the same model: the reloaded logits on a short prompt equal the
GGUF-loaded model's, and the reloaded tokenizer encodes, decodes and renders chat prompts as the
GGUF tokenizer does. The weights stay float32: Q4/Q5/Q6 blocks dequantise to values a bf16
checkpoint cannot hold exactly.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from nudgekit.errors import NudgekitError

# what the round trip encodes: prose, digits, spacing, accents and a multi-byte script
PROBE_TEXTS = (
    "Question: Natalia sold clips to 48 of her friends in April. How many clips?\nAnswer:",
    " naïve café: 12×3 = 36, ½ off — 你好!",
    "\n\n  indented\ttab  ",
    "",
)
PROBE_CHAT = [
    {"role": "system", "content": "Answer the question by walking through the reasoning steps."},
    {"role": "user", "content": "Question: What is 12 times 3?"},
]
_GENERAL = ("name", "type", "finetune", "basename", "size_label", "organization", "architecture")


def gguf_metadata(path: str | Path) -> dict[str, Any]:
    """What the GGUF file says it is: `general.*` keys, quantisation, chat template, BOS."""
    reader = _reader(path)
    fields = reader.fields

    def get(key: str) -> Any:
        return fields[key].contents() if key in fields else None

    import gguf

    file_type = get("general.file_type")
    meta = {k: get(f"general.{k}") for k in _GENERAL}
    meta.update(
        file_type=gguf.LlamaFileType(file_type).name if file_type is not None else None,
        chat_template=get("tokenizer.chat_template"),
        add_bos_token=get("tokenizer.ggml.add_bos_token"),
        tensors=len(reader.tensors),
    )
    return meta


def _reader(path: str | Path) -> Any:
    try:
        from gguf import GGUFReader
    except ImportError:
        raise NudgekitError(
            "reading GGUF weights needs the gguf package (pip install gguf)"
        ) from None
    return GGUFReader(str(path))


def load_gguf(path: str | Path) -> tuple[Any, Any]:
    """`(model, tokenizer)` as transformers loads the GGUF file (float32, eval mode)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    _reader(path)  # the gguf package must be there (one-line error otherwise)
    kwargs = {"gguf_file": path.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise NudgekitError(f"GGUF {path.name}: transformers cannot load it ({first})") from None
    return model.eval(), tokenizer


def fresh_copy(model: Any, name: str) -> Any:
    """A new model of the same class and config (no GGUF quantisation record) with its state."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = name
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(model.state_dict(), strict=True)
    fresh.generation_config = copy.deepcopy(model.generation_config)
    return fresh.eval()


def convert_gguf(path: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write the GGUF file at `path` as a safetensors HF directory `out_dir` and check it.

    Args:
        path: a `.gguf` file transformers can read.
        out_dir: the directory to create (model, tokenizer, chat template, generation config).

    Returns:
        `{"gguf": metadata, "round_trip": checks, "parameters": n, "model_type": ...}`.

    Raises:
        NudgekitError: transformers cannot read the file, or the saved directory is not the
            same model or tokenizer.
    """
    path, out_dir = Path(path), Path(out_dir)
    meta = gguf_metadata(path)
    source, tokenizer = load_gguf(path)
    fresh = fresh_copy(source, meta["name"] or path.stem)
    out_dir.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    del fresh
    checks = check_round_trip(source, tokenizer, out_dir)
    return {
        "gguf": meta,
        "round_trip": checks,
        "model_type": source.config.model_type,
        "architecture": type(source).__name__,
        "parameters": sum(p.numel() for p in source.parameters()),
        "transformers": _version("transformers"),
        "gguf_package": _version("gguf"),
    }


def check_round_trip(source: Any, tokenizer: Any, out_dir: str | Path) -> dict[str, Any]:
    """Reload `out_dir` and compare it with the GGUF-loaded model and tokenizer.

    Returns:
        `{"max_abs_logit_diff": float, "prompt_tokens": int, "tokenizer_probes": int}`.

    Raises:
        NudgekitError: logits differ by more than 1e-5, or any tokenizer probe differs.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded_tok = AutoTokenizer.from_pretrained(out_dir)
    probes = _tokenizer_mismatches(tokenizer, reloaded_tok)
    if probes["mismatches"]:
        raise NudgekitError(
            f"GGUF conversion: tokenizer differs after saving ({probes['mismatches'][0]})"
        )
    reloaded = AutoModelForCausalLM.from_pretrained(
        out_dir, dtype=torch.float32, use_safetensors=True
    ).eval()
    ids = tokenizer(PROBE_TEXTS[0], return_tensors="pt").input_ids  # [1, T]
    with torch.no_grad():
        diff = (source(ids).logits - reloaded(ids).logits).abs().max().item()
    if not diff <= 1e-5:
        raise NudgekitError(f"GGUF conversion: reloaded logits differ by {diff:.3g} (> 1e-5)")
    return {
        "max_abs_logit_diff": diff,
        "prompt_tokens": ids.shape[1],
        "tokenizer_probes": probes["n"],
    }


def _tokenizer_mismatches(a: Any, b: Any) -> dict[str, Any]:
    """Encode (with and without special tokens), decode and chat-render with both tokenizers."""
    cases: list[tuple[str, Any, Any]] = []
    for text in PROBE_TEXTS:
        for special in (True, False):
            ids_a = a(text, add_special_tokens=special).input_ids
            ids_b = b(text, add_special_tokens=special).input_ids
            cases.append((f"encode {text[:12]!r} special={special}", ids_a, ids_b))
            cases.append((f"decode {text[:12]!r}", a.decode(ids_a), b.decode(ids_a)))
    cases.append(("special tokens", a.special_tokens_map, b.special_tokens_map))
    cases.append(("chat template", a.chat_template, b.chat_template))
    if a.chat_template:
        cases.append(("chat prompt", _chat(a), _chat(b)))
    return {"n": len(cases), "mismatches": [what for what, x, y in cases if x != y]}


def _chat(tokenizer: Any) -> str:
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(PROBE_CHAT, tokenize=False, add_generation_prompt=True)
    except TemplateError:  # templates without a system turn (Gemma)
        return tokenizer.apply_chat_template(
            PROBE_CHAT[1:], tokenize=False, add_generation_prompt=True
        )


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
