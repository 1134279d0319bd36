"""The nudging algorithm's pure pieces on hand-built inputs: words, takeover, repetition, trim,
attribution spans and run statistics."""

from __future__ import annotations

import itertools

import pytest

from nudgekit.inference.rows import common_prefix
from nudgekit.nudging.attribution import (
    BASE,
    NUDGE,
    NudgeOutput,
    Span,
    Transcript,
    clip_spans,
    finish,
    run_stats,
)
from nudgekit.nudging.report import highlight, html_page
from nudgekit.nudging.rules import (
    Chunk,
    Draft,
    RepeatState,
    base_takes_over,
    first_uncertain,
    is_repetition,
    repeated_suffix_length,
    takeover_decided,
    trim_repeated_tail,
)


def test_draft_words_keep_leading_spaces_and_empty_words():
    d = Draft.parse("  do inc  dbl")
    assert d.prefix == "  "
    assert d.words == ("do", "inc", "", "dbl")
    # the boundary before the empty word (a double space) is never probed
    assert d.probe_points() == [1, 3]
    assert d.text_before(1) == "  do"
    assert d.text_before(3) == "  do inc "
    assert d.next_word(1) == " inc"


def test_draft_accepted_text():
    d = Draft.parse("do inc dbl")
    assert d.accepted(1) == "do"  # base took over before "inc": the first word is always kept
    assert d.accepted(2) == "do inc"
    assert d.accepted(None) == "do inc"  # no takeover: the draft minus its last word
    one = Draft.parse("  answer:")
    assert one.probe_points() == []
    assert one.accepted(None) == "  answer:"  # a one-word draft is kept whole
    assert Draft.parse("").accepted(None) == ""


def test_draft_of_newline_words():
    d = Draft.parse("do inc\ninc 5\nAnswer")
    assert d.words == ("do", "inc\ninc", "5\nAnswer")
    assert d.accepted(None) == "do inc\ninc"


@pytest.mark.parametrize(
    "word, token, prob, expected",
    [
        (" inc", " in", 0.01, True),  # the base's token starts the next word: agree anyway
        (" inc", " inc", 0.01, True),
        (" inc", " dec", 0.29, False),  # different and unsure: the nudging model keeps writing
        (" inc", " dec", 0.3, True),  # confident (>= gamma): the base takes over
        (" inc", "inc", 0.1, False),  # a missing leading space is a different token
        (" inc", "", 0.2, False),  # end-of-sequence never matches a word
        (" inc", "", 0.9, True),  # ... but may be confident
    ],
)
def test_base_takes_over(word, token, prob, expected):
    assert base_takes_over(word, token, prob, gamma=0.3) is expected


def test_takeover_decided_on_a_growing_word_agrees_with_the_whole_word():
    """Deciding on the start of the next word never contradicts the decision on the whole word,
    and it is decided at the latest when the word is complete."""
    words = [" inc", " i", " in", " incr", " dec", " 7", " "]
    tokens = [" inc", " in", " i", "inc", " d", " incre", " ", ""]
    for word, token, prob in itertools.product(words, tokens, (0.1, 0.5)):
        _check_growing_word(word, token, prob)
    # decided as soon as the known start of the word settles it
    assert takeover_decided(" x", False, " inc", 0.1, 0.3) is False
    assert takeover_decided(" i", False, " inc", 0.1, 0.3) is None
    assert takeover_decided(" inco", False, " inc", 0.1, 0.3) is True


def _check_growing_word(word: str, token: str, prob: float) -> None:
    whole = base_takes_over(word, token, prob, gamma=0.3)
    for cut in range(1, len(word) + 1):
        got = takeover_decided(word[:cut], False, token, prob, gamma=0.3)
        assert got in (None, whole)
    assert takeover_decided(word, True, token, prob, gamma=0.3) is whole


def test_first_uncertain_and_chunk_kept():
    assert first_uncertain([0.9, 0.5, 0.2, 0.8], 0.3) == 2
    assert first_uncertain([0.9, 0.5], 0.3) is None
    chunk = Chunk((" a", " b", " c"), (0.9, 0.2, 0.9), eos=False)
    assert chunk.kept(0.3) == (" a", True)
    assert chunk.kept(0.1) == (" a b c", False)
    # the end-of-sequence position's probability is not a token of the text
    ended = Chunk((" a",), (0.9, 0.05), eos=True)
    assert ended.kept(0.3) == (" a", False)
    assert ended.tail() == Chunk((), (0.05,), eos=True)
    assert Chunk((), (0.7,), eos=True).starts_with_eos


def test_is_repetition_needs_more_than_five_words():
    context = "inc 1 dec 0 inc 1 dec 0 inc 1"
    assert is_repetition(" inc 1 dec 0 inc 1", context + " ")  # 6 space-separated words
    assert not is_repetition(" inc 1 dec", context)  # short chunks may repeat
    assert not is_repetition(" inc 2 dec 0 inc 1 dec", context)


def test_repeat_state_stops_on_fourth_identical_round():
    state, stops = RepeatState(), []
    for words in ["a", "b", "b", "b", "b"]:
        state, stop = state.update(words)
        stops.append(stop)
    assert stops == [False, False, False, False, True]
    state, stop = RepeatState("b", 2).update("c")
    assert (state, stop) == (RepeatState("c", 0), False)


def test_trim_repeated_tail():
    unit = "\ninc 3 dec 2 inc 3 dec 2 abcdefghij"  # 35 characters
    text = "  Answer: 1" + unit * 3 + " \n"
    start, end = trim_repeated_tail(text)
    assert text[start:end] == "Answer: 1" + unit  # stripped, then the repeats cut one by one
    assert repeated_suffix_length("x" * 10 + "y" * 29 + "y" * 29) == 0  # shorter than 30
    assert trim_repeated_tail("  short  ") == (2, 7)
    assert trim_repeated_tail("   ") == (3, 3)


def test_transcript_merges_and_clips_spans():
    t = Transcript()
    t.add("  do", NUDGE)
    t.add(" inc", NUDGE)
    t.add(" 5\n", BASE)
    t.add("", BASE)
    t.add("Answer", NUDGE)
    assert t.text == "  do inc 5\nAnswer"
    assert t.spans == [Span(0, 8, NUDGE), Span(8, 11, BASE), Span(11, 17, NUDGE)]
    assert clip_spans(t.spans, 2, 10) == [Span(0, 6, NUDGE), Span(6, 8, BASE)]


class _CharTok:
    """Counts one token per character (stands in for a tokenizer in `finish`)."""

    def __call__(self, text, add_special_tokens=False):
        return type("E", (), {"input_ids": list(range(len(text)))})()


def test_finish_trims_and_counts_by_author():
    t = Transcript()
    t.add(" do inc", NUDGE)
    t.add(" 5 ", BASE)
    out = finish(t, None, 3, spent=True, base_tok=_CharTok(), nudging_tok=_CharTok())
    assert out.text == "do inc 5"
    assert out.spans == [Span(0, 6, NUDGE), Span(6, 8, BASE)]
    assert (out.nudge_tokens, out.base_tokens, out.stop_reason) == (6, 2, "length")
    assert out.span_texts() == ["do inc"]


def test_run_stats():
    a = NudgeOutput("ab cd", [Span(0, 2, NUDGE), Span(2, 5, BASE)], "nudging_eos", 2, 1, 3)
    b = NudgeOutput("xyz", [Span(0, 3, BASE)], "length", 4, 0, 4)
    s = run_stats([a, b])
    assert s["nudge_token_share"] == pytest.approx(1 / 8)
    assert s["nudge_char_share"] == pytest.approx(2 / 8)
    assert s["intervention_rate"] == pytest.approx(100 * 1 / 8)
    assert s["rounds"] == 3
    assert s["stop/nudging_eos"] == 0.5
    assert run_stats([]) == {}


def test_html_highlights_and_escapes():
    spans = [[0, 3, NUDGE], [3, 9, BASE]]
    out = highlight("<a> b&c", spans)
    assert out.startswith('<span class="nudge" title="nudging model, 3 chars">&lt;a&gt;</span>')
    assert "b&amp;c" in out
    record = {
        "id": "tiny/1",
        "question": "Start 1: inc",
        "answer": "2",
        "output": "<a> b&c",
        "spans": spans,
        "nudge_tokens": 1,
        "base_tokens": 2,
        "correct": 1.0,
        "baselines": {"base_only": {"output": "x", "correct": 0.0}},
    }
    page = html_page([record], {"nudging/accuracy": 1.0}, "run")
    assert page.count('title="nudging model') == 1 and "wrong" in page and "correct" in page


def test_encode_fast_path_matches_the_tokenizer_call():
    from nudgekit.models.random_init import build_tiny_tokenizer
    from nudgekit.nudging.text import _CHECKS, encode

    tok = build_tiny_tokenizer()
    texts = [f"Question: what is {i} + 30?\nAnswer:" for i in range(_CHECKS)] + [
        "<|im_start|>user\nhi<|im_end|>\n",  # special tokens inside the text
        "  leading and trailing  ",
        "ünïcödé 3\n\nThe answer is 42.",
    ]
    for text in texts:  # the first _CHECKS go through __call__, the rest through the backend
        assert encode(tok, text) == tok(text, add_special_tokens=False).input_ids


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([], [], 0),
        ([1, 2, 3], [], 0),
        ([1, 2, 3], [1, 2, 3], 3),
        ([1, 2, 3], [1, 2], 2),
        ([1, 2, 3], (1, 2, 3, 4), 3),  # a tuple and a list
        ([5, 2, 3], [1, 2, 3], 0),
        (list(range(100)), list(range(57)) + [0] + list(range(58, 100)), 57),
        (list(range(100)), list(range(99)) + [7], 99),
    ],
)
def test_common_prefix(a, b, expected):
    assert common_prefix(a, b) == expected == common_prefix(b, a)
