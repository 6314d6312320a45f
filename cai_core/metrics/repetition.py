"""Collapse metrics: how much a set of responses repeats itself.

All metrics are deterministic and reference-free, so they run anywhere in
microseconds per response and give a before/after handle on collapse.

Definitions (the numbers other stages compare against depend on these exact
choices, so change them only together with the tests):

* **tokens** - the matches of ``\\w+|[^\\w\\s]`` on the lower-cased text: a run
  of word characters is one token, and every other non-space code point
  (a punctuation mark, an emoji, a symbol) is a token on its own.
* **rep-n** (n = 2, 3, 4) - for one response, ``1 - unique n-grams / total
  n-grams``; averaged over the responses that have at least one n-gram.
  Higher means more looping.
* **distinct-n** (n = 1, 2) - ``unique / total`` n-grams pooled over the whole
  set. Lower means less diverse.
* **tail-loop rate** - the share of non-empty responses (anything besides
  whitespace) whose last sentence also occurs earlier in the same response, or
  whose last 4 tokens also occur earlier in it as a 4-gram. Sentences are cut
  after a run of ``.``, ``!``, ``?`` and at every newline, lower-cased and with
  whitespace collapsed; empty pieces are ignored.

A metric with nothing to measure (no texts, no response long enough for an
n-gram) is 0.0, never NaN.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import islice

__all__ = ["tokens", "sentences", "ngrams", "is_tail_loop", "collapse_metrics", "METRIC_KEYS"]

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
# Cut after a run of terminators (so "..." or "?!" end one sentence, not three) or at a newline.
_SENTENCE_CUT_RE = re.compile(r"(?<=[.!?])(?![.!?])|\n")

#: Keys of the dict returned by `collapse_metrics`, in a stable order.
METRIC_KEYS = ("rep_2", "rep_3", "rep_4", "distinct_1", "distinct_2", "tail_loop_rate", "n")


def _check(text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}")
    return text


def tokens(text: str) -> list[str]:
    """Word runs and single non-space symbols of the lower-cased text."""
    return TOKEN_RE.findall(_check(text).lower())


def sentences(text: str) -> list[str]:
    """Non-empty sentences of `text`, lower-cased with whitespace collapsed."""
    pieces = _SENTENCE_CUT_RE.split(_check(text).lower())
    return [s for s in (" ".join(p.split()) for p in pieces) if s]


def ngrams(toks: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """All contiguous n-grams of `toks` (empty when there are fewer than n tokens)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return list(zip(*(islice(toks, i, None) for i in range(n))))


def _gram_set(toks: list[str], n: int, stop: int) -> set[tuple[str, ...]]:
    """The distinct n-grams of `toks` that start before position `stop`."""
    return set(zip(*(islice(toks, i, stop + i) for i in range(n))))


def _last_sentence_repeats(text: str) -> bool:
    """Whether the last sentence (as `sentences` normalises it) also occurs earlier."""
    pieces = _SENTENCE_CUT_RE.split(text.lower())
    i = len(pieces) - 1
    while i >= 0 and not pieces[i].strip():
        i -= 1
    if i <= 0:
        return False
    last = " ".join(pieces[i].split())
    size = len(last)
    # normalising never lengthens a piece, so shorter pieces cannot match
    return any(len(p) >= size and " ".join(p.split()) == last for p in pieces[:i])


def is_tail_loop(text: str) -> bool:
    """True when the response ends in a sentence or 4-gram that already occurred in it."""
    if not _check(text).strip():
        return False
    if _last_sentence_repeats(text):
        return True
    toks = tokens(text)
    return len(toks) > 4 and tuple(toks[-4:]) in _gram_set(toks, 4, len(toks) - 4)


def _safe_div(a: float, b: float) -> float:
    return a / b if b else 0.0


def collapse_metrics(texts: Sequence[str]) -> dict:
    """rep-2/3/4, distinct-1/2, tail-loop rate and n (number of texts) of a set of responses."""
    if isinstance(texts, str):
        raise TypeError("collapse_metrics expects a sequence of strings, not one string")
    rep_sum = {2: 0.0, 3: 0.0, 4: 0.0}
    rep_count = {2: 0, 3: 0, 4: 0}
    pooled_total = {1: 0, 2: 0}
    pooled_unique: dict[int, set] = {1: set(), 2: set()}
    nonempty = loops = count = 0
    for text in texts:
        count += 1
        toks = tokens(text)
        m = len(toks)
        head: set = set()
        tail: tuple = ()
        for n in (2, 3, 4):
            total = m - n + 1
            if total <= 0:
                continue
            if n == 4:
                # built without the last 4-gram, so the same set answers the tail-loop question
                head = _gram_set(toks, 4, total - 1)
                tail = tuple(toks[-4:])
                unique = len(head) + (tail not in head)
            else:
                grams = _gram_set(toks, n, total)
                unique = len(grams)
                if n == 2:
                    pooled_total[2] += total
                    pooled_unique[2].update(grams)
            rep_sum[n] += 1.0 - unique / total
            rep_count[n] += 1
        pooled_total[1] += m
        pooled_unique[1].update(toks)
        if text.strip():
            nonempty += 1
            loops += _last_sentence_repeats(text) or (m > 4 and tail in head)
    return {
        "rep_2": _safe_div(rep_sum[2], rep_count[2]),
        "rep_3": _safe_div(rep_sum[3], rep_count[3]),
        "rep_4": _safe_div(rep_sum[4], rep_count[4]),
        "distinct_1": _safe_div(len(pooled_unique[1]), pooled_total[1]),
        "distinct_2": _safe_div(len(pooled_unique[2]), pooled_total[2]),
        "tail_loop_rate": _safe_div(loops, nonempty),
        "n": count,
    }
