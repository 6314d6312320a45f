"""Train/eval overlap: which evaluation prompts also occur among the training prompts, exactly or nearly.

Texts are normalised (Unicode NFKC, case-folded, every run of non-alphanumeric characters one space), then cut
into word n-grams (`n` words; a text shorter than `n` words is one gram). An evaluation prompt overlaps a
training prompt when the normalised texts are equal (``exact``) or the Jaccard similarity of their n-gram sets
is at least `threshold` (``near``). The search is exact, not sampled: a prefix filter (grams ordered rarest
first; two sets with Jaccard >= t share a gram among the first |x| - ceil(t|x|) + 1 of either) finds the
candidates and each is verified, so it scales to large training sets without MinHash's false negatives.
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalise(text: str) -> str:
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def grams(text: str, n: int) -> frozenset[str]:
    """The word n-grams of a normalised text (one gram when it is shorter than n words)."""
    words = text.split()
    if len(words) <= n:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


@dataclass(frozen=True)
class Match:
    #: Id of the training prompt it overlaps.
    train_id: str
    #: Jaccard similarity of the n-gram sets (1.0 for an exact match).
    similarity: float
    #: exact | near
    kind: str


class OverlapIndex:
    """The training prompts, indexed for `match`."""

    def __init__(self, train: Iterable[tuple[str, str]], threshold: float = 0.8, n: int = 3):
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold, self.n = threshold, n
        self._exact: dict[str, str] = {}
        docs: list[tuple[str, frozenset[str]]] = []
        for train_id, text in train:
            norm = normalise(text)
            self._exact.setdefault(norm, train_id)
            docs.append((train_id, grams(norm, n)))
        self._freq = Counter(g for _, gs in docs for g in gs)
        self._docs = docs
        self._index: dict[str, list[int]] = defaultdict(list)
        for i, (_, gs) in enumerate(docs):
            for g in self._prefix(gs):
                self._index[g].append(i)

    def __len__(self) -> int:
        return len(self._docs)

    def _prefix(self, gs: frozenset[str]) -> list[str]:
        ordered = sorted(gs, key=lambda g: (self._freq.get(g, 0), g))
        keep = len(ordered) - math.ceil(self.threshold * len(ordered) - 1e-9) + 1
        return ordered[:max(1, keep)]

    def match(self, text: str) -> Match | None:
        """The training prompt `text` overlaps (exact first, else the most similar near one), or None."""
        norm = normalise(text)
        if norm in self._exact:
            return Match(self._exact[norm], 1.0, "exact")
        gs = grams(norm, self.n)
        if not gs:
            return None
        best: tuple[float, str] | None = None
        seen: set[int] = set()
        for g in self._prefix(gs):
            for i in self._index.get(g, ()):
                if i in seen:
                    continue
                seen.add(i)
                train_id, other = self._docs[i]
                if not self.threshold * len(other) <= len(gs) * (1 + 1e-9) or \
                        not len(gs) <= len(other) / self.threshold * (1 + 1e-9):
                    continue
                sim = jaccard(gs, other)
                if sim >= self.threshold - 1e-12 and (best is None or (sim, train_id) > best):
                    best = (sim, train_id)
        if best is None:
            return None
        return Match(best[1], round(best[0], 4), "near")


__all__ = ["Match", "OverlapIndex", "grams", "jaccard", "normalise"]
