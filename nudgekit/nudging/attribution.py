"""Who wrote what: spans of the shared output text attributed to the base or the nudging model.

Every decoder builds its output through a `Transcript`, so each character of the final text is
attributed to exactly one model. Token counts count each span with its author's tokenizer (the
tokens that model actually had to produce), which is how the paper's "nudging token share" is
meant; the reference implementation reports word shares only.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from nudgekit.nudging.rules import trim_repeated_tail
from nudgekit.nudging.text import encode

NUDGE = "nudge"
BASE = "base"


@dataclass(frozen=True)
class Span:
    """Characters `[start, end)` of the output, written by `source` ("nudge" or "base")."""

    start: int
    end: int
    source: str


@dataclass
class NudgeOutput:
    """One collaborative answer.

    Args:
        text: the final output (stripped and with repeated tails trimmed, as in the reference).
        spans: attribution of every character of `text`, in order, adjacent spans of one source
            merged.
        stop_reason: "nudging_eos", "repeated_nudging_words", "rounds" or "length".
        rounds: nudging rounds run.
        nudge_tokens: tokens of `text` written by the nudging model (its tokenizer).
        base_tokens: tokens of `text` written by the base model (its tokenizer).
    """

    text: str
    spans: list[Span]
    stop_reason: str
    rounds: int
    nudge_tokens: int = 0
    base_tokens: int = 0

    def span_texts(self, source: str = NUDGE) -> list[str]:
        return [self.text[s.start : s.end] for s in self.spans if s.source == source]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["spans"] = [[s.start, s.end, s.source] for s in self.spans]
        return out


@dataclass
class Transcript:
    """The growing shared output text with its attribution."""

    text: str = ""
    spans: list[Span] = field(default_factory=list)

    def add(self, text: str, source: str) -> None:
        if not text:
            return
        start = len(self.text)
        self.text += text
        if self.spans and self.spans[-1].source == source:
            start = self.spans.pop().start
        self.spans.append(Span(start, len(self.text), source))

    def clip(self, start: int, end: int) -> list[Span]:
        """The spans of `text[start:end]`, shifted to start at 0."""
        return clip_spans(self.spans, start, end)


def clip_spans(spans: Sequence[Span], start: int, end: int) -> list[Span]:
    """Restrict `spans` to `[start, end)` and shift them to begin at 0; empty spans vanish."""
    out = []
    for s in spans:
        a, b = max(s.start, start), min(s.end, end)
        if a < b:
            out.append(Span(a - start, b - start, s.source))
    return out


def count_tokens(output: NudgeOutput, counters: dict[str, Callable[[str], int]]) -> None:
    """Fill `nudge_tokens` / `base_tokens` by counting each span with its author's counter."""
    totals = Counter()
    for s in output.spans:
        totals[s.source] += counters[s.source](output.text[s.start : s.end])
    output.nudge_tokens, output.base_tokens = totals[NUDGE], totals[BASE]


def run_stats(outputs: Sequence[NudgeOutput]) -> dict[str, float]:
    """Per-run attribution statistics.

    Returns:
        `nudge_token_share` (nudging tokens / all tokens, pooled over outputs), `nudge_char_share`,
        `intervention_rate` (nudging spans per 100 output tokens: how often the small model has
        to step in), `interventions` (mean nudging spans per output), `rounds` (mean) and the
        share of each stop reason (`stop/<reason>`).
    """
    if not outputs:
        return {}
    nudge = sum(o.nudge_tokens for o in outputs)
    total = nudge + sum(o.base_tokens for o in outputs)
    chars = sum(len(o.text) for o in outputs)
    nudge_chars = sum(s.end - s.start for o in outputs for s in o.spans if s.source == NUDGE)
    spans = [sum(s.source == NUDGE for s in o.spans) for o in outputs]
    stats = {
        "nudge_token_share": nudge / total if total else 0.0,
        "nudge_char_share": nudge_chars / chars if chars else 0.0,
        "intervention_rate": 100.0 * sum(spans) / total if total else 0.0,
        "interventions": statistics.fmean(spans),
        "rounds": statistics.fmean(o.rounds for o in outputs),
        "tokens": total / len(outputs),
    }
    for reason, n in Counter(o.stop_reason for o in outputs).items():
        stats[f"stop/{reason}"] = n / len(outputs)
    return stats


def finish(
    out: Transcript, stop: str | None, rounds: int, spent: bool, base_tok: Any, nudging_tok: Any
) -> NudgeOutput:
    """The final output: stop reason filled in, trimmed as in the reference, tokens counted.

    Args:
        out: the transcript when the loop ended.
        stop: the reason the loop broke, or None when its condition ran out.
        rounds: rounds run.
        spent: the token budget was spent (else the round limit ended it).
        base_tok: counts base spans.
        nudging_tok: counts nudging spans.
    """
    if stop is None:
        stop = "length" if spent else "rounds"
    start, end = trim_repeated_tail(out.text)
    result = NudgeOutput(out.text[start:end], out.clip(start, end), stop, rounds)
    count_tokens(
        result,
        {
            NUDGE: lambda t: len(encode(nudging_tok, t)),
            BASE: lambda t: len(encode(base_tok, t)),
        },
    )
    return result
