"""The anatomy of nudged answers: which words the small model wrote, where, and of what kind.

Input: a nudging run's `nudging.jsonl` (per item the output text and its `spans`
`[start, end, source]`) or a nudged eval's `samples.jsonl` (per sample `completions` and
`spans`). The paper's observation to test is that the small model mostly steps in at the start
of an answer and on formatting/stylistic words, while the base model writes the content
(numbers, operations). Pure functions, so the notebook only plots.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

NUDGE = "nudge"
WORD = re.compile(r"\S+")
NUMBER = re.compile(r"[-+]?\d+([.,/]\d+)*[.,:;]?")
# the tiny world's operations (`nudgekit.zoo.tasks.OPS`; not imported, so that this module stays
# light: a test keeps the two in step)
TINY_OPS = frozenset({"inc", "dec", "dbl", "tpl", "neg", "flp"})
OPERATORS = set("+ - * / = × ÷ ^ % mod plus minus times".split()) | TINY_OPS
FORMAT_WORDS = set(
    "answer question start do step the is so therefore final thus then we first next finally"
    " result boxed".split()
)
WORD_TYPES = ("number", "operator", "format", "other")


def word_type(word: str) -> str:
    """One of "number", "operator" (arithmetic symbols and tiny-world operations), "format" (answer
    scaffolding: "Answer:", "do", "The", ...) or "other"."""
    if NUMBER.fullmatch(word) or ("\\boxed{" in word and any(c.isdigit() for c in word)):
        return "number"
    bare = word.strip(".,:;!?()[]{}\"'").lower()
    if word in OPERATORS or bare in OPERATORS:
        return "operator"
    if bare in FORMAT_WORDS or (word.endswith(":") and bare.isalpha()):
        return "format"
    return "other"


def words(text: str, spans: Sequence[Sequence]) -> list[dict]:
    """Each whitespace-separated word of `text` with its author (the source of the span holding
    its first character), its word type and its relative position (word index / word count)."""
    found = list(WORD.finditer(text))
    out = []
    for i, m in enumerate(found):
        source = next((s[2] for s in spans if s[0] <= m.start() < s[1]), "base")
        out.append(
            {
                "word": m.group(),
                "source": source,
                "type": word_type(m.group()),
                "index": i,
                "position": i / len(found),
            }
        )
    return out


def answers(rows: Iterable[dict]) -> list[tuple[str, list]]:
    """`(text, spans)` of every answer in `nudging.jsonl` rows or nudged `samples.jsonl` rows."""
    out = []
    for row in rows:
        if "output" in row:
            out.append((row["output"], row["spans"]))
        else:
            out.extend(zip(row["completions"], row["spans"]))
    return out


def all_words(rows: Iterable[dict]) -> list[dict]:
    return [w for text, spans in answers(rows) for w in words(text, spans)]


def by_type(ws: Sequence[dict]) -> list[dict]:
    """Per word type: words, nudged words, share of that type's words that were nudged, and the
    type's share of all nudged words."""
    total, nudged = (
        Counter(w["type"] for w in ws),
        Counter(w["type"] for w in ws if w["source"] == NUDGE),
    )
    all_nudged = sum(nudged.values())
    return [
        {
            "type": t,
            "words": total[t],
            "nudged": nudged[t],
            "nudged_share": nudged[t] / total[t] if total[t] else 0.0,
            "share_of_nudged": nudged[t] / all_nudged if all_nudged else 0.0,
        }
        for t in WORD_TYPES
    ]


def by_position(ws: Sequence[dict], bins: int = 5) -> list[dict]:
    """Nudged share of the words in each relative-position bin of their answer (bin 0 = the
    first `1/bins` of the words)."""
    total, nudged = [0] * bins, [0] * bins
    for w in ws:
        b = min(int(w["position"] * bins), bins - 1)
        total[b] += 1
        nudged[b] += w["source"] == NUDGE
    return [
        {
            "bin": b,
            "from": b / bins,
            "to": (b + 1) / bins,
            "words": total[b],
            "nudged": nudged[b],
            "nudged_share": nudged[b] / total[b] if total[b] else 0.0,
        }
        for b in range(bins)
    ]


def top_nudged(ws: Sequence[dict], n: int = 15) -> list[tuple[str, int]]:
    """The `n` most frequent nudged words."""
    return Counter(w["word"] for w in ws if w["source"] == NUDGE).most_common(n)


def gamma_row(config: dict, summary: dict) -> dict:
    """One point of the gamma trade-off from a nudging run's config and summary (a nudging run:
    `nudging/accuracy`; a nudged eval: `eval/pass@1`)."""
    decoder = config.get("decoder") or config.get("pipeline", {}).get("decoder") or {}
    accuracy = summary.get("nudging/accuracy", summary.get("eval/pass@1"))
    return {
        "gamma": float(decoder["gamma"]),
        "accuracy": accuracy,
        "nudge_token_share": summary.get("nudging/nudge_token_share"),
        "base_only": summary.get("base_only/accuracy"),
        "nudger_only": summary.get("nudger_only/accuracy"),
    }


def gamma_table(points: Iterable[tuple[dict, dict]]) -> list[dict]:
    """Gamma trade-off rows from `(config, summary)` pairs, sorted by gamma."""
    return sorted((gamma_row(c, s) for c, s in points), key=lambda r: r["gamma"])
