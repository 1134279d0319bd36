"""The `hf` engine on a tiny random-init Qwen2 / Llama saved to and loaded from a local dir."""

from __future__ import annotations

import pytest
import torch

from nudgekit.engines import Engine, GenerationRequest, HFEngine
from nudgekit.engines.hf import plan_micro_batches
from nudgekit.engines.sampling import top_p_filter
from nudgekit.engines.tokens import decode_continuation
from nudgekit.errors import NudgekitError
from nudgekit.inference.kvstore import AppendCache
from nudgekit.models import load_model, load_tokenizer

PROMPTS = ["Hello world!", "Question: what is 12 + 30? Answer:", "The"]


@pytest.fixture(scope="module")
def engine(tiny_qwen_dir) -> HFEngine:
    return HFEngine(load_model(tiny_qwen_dir), load_tokenizer(tiny_qwen_dir), max_batch_size=16)


def _ids(result):
    return [s.token_ids for s in result.samples]


def _teacher_forced(model, prompt_ids, completion_ids, temperature=1.0):
    """Log-probs and argmax of each completion token from one full forward pass."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1].float()
    lp = (logits / temperature).log_softmax(-1)
    return lp.gather(-1, torch.tensor(completion_ids)[:, None]).squeeze(-1), lp.argmax(-1), logits


def test_is_an_engine(engine):
    assert isinstance(engine, Engine)
    assert engine.eos_token_ids == [engine.tokenizer.eos_token_id]


def test_same_seed_same_samples_and_seeds_matter(engine):
    def req(seed):
        return GenerationRequest(PROMPTS[0], n=4, max_new_tokens=12, seed=seed, logprobs=True)

    a, b, c = engine.generate([req(1), req(1), req(2)])
    assert _ids(a) == _ids(b)  # same seed in one call: same tokens (log-probs equal to ~1e-6)
    assert torch.allclose(
        torch.tensor([s.logprobs for s in a.samples]),
        torch.tensor([s.logprobs for s in b.samples]),
        atol=1e-5,
    )
    again = engine.generate([req(1), req(1), req(2)])  # same call again: bit-identical
    assert [(s.token_ids, s.logprobs) for r in again for s in r.samples] == [
        (s.token_ids, s.logprobs) for r in (a, b, c) for s in r.samples
    ]
    assert _ids(a) != _ids(c)
    assert len({tuple(i) for i in _ids(a)}) > 1  # the n samples of one request differ


def test_samples_do_not_depend_on_batch_composition(tiny_qwen_dir):
    model, tok = load_model(tiny_qwen_dir), load_tokenizer(tiny_qwen_dir)
    alone = HFEngine(model, tok).generate(
        [GenerationRequest(PROMPTS[1], n=5, max_new_tokens=10, seed=3)]
    )
    mixed = HFEngine(model, tok, max_batch_size=3).generate(
        [
            GenerationRequest(PROMPTS[2], n=2, max_new_tokens=4, seed=9),
            GenerationRequest(PROMPTS[1], n=5, max_new_tokens=10, seed=3),
        ]
    )
    assert _ids(mixed[1]) == _ids(alone[0])


def test_n_samples_and_prompt_ids(engine):
    results = engine.generate(
        [GenerationRequest(p, n=n, max_new_tokens=5, seed=0) for p, n in zip(PROMPTS, (1, 3, 20))]
    )
    assert [len(r.samples) for r in results] == [1, 3, 20]  # 20 > max_batch_size: split
    tok = engine.tokenizer
    assert results[1].prompt_ids == tok(PROMPTS[1], add_special_tokens=False).input_ids
    assert all(s.finish_reason in {"length", "eos"} for r in results for s in r.samples)


def test_text_and_id_prompts_agree(engine):
    ids = engine.tokenizer(PROMPTS[1], add_special_tokens=False).input_ids
    a, b = engine.generate(
        [
            GenerationRequest(PROMPTS[1], n=3, max_new_tokens=8, seed=5),
            GenerationRequest(ids, n=3, max_new_tokens=8, seed=5),
        ]
    )
    assert a.prompt_ids == b.prompt_ids == ids and _ids(a) == _ids(b)


def test_length_finish(engine):
    (res,) = engine.generate([GenerationRequest(PROMPTS[0], n=3, max_new_tokens=7, seed=0)])
    for s in res.samples:
        assert (len(s.token_ids) == 7 and s.finish_reason == "length") or s.finish_reason == "eos"
        assert s.text == engine.tokenizer.decode(s.token_ids, skip_special_tokens=True)


def test_eos_finish(engine):
    (greedy,) = engine.generate([GenerationRequest(PROMPTS[0], max_new_tokens=6, temperature=0)])
    first, second = greedy.samples[0].token_ids[:2]
    # declare the greedy second token an EOS: the sample ends there, EOS id kept, not in text
    eos_engine = HFEngine(engine.model, engine.tokenizer, eos_token_ids=[second])
    (res,) = eos_engine.generate([GenerationRequest(PROMPTS[0], max_new_tokens=6, temperature=0)])
    s = res.samples[0]
    assert (s.token_ids, s.finish_reason) == ([first, second], "eos")
    assert s.text == engine.tokenizer.decode([first], skip_special_tokens=True)


def test_stop_strings_trim_text(engine):
    req = dict(prompt=PROMPTS[0], n=6, max_new_tokens=24, seed=11)
    (free,) = engine.generate([GenerationRequest(**req)])
    checked = 0
    for j, sample in enumerate(free.samples):
        text = sample.text
        stop = next(
            (
                text[i : i + 2]
                for i in range(3, len(text) - 2)
                if text[i : i + 2].isprintable() and "\ufffd" not in text[i : i + 2]
            ),
            None,
        )
        if stop is None:
            continue
        (res,) = engine.generate([GenerationRequest(**req, stop=["@@never@@", stop])])
        got = res.samples[j]
        assert got.finish_reason == "stop"
        assert got.text == text[: text.index(stop)]
        assert got.token_ids == sample.token_ids[: len(got.token_ids)]  # same draws, cut early
        assert stop in engine.tokenizer.decode(
            got.token_ids
        ) and stop not in engine.tokenizer.decode(got.token_ids[:-1])
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_match_teacher_forcing(engine, temperature):
    results = engine.generate(
        [
            GenerationRequest(
                p,
                n=2,
                max_new_tokens=10,
                seed=4,
                logprobs=True,
                top_logprobs=True,
                temperature=temperature,
            )
            for p in PROMPTS
        ]
    )
    for res in results:
        for s in res.samples:
            lp, top, _ = _teacher_forced(engine.model, res.prompt_ids, s.token_ids, temperature)
            assert torch.allclose(torch.tensor(s.logprobs), lp, atol=1e-5)
            assert s.top_token_ids == top.tolist()
            assert all(t >= x - 1e-6 for t, x in zip(s.top_logprobs, s.logprobs))


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_stop_when_ends_a_sample_as_a_prefix_of_the_whole_one(engine, temperature):
    """A caller stop ends the sample after the token it was asked about: the same ids and
    top-1 log-probs as the first tokens of the unstopped sample (one request: the same
    forwards), finish reason "stop"; the callback sees the prompt ids and the tokens so far."""
    req = GenerationRequest(PROMPTS[1], max_new_tokens=10, temperature=temperature, seed=5,
                            top_logprobs=True, logprobs=True)  # fmt: skip
    (whole,) = engine.generate([req])
    full = whole.samples[0]
    assert full.finish_reason == "length"
    seen = []

    def stop_when(index, prompt_ids, ids, top):
        seen.append((index, list(prompt_ids), list(ids), list(top)))
        return len(ids) == 4

    (cut,) = engine.generate([req], stop_when=stop_when)
    got = cut.samples[0]
    assert (got.token_ids, got.finish_reason) == (full.token_ids[:4], "stop")
    assert got.top_logprobs == full.top_logprobs[:4]  # bit for bit
    assert got.logprobs == full.logprobs[:4]
    assert got.text == engine.tokenizer.decode(got.token_ids, skip_special_tokens=True)
    assert [(i, p, len(ids)) for i, p, ids, _ in seen] == [
        (0, whole.prompt_ids, n) for n in (1, 2, 3, 4)
    ]
    assert seen[-1][2:] == (full.token_ids[:4], full.top_logprobs[:4])


def test_stop_when_is_per_sample_and_never_asked_after_the_end(engine):
    """In a batch, only the samples the caller stops end early; a sample that ends by its budget
    or EOS is not asked about its last token."""
    reqs = [GenerationRequest(p, n=2, max_new_tokens=6, seed=i) for i, p in enumerate(PROMPTS)]
    whole = engine.generate(reqs)
    asked = []

    def stop_when(index, prompt_ids, ids, top):
        asked.append((index, tuple(ids)))
        return index == 1 and len(ids) == 2

    cut = engine.generate(reqs, stop_when=stop_when)
    for i, (a, b) in enumerate(zip(whole, cut)):
        for x, y in zip(a.samples, b.samples):
            if i == 1:
                assert (y.token_ids, y.finish_reason) == (x.token_ids[:2], "stop")
            else:
                assert (y.token_ids, y.finish_reason) == (x.token_ids, x.finish_reason)
    ended = {(i, tuple(s.token_ids)) for i, r in enumerate(whole) if i != 1 for s in r.samples}
    assert not ended & set(asked)  # the last token of a finished sample is never asked about
    assert max(len(ids) for i, ids in asked if i == 1) == 2


@pytest.mark.parametrize("fixture", ["tiny_qwen_dir", "tiny_llama_dir"])
def test_greedy_matches_hf_generate_with_left_padding(fixture, request):
    path = request.getfixturevalue(fixture)
    model, tok = load_model(path), load_tokenizer(path)
    results = HFEngine(model, tok).generate(
        [GenerationRequest(p, max_new_tokens=12, temperature=0, top_logprobs=True) for p in PROMPTS]
    )
    enc = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    assert (enc.attention_mask == 0).any()  # prompts really are left-padded
    ref = model.generate(**enc, do_sample=False, max_new_tokens=12, pad_token_id=tok.pad_token_id)
    for i, res in enumerate(results):
        s = res.samples[0]
        expected = ref[i, enc.input_ids.shape[1] :].tolist()[: len(s.token_ids)]
        assert s.token_ids == expected and s.token_ids == s.top_token_ids
        if s.finish_reason == "length":
            assert len(s.token_ids) == 12


@pytest.mark.parametrize("fixture", ["tiny_qwen_dir", "tiny_llama_dir"])
@pytest.mark.parametrize("bmm_rows", [32, 1], ids=["sdpa", "append-bmm"])
def test_lean_forward_samples_like_the_model_forward(fixture, bmm_rows, request, monkeypatch):
    """The default lean forward and the model's own give the same samples and log-probs; with
    `bmm_decode_rows=1` the lean side keeps an `AppendCache` and batched-product attention."""
    appended = []
    update = AppendCache.update
    monkeypatch.setattr(AppendCache, "update", lambda *a: appended.append(1) or update(*a))
    path = request.getfixturevalue(fixture)
    model, tok = load_model(path), load_tokenizer(path)
    # different budgets: rows finish at different steps and are dropped from the cache
    reqs = [GenerationRequest(p, n=3, max_new_tokens=(10, 3, 25)[i % 3], seed=i, logprobs=True)
            for i, p in enumerate(PROMPTS)]  # fmt: skip
    lean = HFEngine(model, tok, bmm_decode_rows=bmm_rows)
    plain = HFEngine(model, tok, lean=False)
    a, b = lean.generate(reqs), plain.generate(reqs)
    assert lean._lean is not None and plain._lean is None
    assert bool(appended) == (bmm_rows == 1)  # 9 sample rows: in place only below 32
    assert [_ids(r) for r in a] == [_ids(r) for r in b]
    for ra, rb in zip(a, b):
        for sa, sb in zip(ra.samples, rb.samples):
            # fp32 sums in another order: ~1e-5 apart on log-probs near -4 (ids above are equal)
            assert sa.logprobs == pytest.approx(sb.logprobs, abs=1e-4)


@pytest.mark.parametrize("kwargs", [dict(max_batch_size=0), dict(bmm_decode_rows=0)])
def test_bad_engine_settings_are_user_errors(tiny_qwen_dir, kwargs):
    with pytest.raises(NudgekitError, match=next(iter(kwargs))):
        HFEngine(load_model(tiny_qwen_dir), load_tokenizer(tiny_qwen_dir), **kwargs)


def test_top_p_samples_stay_in_nucleus(engine):
    tiny, nucleus = engine.generate(
        [
            GenerationRequest(PROMPTS[1], n=4, max_new_tokens=8, seed=2, top_p=1e-6),
            GenerationRequest(PROMPTS[1], n=4, max_new_tokens=8, seed=2, top_p=0.5),
        ]
    )
    (greedy,) = engine.generate([GenerationRequest(PROMPTS[1], max_new_tokens=8, temperature=0)])
    assert all(ids == greedy.samples[0].token_ids for ids in _ids(tiny))
    for s in nucleus.samples:
        _, _, logits = _teacher_forced(engine.model, nucleus.prompt_ids, s.token_ids)
        kept = torch.isfinite(top_p_filter(logits, torch.full((len(logits),), 0.5)))
        assert kept[torch.arange(len(s.token_ids)), torch.tensor(s.token_ids)].all()


def test_mixed_requests_with_early_finishers(engine):
    # short requests finish first; the batch is compacted and the long rows must not change
    reqs = [
        GenerationRequest(PROMPTS[0], n=6, max_new_tokens=2, seed=1),
        GenerationRequest(PROMPTS[1], n=3, max_new_tokens=20, seed=2, temperature=0.5),
    ]
    short, long = engine.generate(reqs)
    (alone,) = engine.generate([reqs[1]])
    assert all(len(i) <= 2 for i in _ids(short))
    assert _ids(long) == _ids(alone)


def test_each_prompt_is_prefilled_once(engine):
    shapes = []  # the ids every forward embeds (either forward path calls the embedding)
    hook = engine.model.get_input_embeddings().register_forward_pre_hook(
        lambda mod, args: shapes.append(tuple(args[0].shape))
    )
    try:
        engine.generate([GenerationRequest(p, n=4, max_new_tokens=3, seed=0) for p in PROMPTS[:2]])
    finally:
        hook.remove()
    width = max(len(engine.tokenizer(p).input_ids) for p in PROMPTS[:2])
    assert shapes[0] == (2, width)  # one prefill row per distinct prompt, not per sample
    assert all(shape[1] == 1 for shape in shapes[1:]) and shapes[1][0] <= 8


class _Wrapper(torch.nn.Module):
    """Shaped like DDP / DeepSpeed: holds the model as `.module` and forwards calls to it."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def test_wrapped_model_gives_the_same_samples(engine):
    req = GenerationRequest(PROMPTS[1], n=3, max_new_tokens=6, seed=8, logprobs=True)
    (plain,) = engine.generate([req])
    (wrapped,) = HFEngine(_Wrapper(engine.model), engine.tokenizer).generate([req])
    assert _ids(wrapped) == _ids(plain)


def test_training_mode_is_restored(engine):
    engine.model.train()
    try:
        engine.generate([GenerationRequest("Hi", max_new_tokens=2, seed=0)])
        assert engine.model.training
    finally:
        engine.model.eval()


def test_engine_from_path(tiny_qwen_dir):
    res = HFEngine(str(tiny_qwen_dir)).generate([GenerationRequest("Hi", max_new_tokens=3, seed=0)])
    assert 1 <= len(res[0].samples[0].token_ids) <= 3


@pytest.mark.parametrize(
    ("req", "fragment"),
    [
        (GenerationRequest("hi", n=0), "request 0: n and max_new_tokens"),
        (GenerationRequest("hi", top_p=0.0), "request 0: need temperature >= 0 and 0 < top_p"),
        (GenerationRequest("", max_new_tokens=2), "request 0: empty prompt"),
        (GenerationRequest([1, 10**6]), "request 0: prompt ids must lie in"),
    ],
)
def test_bad_requests(engine, req, fragment):
    with pytest.raises(NudgekitError, match=fragment):
        engine.generate([req])


def test_plan_micro_batches_splits_and_packs():
    assert plan_micro_batches([3, 5, 1], 4) == [[(0, 0, 3), (1, 0, 1)], [(1, 1, 4)], [(2, 0, 1)]]
    assert plan_micro_batches([2, 2], 8) == [[(0, 0, 2), (1, 0, 2)]]
    assert plan_micro_batches([2, 3], 4, order=[1, 0]) == [[(1, 0, 3), (0, 0, 1)], [(0, 1, 1)]]


def test_per_row_prefill_gives_the_same_samples(engine):
    reqs = [GenerationRequest(p, n=3, max_new_tokens=8, seed=i) for i, p in enumerate(PROMPTS)]
    per_row = HFEngine(engine.model, engine.tokenizer, max_batch_size=16, share_prefix=False)
    shapes = []  # the ids every forward embeds (either forward path calls the embedding)
    hook = engine.model.get_input_embeddings().register_forward_pre_hook(
        lambda mod, args: shapes.append(tuple(args[0].shape))
    )
    try:
        unshared = per_row.generate(reqs)
    finally:
        hook.remove()
    assert shapes[0][0] == 9  # one prefill row per sample
    assert [_ids(r) for r in unshared] == [_ids(r) for r in engine.generate(reqs)]


def _sentencepiece_style_tokenizer():
    """A Metaspace BPE tokenizer: word-start spaces live in the tokens (`▁there`), as in Llama."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    corpus = ["Hi there friend, the answer is 42.", "there is a friend here"] * 10
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def test_completion_text_keeps_a_sentencepiece_word_start_space(engine):
    tok = _sentencepiece_style_tokenizer()
    ids = tok("Hi there friend", add_special_tokens=False).input_ids
    completion = ids[1:]  # "▁there ▁friend" after the prompt "Hi"
    assert tok.decode(completion) == "there friend"  # what a context-free decode gives
    anchor = tok("a", add_special_tokens=False).input_ids
    assert decode_continuation(tok, completion, anchor) == " there friend"
    # byte-level BPE keeps spaces either way: the anchored decode changes nothing there
    byte_ids = engine.tokenizer(" the answer is 42", add_special_tokens=False).input_ids
    assert engine._decode_text(byte_ids) == engine.tokenizer.decode(byte_ids) == " the answer is 42"
