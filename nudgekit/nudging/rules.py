"""The nudging algorithm's decisions as pure functions on text and probabilities.

Both decoders (the chunked reference over any engine and the cached in-process one) make every
decision through these functions, so they can only differ in *what the models compute*, never in
how it is interpreted. Everything here follows `utils.py:completion_with_nudging` of the
reference implementation (github fywalter/nudging); the departures are named where they occur:

- words are split on single spaces after the draft's leading spaces are set aside, so a double
  space makes an empty word, which is never probed (as in the reference);
- the base model's end-of-sequence token at a probe never matches a word by the prefix rule
  (its text is empty); the reference would crash on an empty probe completion;
- `trim_repeated_tail` scans every suffix length instead of the reference's binary search (which
  can miss the longest repeat because "has a repeated suffix of length L" is not monotone in L).
"""

from __future__ import annotations

from dataclasses import dataclass

REPEAT_MIN_CHARS = 30  # shortest repeated tail the final trim removes (reference value)
REPETITION_MIN_WORDS = 5  # a base chunk is a repetition only when longer than this (reference)
REPEATED_ROUNDS_STOP = 3  # identical nudging words this many extra rounds in a row -> stop


@dataclass(frozen=True)
class Draft:
    """A nudging draft cut into words: `prefix` (leading spaces) + words joined by single spaces."""

    prefix: str
    words: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Draft:
        """Split `text` on spaces after setting its leading spaces aside."""
        body = text.lstrip(" ")
        return cls(prefix=text[: len(text) - len(body)], words=tuple(body.split(" ")))

    def probe_points(self) -> list[int]:
        """Word indices `j` whose boundary (text before word `j`) the base model is probed at.

        The first word is always accepted, so probing starts before word 1; a boundary before an
        empty word (a run of spaces) is skipped; the last word is never accepted without a
        takeover, so the base is probed before it but not after it.
        """
        return [j for j in range(1, len(self.words)) if self.words[j]]

    def text_before(self, j: int) -> str:
        """The draft text up to (not including) the space before word `j`."""
        return self.prefix + " ".join(self.words[:j])

    def next_word(self, j: int) -> str:
        """Word `j` with the space that separates it from the text before it."""
        return " " + self.words[j]

    def accepted(self, takeover: int | None) -> str:
        """The nudging text kept this round.

        Args:
            takeover: the word index where the base took over, or None when it never did.

        Returns:
            The text before the takeover word; without a takeover, the draft minus its last word
            (a one-word draft is kept whole).
        """
        if takeover is not None:
            return self.text_before(takeover)
        if len(self.words) == 1:
            return self.text_before(1)
        return self.text_before(len(self.words) - 1)


def base_takes_over(next_word: str, token_text: str, top1_prob: float, gamma: float) -> bool:
    """Whether the base model takes over at a word boundary.

    Args:
        next_word: the draft's next word, with its leading space.
        token_text: the text of the base model's token at the boundary (greedy, or sampled);
            "" for its end-of-sequence token.
        top1_prob: the base model's top-1 probability there.
        gamma: the threshold.

    Returns:
        True when the base is confident (top-1 >= gamma) or its token starts the draft's next
        word (so it agrees with the nudging model anyway).
    """
    if token_text and next_word.startswith(token_text):
        return True
    return top1_prob >= gamma


def takeover_decided(
    word_start: str, word_complete: bool, token_text: str, top1_prob: float, gamma: float
) -> bool | None:
    """`base_takes_over` while the draft's next word may still be growing.

    Args:
        word_start: the next word as far as the draft has written it (with its leading space).
        word_complete: no more characters can join it (a space followed, or the draft ended).
        token_text, top1_prob, gamma: as in `base_takes_over`.

    Returns:
        The decision once no continuation of `word_start` can change it, else None.
    """
    if top1_prob >= gamma:
        return True
    if not token_text:
        return False
    if word_complete or len(word_start) >= len(token_text):
        return word_start.startswith(token_text)
    return None if token_text.startswith(word_start) else False


def first_uncertain(top1_probs: list[float], gamma: float) -> int | None:
    """Index of the first token whose top-1 probability is below `gamma` (None: all confident)."""
    for i, p in enumerate(top1_probs):
        if p < gamma:
            return i
    return None


def is_repetition(new_text: str, context: str, min_words: int = REPETITION_MIN_WORDS) -> bool:
    """A base chunk that is long (> `min_words` space-separated words) and already in `context`."""
    return len(new_text.split(" ")) > min_words and new_text in context


@dataclass(frozen=True)
class RepeatState:
    """The nudging words of the previous round and how often they repeated since."""

    last: str = ""
    count: int = 0

    def update(self, words: str) -> tuple[RepeatState, bool]:
        """Record this round's nudging words; True means stop (repeated too often), and then the
        words are not emitted."""
        if words == self.last:
            count = self.count + 1
            return RepeatState(words, count), count >= REPEATED_ROUNDS_STOP
        return RepeatState(words, 0), False


def repeated_suffix_length(text: str, min_chars: int = REPEAT_MIN_CHARS) -> int:
    """Length of the longest suffix (>= `min_chars`) that occurs twice in a row at the end."""
    for length in range(len(text) // 2, min_chars - 1, -1):
        if text[-length:] == text[-2 * length : -length]:
            return length
    return 0


def trim_repeated_tail(text: str, min_chars: int = REPEAT_MIN_CHARS) -> tuple[int, int]:
    """Where the final output keeps its text: `text.strip()` minus repeated tails.

    Returns:
        `(start, end)` offsets into `text`; the output is `text[start:end]`.
    """
    start = len(text) - len(text.lstrip())
    end = max(start, len(text.rstrip()))
    while True:  # the reference strips once, before trimming (a trimmed tail may end in space)
        cut = repeated_suffix_length(text[start:end], min_chars)
        if not cut:
            return start, end
        end -= cut


@dataclass(frozen=True)
class Chunk:
    """Up to K tokens one model generated after some text.

    Args:
        pieces: the text of each generated token (end-of-sequence excluded).
        probs: the model's top-1 probability at each generated position; one longer than
            `pieces` when the chunk ended with end-of-sequence (its position included).
        eos: the chunk ended with the model's end-of-sequence token.
    """

    pieces: tuple[str, ...]
    probs: tuple[float, ...]
    eos: bool

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def starts_with_eos(self) -> bool:
        return self.eos and not self.pieces

    @property
    def first_text(self) -> str:
        """The first token's text ("" when it is end-of-sequence)."""
        return self.pieces[0] if self.pieces else ""

    def tail(self) -> Chunk:
        """The chunk without its first token."""
        return Chunk(self.pieces[1:], self.probs[1:], self.eos)

    def kept(self, gamma: float) -> tuple[str, bool]:
        """The text before the first token below `gamma`, and whether there was one."""
        cut = first_uncertain(list(self.probs[: len(self.pieces)]), gamma)
        return "".join(self.pieces[:cut]), cut is not None
