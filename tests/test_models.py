"""Model/tokenizer loading, fast failures and chat templates on tiny local checkpoints."""

from __future__ import annotations

import shutil
import time

import pytest
import torch

from nudgekit.errors import NudgekitError
from nudgekit.models import (
    ModelSpec,
    apply_chat_template,
    load_model,
    load_tokenizer,
    parse_dtype,
    resolve_model_path,
)

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+2?"},
]


def test_load_local_dir(tiny_qwen_dir):
    model = load_model(tiny_qwen_dir)
    tok = load_tokenizer(tiny_qwen_dir)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32
    # the tiny tokenizer is saved without a pad token: the loader falls back to EOS, pads left
    assert tok.pad_token == tok.eos_token == "<|endoftext|>"
    assert tok.padding_side == "left"
    assert model.get_input_embeddings().num_embeddings == len(tok)


def test_model_spec_loads_with_dtype(tiny_llama_dir):
    spec = ModelSpec(str(tiny_llama_dir), dtype="bf16")
    model = spec.load_model()
    assert type(model).__name__ == "LlamaForCausalLM"
    assert next(model.parameters()).dtype == torch.bfloat16
    assert spec.load_tokenizer().pad_token_id is not None


def test_zoo_prefix_resolves_through_zoo(tiny_qwen_dir, monkeypatch):
    zoo = pytest.importorskip("nudgekit.zoo")
    seen = []
    monkeypatch.setattr(
        zoo, "resolve", lambda name: seen.append(name) or tiny_qwen_dir, raising=False
    )
    assert resolve_model_path("zoo:arith-small") == str(tiny_qwen_dir)
    assert seen == ["arith-small"]


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("./no/such/model/dir", "no such local directory"),
        ("/definitely/missing/model", "no such local directory"),
        ("not//a/hub/id", "no such local directory"),
    ],
)
def test_bad_local_path_is_one_line_error(name, fragment):
    with pytest.raises(NudgekitError) as err:
        load_model(name)
    assert fragment in str(err.value) and name in str(err.value)
    assert "\n" not in str(err.value)


def test_dir_without_config_is_rejected(tmp_path):
    with pytest.raises(NudgekitError, match="no config.json"):
        load_tokenizer(tmp_path)


def test_unknown_hub_id_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(NudgekitError, match="offline") as err:
        load_model("nudgekit-test/no-such-model-9f3a1c")
    assert time.monotonic() - start < 3.0
    assert "\n" not in str(err.value)


def test_unknown_hub_id_online_fails_fast(monkeypatch):
    # Without offline mode the loader probes the hub once with a short timeout: no network
    # -> "not reachable"; network but no such repo -> "not found". Either way, fast and one line.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.monotonic()
    with pytest.raises(NudgekitError, match="not reachable|not found") as err:
        load_tokenizer("nudgekit-test/no-such-model-9f3a1c")
    assert time.monotonic() - start < 12.0
    assert "\n" not in str(err.value)


def test_pytorch_bin_only_checkpoint_is_refused(tiny_qwen_dir, tmp_path):
    # weights must come from safetensors; a pickle-only checkpoint is a user-facing error
    model = load_model(tiny_qwen_dir)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_qwen_dir / name, tmp_path / name)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(NudgekitError, match="safetensors") as err:
        load_model(tmp_path)
    assert "\n" not in str(err.value)


def test_bad_dtype_and_device():
    assert parse_dtype("bf16") is torch.bfloat16
    with pytest.raises(NudgekitError, match="dtype 'float8'"):
        parse_dtype("float8")
    if not torch.cuda.is_available():
        with pytest.raises(NudgekitError, match="CUDA is not available"):
            load_model("/whatever", device="cuda")


def test_chat_template_own(tiny_qwen_dir):
    tok = load_tokenizer(tiny_qwen_dir)
    text = apply_chat_template(tok, MESSAGES)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert not apply_chat_template(tok, MESSAGES, add_generation_prompt=False).endswith(
        "assistant\n"
    )


def test_chat_template_fallback(tiny_llama_dir):
    tok = load_tokenizer(tiny_llama_dir)
    assert not tok.chat_template
    assert apply_chat_template(tok, MESSAGES) == "System: Be brief.\nUser: What is 2+2?\nAssistant:"
    assert (
        apply_chat_template(tok, MESSAGES[1:], add_generation_prompt=False) == "User: What is 2+2?"
    )


def test_chat_template_bad_messages(tiny_llama_dir):
    tok = load_tokenizer(tiny_llama_dir)
    with pytest.raises(NudgekitError, match="chat message 1: role 'robot'"):
        apply_chat_template(tok, [MESSAGES[0], {"role": "robot", "content": "x"}])
    with pytest.raises(NudgekitError, match="chat message 0: needs 'role' and 'content'"):
        apply_chat_template(tok, [{"text": "hi"}])
