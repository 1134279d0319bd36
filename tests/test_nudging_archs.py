"""Nudging on architectures the lean forward does not run, and the text/prompt glue around them.

Random tiny Gemma-2, Gemma-3 (text) and OLMo-2 bases (`models.random_init`: sliding windows of 8
tokens, so every prompt outgrows them; Gemma tokenizers add `<bos>` as real Gemma's do) next to
a tiny Llama nudger with a chat template:

- the cached decoder writes exactly the chunked reference's texts, at batch > 1 and batch 1;
- its per-row KV cache gives the logits of plain full `model(...)` forwards, through rollbacks;
- every prompt starts with the BOS its tokenizer asks for, once;
- pieces never carry a replacement character for a half-decoded character;
- the prompts are built as the reference implementation builds them.
"""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import torch

from nudgekit.engines.base import GenerationRequest
from nudgekit.engines.hf import HFEngine
from nudgekit.errors import NudgekitError
from nudgekit.inference import LeanForward, SyncRequest, row_cache
from nudgekit.models import ModelSpec, load_model, load_tokenizer
from nudgekit.models.random_init import build_tiny_model, build_tiny_tokenizer
from nudgekit.nudging import CachedNudgingDecoder, ChunkedNudgingDecoder, NudgingPrompt
from nudgekit.nudging.sides import Side
from nudgekit.nudging.text import PieceStream, encode, pieces, prompt_ids
from nudgekit.zoo import chat_prompt, tiny_problems

pytestmark = pytest.mark.usefixtures("one_thread")

ARCHS = ["gemma2", "gemma3", "olmo2"]
WINDOW = 8
ALLOWED = set(string.ascii_lowercase + string.digits + " \n:")
INSTRUCTION = "Answer the question by walking through the reasoning steps."


def shaped(path, space_boost: float = 1.5) -> HFEngine:
    """An engine over `path` whose output layer only writes word-like tokens (lowercase letters,
    digits, spaces, newlines, colons, EOS), so both models write and gamma splits them."""
    model, tok = load_model(path), load_tokenizer(path)
    with torch.no_grad():
        head = model.lm_head.weight
        for i in range(len(tok)):
            text = tok.decode([i])
            if i == tok.eos_token_id:
                head[i] *= 0.5
            elif not text or not set(text) <= ALLOWED:
                head[i] = 0.0
            elif text.startswith(" "):
                head[i] *= space_boost
    return HFEngine(model, tok)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("arch_lms")
    out = {a: build_tiny_model(root / a, arch=a, seed=7, sliding_window=WINDOW) for a in ARCHS}
    out["nudger"] = build_tiny_model(root / "nudger", arch="llama", seed=3)
    return out


@pytest.fixture(scope="module")
def lms(dirs) -> dict[str, HFEngine]:
    return {name: shaped(path, 3.0 if name == "nudger" else 1.5) for name, path in dirs.items()}


def prompts(nudger: HFEngine, n: int) -> tuple[list[str], list[str]]:
    """The reference's prompts (`NudgingPrompt`'s, checked below) for tiny-world questions."""
    questions = [p.question for p in tiny_problems("test", n=n)]
    base = [f"{INSTRUCTION}\nQuestion: {q}\n" for q in questions]
    return base, [chat_prompt(nudger.tokenizer, f"{INSTRUCTION}\nQuestion: {q}") for q in questions]


# ---------------------------------------------------------------- the decoder, per architecture


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_decoder_equals_chunked_reference(lms, arch):
    base, nudger = lms[arch], lms["nudger"]
    assert not LeanForward.supports(base.model)  # these run through their own forward
    pb, pn = prompts(nudger, 6)
    assert min(len(encode(base.tokenizer, p)) for p in pb) > 2 * WINDOW
    kw = dict(gamma=0.6, chunk_tokens=6, max_new_tokens=32)
    ref = ChunkedNudgingDecoder(base, nudger, **kw).decode(pb, pn)
    # its lazy base calls (the default) decide as whole K-token calls do
    assert ChunkedNudgingDecoder(base, nudger, lazy=False, **kw).decode(pb, pn) == ref
    for batch in (3, 1):
        cached = CachedNudgingDecoder(base, nudger, batch_size=batch, **kw).decode(pb, pn)
        assert [o.text for o in cached] == [o.text for o in ref], batch
        assert [o.spans for o in cached] == [o.spans for o in ref], batch
    # both models wrote, over several rounds each: drafts, takeovers and base completions
    nudged = sum(o.nudge_tokens for o in ref)
    assert 0.1 < nudged / sum(o.nudge_tokens + o.base_tokens for o in ref) < 0.9
    assert sum(o.rounds for o in ref) >= 3 * len(ref)


def fresh_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0, -1]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("batch", [1, 2])
def test_row_cache_gives_plain_forward_logits(lms, arch, batch):
    """Rows grow past the window, roll back into it and branch; every logit the cache returns
    equals a fresh full forward of the row's ids (the model's own masks and soft-capping)."""
    lm = lms[arch]
    model, tok = lm.model, lm.tokenizer
    cache = row_cache(model, batch=batch, pad_id=tok.pad_token_id)
    a = prompt_ids(tok, "Question: Start 3: inc dbl neg\nAnswer:")
    grown = prompt_ids(tok, "Question: Start 3: inc dbl neg\nAnswer: inc 4\ndbl 8\nSo the result")
    branch = prompt_ids(tok, "Question: Start 3: inc dbl neg\nAnswer: inc 4\nThat leaves 8.")
    other = prompt_ids(tok, "Question: Start 7: neg neg inc\nAnswer: do neg and then")
    steps = [[SyncRequest(0, a)], [SyncRequest(0, grown, wanted=[len(a) + 2, len(a) + 9])],
             [SyncRequest(0, branch)], [SyncRequest(0, branch[:5])], [SyncRequest(0, grown)]]  # fmt: skip
    if batch == 2:
        steps[0].append(SyncRequest(1, other))
        steps[2].append(SyncRequest(1, other + branch[-3:]))
    checked = 0
    for step in steps:
        for req, got in zip(step, cache.sync(step)):
            for length, logits in got.items():
                want = fresh_logits(model, req.target[:length])
                assert torch.allclose(logits, want, atol=1e-4), (arch, length)
                checked += 1
    assert checked >= 7 and len(grown) > 2 * WINDOW


def test_what_the_cache_cannot_mask_is_refused(lms):
    """Attention the ready masks cannot express fails at once instead of decoding wrongly."""
    config = lms["gemma3"].model.config
    impl = config._attn_implementation
    try:
        config.use_bidirectional_attention = True
        with pytest.raises(NudgekitError, match="bidirectional"):
            row_cache(lms["gemma3"].model, batch=2, pad_id=0)
        config.use_bidirectional_attention = False
        config._attn_implementation = "flash_attention_2"
        with pytest.raises(NudgekitError, match="sdpa"):
            row_cache(lms["gemma3"].model, batch=2, pad_id=0)
    finally:
        config.use_bidirectional_attention = False
        config._attn_implementation = impl


# ---------------------------------------------------------------- BOS


def test_bos_once_where_the_tokenizer_asks(lms):
    gemma, olmo = lms["gemma2"].tokenizer, lms["olmo2"].tokenizer
    bos = gemma.bos_token_id
    text = "Question: what is 12 + 30?\n"
    assert gemma(text).input_ids[0] == bos  # the tokenizer asks for it
    assert prompt_ids(gemma, text) == gemma(text).input_ids
    assert prompt_ids(gemma, "<bos>" + text) == gemma(text).input_ids  # a template put it: once
    assert prompt_ids(olmo, text) == encode(olmo, text)  # a tokenizer without BOS: none
    # the decoder's rows, and the engine's text prompts
    side = Side(lms["gemma2"], 1, 0.0, 1.0, 0)
    side.start(0, text, 0)
    ids = side.encode(0, " The answer is 42.")
    assert ids[0] == bos and ids.count(bos) == 1
    for name, want in (("gemma2", 1), ("gemma3", 1), ("olmo2", 0), ("nudger", 0)):
        engine = lms[name]
        request = GenerationRequest(prompt=text, max_new_tokens=1)
        got = engine.generate([request])[0].prompt_ids
        first = engine.tokenizer.bos_token_id
        assert (got.count(first) if first is not None else 0) == want, name
        assert (got[0] == first) == bool(want), name


# ---------------------------------------------------------------- pieces


def test_pieces_hold_back_half_decoded_characters():
    """Byte-level BPE splits "ï" (2 bytes), CJK (3) and emoji (4) over several tokens; a piece
    never carries U+FFFD for a character whose bytes have not all arrived."""
    tok = build_tiny_tokenizer()
    text = "The naïve answer is 日本 🙂 ok"
    ids = encode(tok, text)
    assert len(ids) > len(text.split()) + 6  # the characters really are split
    got = pieces(tok, [], ids)
    assert "".join(got) == text
    assert not any("\ufffd" in p for p in got)
    assert got[ids.index(encode(tok, "ï")[0])] == ""  # the first byte of "ï" waits
    stream = PieceStream(tok, encode(tok, "Question:"))
    assert "".join(stream.add(i) for i in encode(tok, " na")) == " na"
    assert [stream.add(i) for i in encode(tok, "ï")] == ["", "ï"]


# ---------------------------------------------------------------- prompts


GEMMA_TEMPLATE = (  # Gemma-2-it's template in short: no system turn
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}"
    "\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def test_prompts_as_the_reference_builds_them(dirs):
    """Base: `{instruction}\nQuestion: {q}\n` (utils.apply_instruct_template for a base model,
    with run_api's empty answer start); nudger: the same instruction and question in its chat
    template, the instruction in the system turn or, where there is none, the user turn."""
    q = "What is 12 + 30?"
    base = NudgingPrompt(ModelSpec(str(dirs["gemma2"])), chat=False)(q)
    assert base == f"{INSTRUCTION}\nQuestion: {q}\n"  # the nudger's first word starts a line
    chatml = NudgingPrompt(ModelSpec(str(dirs["nudger"])))(q)
    assert chatml == (
        f"<|im_start|>system\n{INSTRUCTION}<|im_end|>\n<|im_start|>user\nQuestion: {q}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    folded = NudgingPrompt(ModelSpec(str(dirs["nudger"])), instruction_in="user")(q)
    assert f"<|im_start|>user\n{INSTRUCTION}\nQuestion: {q}<|im_end|>" in folded
    gemma = NudgingPrompt(ModelSpec(str(dirs["gemma2"])))
    gemma.tokenizer.chat_template = GEMMA_TEMPLATE  # a Gemma-it tokenizer
    text = gemma(q)
    assert text == (
        f"<bos><start_of_turn>user\n{INSTRUCTION}\nQuestion: {q}<end_of_turn>\n<start_of_turn>model\n"
    )
    ids = prompt_ids(gemma.tokenizer, text)  # the template's BOS, not a second one
    assert ids.count(gemma.tokenizer.bos_token_id) == 1
    boxed = NudgingPrompt(chat=False, template="math_boxed")(q)
    assert boxed.startswith("Please reason step by step") and boxed.endswith(f"{q}\n")
