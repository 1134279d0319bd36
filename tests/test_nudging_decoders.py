"""The cached decoder against the chunked reference, on real tiny transformers and tiny-world
prompts: greedy equivalence (same- and cross-tokenizer pairs), batching, sampling, the
cross-tokenizer boundary cases, the KV-cache rollback, and proxy tuning."""

from __future__ import annotations

import threading

import pytest
import torch
from helpers.nudging import engine, model_dirs, with_eos_bias, write_lm

from nudgekit.errors import NudgekitError
from nudgekit.inference import RaggedRowCache, SlotsRowCache, SyncRequest, row_cache
from nudgekit.inference.rows import common_prefix
from nudgekit.nudging import (
    CachedNudgingDecoder,
    ChunkedNudgingDecoder,
    ProxyTuningDecoder,
)
from nudgekit.nudging.attribution import NUDGE
from nudgekit.nudging.text import encode, pieces
from nudgekit.zoo import base_prompt, chat_prompt, tiny_problems

SETTINGS = {"cross": dict(gamma=0.3), "same": dict(gamma=0.4)}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lms(tmp_path_factory) -> dict:
    """Engines over the test pair (see `model_dirs`): base, small (cross), large (same)."""
    return {name: engine(path) for name, path in model_dirs(tmp_path_factory).items()}


def prompts(nudging, n: int, offset: int = 0):
    problems = tiny_problems("test", n=n + offset)[offset:]
    return (
        [base_prompt(p.question) for p in problems],
        [chat_prompt(nudging.tokenizer, p.question) for p in problems],
    )


def pair(lms, kind: str):
    return lms["base"], lms["small"] if kind == "cross" else lms["large"]


def compare(lms, kind: str, n: int, max_new_tokens: int, chunk_tokens: int, batch_size=16):
    base, nudging = pair(lms, kind)
    pb, pn = prompts(nudging, n)
    kw = dict(SETTINGS[kind], chunk_tokens=chunk_tokens, max_new_tokens=max_new_tokens)
    ref = ChunkedNudgingDecoder(base, nudging, **kw).decode(pb, pn)
    cached = CachedNudgingDecoder(base, nudging, batch_size=batch_size, **kw).decode(pb, pn)
    return ref, cached


def assert_equivalent(ref, cached, min_rate: float = 0.95):
    same = [a.text == b.text for a, b in zip(ref, cached)]
    diffs = [(a.text, b.text) for a, b in zip(ref, cached) if a.text != b.text]
    assert sum(same) / len(same) >= min_rate, diffs[:3]
    for a, b in zip(ref, cached):
        if a.text == b.text:  # same text: same attribution and same stop
            assert (a.spans, a.stop_reason, a.rounds) == (b.spans, b.stop_reason, b.rounds)
    # the run mixes both authors (a pair where one model writes everything tests little)
    shares = [o.nudge_tokens / max(1, o.nudge_tokens + o.base_tokens) for o in ref]
    assert 0.05 < sum(shares) / len(shares) < 0.95


@pytest.mark.parametrize("kind", ["cross", "same"])
def test_greedy_equivalence_quick(lms, kind):
    ref, cached = compare(lms, kind, n=8, max_new_tokens=20, chunk_tokens=8)
    assert_equivalent(ref, cached, min_rate=1.0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cross", "same"])
def test_greedy_equivalence_50_prompts(lms, kind):
    ref, cached = compare(lms, kind, n=60, max_new_tokens=64, chunk_tokens=16)
    assert_equivalent(ref, cached)


def test_batching_does_not_change_outputs(lms):
    base, nudging = pair(lms, "same")
    pb, pn = prompts(nudging, 5)
    kw = dict(gamma=0.4, chunk_tokens=8, max_new_tokens=20)
    one = CachedNudgingDecoder(base, nudging, batch_size=1, **kw).decode(pb, pn)
    # 3 rows for 5 questions: finished rows take new questions mid-run (continuous batching)
    three = CachedNudgingDecoder(base, nudging, batch_size=3, **kw).decode(pb, pn)
    assert [o.text for o in one] == [o.text for o in three]
    assert [o.spans for o in one] == [o.spans for o in three]


def test_sampling_mode_is_seeded_and_batch_invariant(lms):
    base, nudging = pair(lms, "cross")
    pb, pn = prompts(nudging, 5)
    kw = dict(
        gamma=0.3,
        chunk_tokens=8,
        max_new_tokens=24,
        base_temperature=0.8,
        nudging_temperature=1.0,
        top_p=0.9,
    )
    a = CachedNudgingDecoder(base, nudging, seed=1, batch_size=5, **kw).decode(pb, pn)
    b = CachedNudgingDecoder(base, nudging, seed=1, batch_size=2, **kw).decode(pb, pn)
    c = CachedNudgingDecoder(base, nudging, seed=2, batch_size=5, **kw).decode(pb, pn)
    greedy = CachedNudgingDecoder(
        base, nudging, gamma=0.3, chunk_tokens=8, max_new_tokens=24
    ).decode(pb, pn)
    assert [o.text for o in a] == [o.text for o in b]
    assert [o.text for o in a] != [o.text for o in c]
    assert [o.text for o in a] != [o.text for o in greedy]
    for o in a:  # attribution covers the text exactly
        assert "".join(o.text[s.start : s.end] for s in o.spans) == o.text
    # the chunked reference samples too (different random streams, same rules)
    ref = ChunkedNudgingDecoder(base, nudging, seed=1, **kw).decode(pb[:2], pn[:2])
    assert all(
        o.stop_reason in {"nudging_eos", "length", "rounds", "repeated_nudging_words"} for o in ref
    )


@pytest.mark.parametrize("kind", ["cross", "same"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_lazy_reference_decides_as_whole_chunks(lms, kind, temperature):
    """The chunked reference's lazy base calls (stopped once the rest of a chunk cannot change
    a decision) give exactly the outputs of whole K-token calls, from fewer generated tokens."""
    base, nudging = pair(lms, kind)
    pb, pn = prompts(nudging, 8)
    kw = dict(SETTINGS[kind], chunk_tokens=8, max_new_tokens=32, seed=3,
              base_temperature=temperature, nudging_temperature=temperature)  # fmt: skip
    eager = ChunkedNudgingDecoder(base, nudging, lazy=False, **kw)
    lazy = ChunkedNudgingDecoder(base, nudging, **kw)
    whole, cut = eager.decode(pb, pn), lazy.decode(pb, pn)
    assert whole == cut  # text, spans, stop reason, rounds, token counts
    assert lazy.calls == eager.calls and lazy.tokens < eager.tokens
    shares = [o.nudge_tokens / max(1, o.nudge_tokens + o.base_tokens) for o in whole]
    assert 0.05 < sum(shares) / len(shares) < 0.95  # both models wrote


# ---------------------------------------------------------------- the KV cache itself


def fresh_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0, -1]


@pytest.mark.parametrize("lean", [True, False])
def test_row_cache_rollback_and_compaction_match_fresh_forwards(lms, lean):
    """`lean`: rows written at their own positions (no holes); otherwise the transformers forward
    on a cache with holes, compacted."""
    lm = lms["base"]
    model, tok = lm.model, lm.tokenizer
    texts = ["Question: Start 3: inc dbl\nAnswer:", "Question: Start 7: neg\nAnswer: do neg"]
    cache = row_cache(model, batch=2, pad_id=tok.pad_token_id, compact_slack=0, lean=lean)
    assert isinstance(cache, RaggedRowCache) == lean != isinstance(cache, SlotsRowCache)
    a = [encode(tok, t) for t in texts]
    cache.sync([SyncRequest(0, a[0]), SyncRequest(1, a[1])])
    # row 0 grows, row 1 idles (its block is a hole)
    grown = encode(tok, texts[0] + " inc 4\ndbl 8\nSo the result")
    got = cache.sync([SyncRequest(0, grown, wanted=[len(a[0]) + 2])])[0]
    assert torch.allclose(got[len(grown)], fresh_logits(model, grown), atol=1e-4)
    assert torch.allclose(
        got[len(a[0]) + 2], fresh_logits(model, grown[: len(a[0]) + 2]), atol=1e-4
    )
    # roll row 0 back into the middle and take another branch; row 1 moves on too
    branch = encode(tok, texts[0] + " inc 4\nThat leaves 8.")
    other = encode(tok, texts[1] + " 3\nAnswer: 3")
    got = cache.sync([SyncRequest(0, branch), SyncRequest(1, other)])
    assert torch.allclose(got[0][len(branch)], fresh_logits(model, branch), atol=1e-4)
    assert torch.allclose(got[1][len(other)], fresh_logits(model, other), atol=1e-4)
    # rolling back to a strict prefix re-feeds its last token to get its logits
    short = branch[:5]
    got = cache.sync([SyncRequest(0, short)])[0]
    assert torch.allclose(got[5], fresh_logits(model, short), atol=1e-4)
    if lean:  # nothing but the rows' own tokens: no mask, no holes to compact
        assert cache.ids == [short, other]
    else:
        assert cache.width <= 2 * max(len(branch), len(other)) + 1  # compaction kept it tight


def test_word_split_differently_by_the_two_tokenizers(lms):
    """The char model writes a word one character at a time; the base re-tokenises the shared
    text, and a word it had cut into two tokens becomes one token once complete: its cache
    rolls back to where the ids first differ and re-feeds only the changed tail."""
    lm, small = lms["base"], lms["small"]
    tok = lm.tokenizer
    prefix = "Question: Start 1: inc inc\nAnswer: No two neighbouring steps "
    part, whole = encode(tok, prefix + "canc"), encode(tok, prefix + "cancel")
    assert whole[: len(part)] != part  # the BPE split of "canc" is not a prefix of "cancel"'s
    assert len(encode(small.tokenizer, "cancel")) == 6  # the char model: one token per char
    cache = row_cache(lm.model, batch=1, pad_id=tok.pad_token_id)
    assert isinstance(cache, SlotsRowCache) and cache.store is None  # one row: the model's cache
    cache.sync([SyncRequest(0, part)])
    fed_before = cache.fed
    got = cache.sync([SyncRequest(0, whole)])[0]
    assert torch.allclose(got[len(whole)], fresh_logits(lm.model, whole), atol=1e-4)
    changed = len(whole) - common_prefix(part, whole)
    assert cache.ids[0] == whole and cache.fed - fed_before == changed <= 3


def test_leading_space_pieces_with_a_sentencepiece_style_decoder():
    """A Metaspace tokenizer drops a token's leading space when it is decoded alone; pieces are
    decoded in context, so the text the base adds after a word keeps its space."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "▁Answer": 1, ":": 2, "▁inc": 3, "▁4": 4, "inc": 5}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    raw.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>")
    assert tok.decode([3]) == "inc"  # alone: the space is gone
    assert pieces(tok, [1, 2], [3, 4]) == [" inc", " 4"]
    assert pieces(tok, [], [1, 3]) == ["Answer", " inc"]


def test_eos_of_either_model(lms, tmp_path):
    """Base EOS at a probe: confident, so it 'takes over' and ends the round; no EOS text ever
    reaches the output. Nudging EOS: its draft is appended whole and decoding stops."""
    # a base that always says EOS, with probability ~1
    base_eos = with_eos_bias(engine(write_lm(tmp_path / "b", "bpe", "llama", 1)), 30.0, True)
    small = lms["small"]
    pb, pn = prompts(small, 4)
    kw = dict(gamma=0.3, chunk_tokens=8, max_new_tokens=24, max_rounds=6)
    ref = ChunkedNudgingDecoder(base_eos, small, **kw).decode(pb, pn)
    cached = CachedNudgingDecoder(base_eos, small, **kw).decode(pb, pn)
    assert [o.text for o in ref] == [o.text for o in cached]
    for o in cached:
        assert o.base_tokens == 0 and all(s.source == NUDGE for s in o.spans)
        assert "<|end|>" not in o.text
    nudge_eos = with_eos_bias(engine(write_lm(tmp_path / "n", "char", "qwen2", 2)), 3.0)
    ref = ChunkedNudgingDecoder(lms["base"], nudge_eos, **kw).decode(pb, pn)
    cached = CachedNudgingDecoder(lms["base"], nudge_eos, **kw).decode(pb, pn)
    assert [o.text for o in ref] == [o.text for o in cached]
    assert any(o.stop_reason == "nudging_eos" for o in cached)


def test_boundary_tokenised_differently_alone_is_probed_alone(lms, tmp_path):
    """A BPE without a pre-tokenizer merges across spaces, so a boundary's own ids need not be a
    prefix of the whole draft's; every boundary is probed on its own ids (the base cache rolls
    back to the first id that changed), and outputs still match."""
    base = engine(write_lm(tmp_path / "b", "bpe-noregex", "llama", seed=5))
    nudging = lms["large"]  # writes tiny-world words that the base merges with their spaces
    pb, pn = prompts(nudging, 6)
    kw = dict(gamma=0.3, chunk_tokens=8, max_new_tokens=24)
    ref = ChunkedNudgingDecoder(base, nudging, **kw).decode(pb, pn)
    cached = CachedNudgingDecoder(base, nudging, **kw).decode(pb, pn)
    assert [o.text for o in ref] == [o.text for o in cached]

    def merged(prompt: str, text: str) -> bool:  # a boundary whose ids are not a prefix
        whole = encode(base.tokenizer, prompt + text)
        cuts = [encode(base.tokenizer, prompt + text[:i]) for i, c in enumerate(text) if c == " "]
        return any(whole[: len(c)] != c for c in cuts)

    assert any(merged(p, o.text) for p, o in zip(pb, cached))  # the case this test is about


# ---------------------------------------------------------------- proxy tuning and errors


def test_proxy_tuning_is_logit_arithmetic(lms):
    # the anti-expert is the expert's model reading the base prompt: a real difference
    base, expert, anti = lms["base"], lms["large"], lms["large"]
    pb, pn = prompts(expert, 3)
    out = ProxyTuningDecoder(base, expert, anti, alpha=0.5, max_new_tokens=6).decode(pb, pn)
    plain = ProxyTuningDecoder(base, expert, anti, alpha=0.0, max_new_tokens=6).decode(pb, pn)
    assert out != plain
    for text, b, e in zip(out, pb, pn):  # the same arithmetic by full forwards, no cache
        ids_b, ids_e = encode(base.tokenizer, b), encode(expert.tokenizer, e)
        ids_a = encode(anti.tokenizer, b)
        new = []
        for _ in range(6):
            mixed = fresh_logits(base.model, ids_b + new) + 0.5 * (
                fresh_logits(expert.model, ids_e + new) - fresh_logits(anti.model, ids_a + new)
            )
            token = int(mixed.argmax())
            if token == base.tokenizer.eos_token_id:
                break
            new.append(token)
        assert text == base.tokenizer.decode(new, skip_special_tokens=True)


def test_proxy_tuning_refuses_different_tokenizers(lms):
    with pytest.raises(NudgekitError, match="tokenizers differ"):
        ProxyTuningDecoder(lms["base"], lms["small"], lms["base"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(gamma=1.5), "gamma"),
        (dict(chunk_tokens=1), "chunk_tokens"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(batch_size=0), "batch_size"),
        (dict(forward_cost=-1.0), "forward_cost"),
    ],
)
def test_bad_settings_are_one_line_errors(lms, kwargs, message):
    with pytest.raises(NudgekitError, match=message):
        CachedNudgingDecoder(lms["base"], lms["small"], **kwargs)


def test_prompt_lists_must_match(lms):
    with pytest.raises(NudgekitError, match="differ in length"):
        CachedNudgingDecoder(lms["base"], lms["small"]).decode(["a"], [])
    with pytest.raises(NudgekitError, match="differ in length"):
        ChunkedNudgingDecoder(lms["base"], lms["small"]).decode(["a"], [])


class Serialised:
    """An engine that says it serves concurrent calls (`thread_safe`), by taking turns on a lock:
    the chunked decoder then runs its questions in a thread pool."""

    thread_safe = True

    def __init__(self, engine) -> None:
        self.engine, self.tokenizer, self.lock = engine, engine.tokenizer, threading.Lock()

    def generate(self, requests, stop_when=None):
        with self.lock:
            return self.engine.generate(requests, stop_when=stop_when)


@pytest.mark.parametrize("decoder", ["cached", "chunked", "chunked-threads"])
def test_progress_bar_counts_finished_questions(lms, decoder, capsys):
    """`decode(progress=True)` shows a bar that reaches n/n and changes nothing in the outputs."""
    base, nudging = pair(lms, "cross")
    if decoder == "chunked-threads":
        base, nudging = Serialised(base), Serialised(nudging)
    pb, pn = prompts(nudging, 5)
    cls = CachedNudgingDecoder if decoder == "cached" else ChunkedNudgingDecoder
    dec = cls(base, nudging, max_new_tokens=24, **SETTINGS["cross"])
    if decoder != "cached":  # the thread pool runs only over engines marked thread-safe
        assert (dec.concurrency > 1) == (decoder == "chunked-threads")
    quiet = dec.decode(pb, pn)
    assert "nudging" not in capsys.readouterr().err
    shown = dec.decode(pb, pn, progress=True)
    err = capsys.readouterr().err
    assert "nudging" in err and "5/5" in err, err[-300:]
    assert [o.text for o in shown] == [o.text for o in quiet]


def test_stream_admits_questions_that_arrive_mid_run(lms):
    """`stream`: questions that turn up while others decode join the running batch (they start
    before the first ones finish) and get the texts a list decode gives them."""
    base, nudging = pair(lms, "cross")
    pb, pn = prompts(nudging, 4)
    dec = CachedNudgingDecoder(base, nudging, batch_size=4, max_new_tokens=32, **SETTINGS["cross"])
    expected = [o.text for o in dec.decode(pb, pn)]
    arrivals = {0: [0, 1], 3: [2, 3]}  # by take() call: two wait at the start, two come later
    waiting, calls, events, got = [], iter(range(10**6)), [], {}

    def take():
        waiting.extend(arrivals.get(next(calls), []))
        if not waiting:
            return None
        q = waiting.pop(0)
        events.append(("start", q))
        return pb[q], pn[q], q

    def done(q, out):
        events.append(("done", q))
        got[q] = out.text

    dec.stream(take, done)
    assert [got[q] for q in range(4)] == expected
    first_done = min(events.index(("done", q)) for q in (0, 1))
    assert events.index(("start", 2)) < first_done and events.index(("start", 3)) < first_done
