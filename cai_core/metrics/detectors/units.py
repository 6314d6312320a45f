"""Units: the sentences of a text (one opaque unit per non-prose line), and verse paragraphs."""
from __future__ import annotations

from cai_core.metrics.detectors.markdown import BLANK, PROSE, _Lines, _SpanSet
from cai_core.metrics.detectors.sentences import (
    _ALNUM_RE,
    _CLOSERS,
    _TERMINATORS,
    closing_kind,
    sentence_ends,
    sentence_key,
)


class _Units:
    """The sentences of a text as parallel lists (cheap to build, nothing for the garbage collector).

    Every non-blank line gives units: a prose line one per sentence, any other line one opaque
    unit (``ok`` False, empty key) that the sentence rules treat as a barrier.
    """

    __slots__ = ("start", "end", "line", "key", "ok", "_kind", "_kind_of_key")

    def __init__(self) -> None:
        self.start: list[int] = []
        self.end: list[int] = []
        self.line: list[int] = []
        self.key: list[str] = []
        self.ok: list[bool] = []
        self._kind: list[object] = []
        self._kind_of_key: dict[str, str | None] = {}

    def __len__(self) -> int:
        return len(self.start)

    def words(self, i: int) -> int:
        key = self.key[i]
        return key.count(" ") + 1 if key else 0

    def kind_of_key(self, key: str) -> str | None:
        """Closing kind of a sentence key, computed once per distinct key."""
        k = self._kind_of_key.get(key, _UNKNOWN)
        if k is _UNKNOWN:
            k = self._kind_of_key[key] = closing_kind(key)
        return k  # type: ignore[return-value]

    def kind(self, i: int) -> str | None:
        """Closing pleasantry / sign-off kind of unit i, or None (also for units the rules skip)."""
        k = self._kind[i]
        if k is _UNKNOWN:
            key = self.key[i]
            if self.ok[i] and key:
                k = self._kind_of_key.get(key, _UNKNOWN)
                if k is _UNKNOWN:
                    k = self._kind_of_key[key] = closing_kind(key)
            else:
                k = None
            self._kind[i] = k
        return k  # type: ignore[return-value]


_UNKNOWN = object()


def _collect_units(masked: str, lines: _Lines, verse: set[int], quotes: "_SpanSet") -> _Units:
    units = _Units()
    starts, ends, line_of, keys, oks = units.start, units.end, units.line, units.key, units.ok
    key_cache: dict[str, str] = {}
    has_quotes = bool(quotes)
    line_cache: dict[str, tuple] = {}  # prose line -> its units as (offset, length, key); loops repeat lines
    for index, (base, end, kind, para) in enumerate(zip(lines.start, lines.end, lines.kind, lines.para)):
        if kind == BLANK:
            continue
        seg = masked[base:end]
        if kind != PROSE or para in verse:  # one opaque unit: a barrier for the sentence rules
            starts.append(base + len(seg) - len(seg.lstrip()))
            ends.append(base + len(seg.rstrip()))
            line_of.append(index)
            keys.append("")
            oks.append(False)
            continue
        found = line_cache.get(seg) if len(seg) <= 240 else None
        if found is None:
            found = []
            bounds = sentence_ends(seg)
            if not bounds or bounds[-1] < len(seg):
                bounds.append(len(seg))
            pos = 0
            for b in bounds:
                piece = seg[pos:b]
                raw = piece.strip()
                if raw:
                    key = key_cache.get(raw)
                    if key is None:
                        key = sentence_key(raw)
                        if key and not key[0].isalnum() and not _ALNUM_RE.search(key):
                            key = ""  # punctuation or markup only: never a sentence
                        key_cache[raw] = key
                    found.append((pos + len(piece) - len(piece.lstrip()), len(raw), key))
                pos = b
            found = tuple(found)
            if len(seg) <= 240:  # short lines are the ones that loop; long ones rarely repeat whole
                line_cache[seg] = found
        for offset, length, key in found:
            start = base + offset
            starts.append(start)
            ends.append(start + length)
            line_of.append(index)
            keys.append(key)
            oks.append(not (has_quotes and quotes.overlaps(start, start + length)))
    units._kind = [_UNKNOWN] * len(starts)
    return units


def _verse_paragraphs(text: str, lines: _Lines) -> set[int]:
    """Prose paragraphs that read as verse: three or more short lines (two when the text has a
    longer stanza), mostly distinct, at least half of them without a sentence-final mark, and
    less than half of them closing pleasantries or sign-offs."""
    runs: list[tuple[int, int]] = []  # (first line, last line + 1) of each prose paragraph of 2+ lines
    para = lines.para
    i, n = 0, len(para)
    while i < n:
        if para[i] < 0:
            i += 1
            continue
        j = i
        while j + 1 < n and para[j + 1] == para[i]:
            j += 1
        if j > i:
            runs.append((i, j + 1))
        i = j + 1

    def reads_as_verse(first: int, stop: int, min_lines: int) -> bool:
        count = stop - first
        if count < min_lines:
            return False
        texts = [text[s:e].strip() for s, e in zip(lines.start[first:stop], lines.end[first:stop])]
        if max(map(len, texts)) > 80:
            return False
        if len(set(texts)) < 0.6 * count:
            return False
        keys = list(map(sentence_key, texts))
        if len(set(keys)) < 0.6 * count:
            return False
        if 2 * sum(closing_kind(k) is not None for k in keys) >= count:
            return False  # a block of pleasantries and sign-offs, not a poem
        open_lines = sum(1 for t in texts if t[-1] not in _TERMINATORS and t[-1] not in _CLOSERS)
        return 2 * open_lines >= count

    verse = {para[a] for a, b in runs if reads_as_verse(a, b, 3)}
    if verse:  # a poem's two-line stanzas are verse too
        verse |= {para[a] for a, b in runs if reads_as_verse(a, b, 2)}
    return verse
