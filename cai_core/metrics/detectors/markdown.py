"""Markdown structure: the kind of every line, and the spans no rule may edit."""
from __future__ import annotations

import operator
import re
from bisect import bisect_right
from itertools import accumulate

_FENCE_RE = re.compile(r"[ ]{0,3}(`{3,}|~{3,})")
_LIST_RE = re.compile(r"[ \t]*(?:[-*+\u2022\u25e6]|\d{1,3}[.)]|[a-z][.)])[ \t]+\S")
_HEADING_RE = re.compile(r"[ ]{0,3}#{1,6}(?:[ \t]|$)")
_RULE_RE = re.compile(r"[ ]{0,3}(?:[-=_*][ \t]*){3,}$")
_INLINE_CODE_RE = re.compile(r"`+[^`\n]+`+")
_URL_RES = (("://", re.compile(r"\b(?:https?|ftp)://\S+")), ("www.", re.compile(r"www\.\S+")),
            ("@", re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")))
_QUOTE_RE = re.compile("\"[^\"\n]{1,600}\"|\u201c[^\u201d\n]{1,600}\u201d|\u00ab[^\u00bb\n]{1,600}\u00bb"
                       "|\u201e[^\u201c\u201d\n]{1,600}[\u201c\u201d]|\u300c[^\u300d\n]{1,600}\u300d|\u300e[^\u300f\n]{1,600}\u300f")

PROSE, LIST, HEADING, QUOTE, TABLE, CODE, RULE, BLANK = "prose", "list", "heading", "quote", "table", "code", "rule", "blank"
#: Line kinds no rule ever edits.
_FROZEN_KINDS = frozenset({TABLE, CODE})


class _Lines:
    """The lines of a text as parallel lists: [start, end) without the newline, markdown kind,
    and prose paragraph index (-1 when the line is not prose)."""

    __slots__ = ("start", "end", "kind", "para")

    def __init__(self, start: list[int], end: list[int], kind: list[str], para: list[int]):
        self.start, self.end, self.kind, self.para = start, end, kind, para

    def __len__(self) -> int:
        return len(self.start)


# Lines that start with none of these (and hold no "|") are prose or blank; only the others need a look.
_SPECIAL_FIRST = frozenset(" \t-*+\u2022\u25e6#>|=_~`0123456789abcdefghijklmnopqrstuvwxyz")


def _line_kind(raw: str) -> str:
    """Kind of one line outside fenced code (fences are handled by the caller)."""
    stripped = raw.strip()
    if not stripped:
        return BLANK
    first = stripped[0]
    if raw[:1] == "\t" or raw[:4] == "    ":
        return LIST if _LIST_RE.match(raw) else CODE
    if first == "|" or (raw.count("|") >= 2 and "|" in stripped[1:-1]):
        return TABLE
    if first == ">":
        return QUOTE
    if first == "#" and _HEADING_RE.match(raw):
        return HEADING
    if first in "-=_*" and _RULE_RE.match(raw):
        return RULE
    if (first in "-*+\u2022\u25e6" or first.isdigit() or "a" <= first <= "z") and _LIST_RE.match(raw):
        return LIST
    return PROSE


def _classify_lines(text: str) -> _Lines:
    raw_lines = text.split("\n")
    n = len(raw_lines)
    lens = list(map(len, raw_lines))
    starts = list(accumulate((length + 1 for length in lens[:-1]), initial=0))
    ends = list(map(operator.add, starts, lens))
    kinds = [PROSE] * n
    special = _SPECIAL_FIRST
    fence: str | None = None
    fence_at = 0
    # lines that may be something else than prose (a line of odd whitespace alone is blank, not prose)
    maybe = [i for i, raw in enumerate(raw_lines) if not raw or raw[0] in special or "|" in raw or raw[0].isspace()]
    for i in maybe:
        raw = raw_lines[i]
        if fence is not None:
            stripped = raw.strip()
            if stripped.startswith(fence) and not stripped.lstrip(fence[0]):
                kinds[fence_at:i + 1] = [CODE] * (i + 1 - fence_at)
                fence = None
            continue
        if raw[:1] in "`~ " and (m := _FENCE_RE.match(raw)):
            marker = m.group(1)
            fence, fence_at = marker[0] * len(marker), i
            continue
        kinds[i] = _line_kind(raw)
    if fence is not None:
        kinds[fence_at:] = [CODE] * (n - fence_at)
    para = [-1] * n
    p = -1
    prev_prose = False
    for i, kind in enumerate(kinds):
        if kind is PROSE:
            if not prev_prose:
                p += 1
            para[i] = p
            prev_prose = True
        else:
            prev_prose = False
    return _Lines(starts, ends, kinds, para)


def _frozen_spans(text: str, lines: _Lines) -> list[tuple[int, int]]:
    """Character ranges no rule may edit: code and table lines, inline code, URLs."""
    spans = [(s, e) for s, e, k in zip(lines.start, lines.end, lines.kind) if k in _FROZEN_KINDS]
    if "`" in text:
        spans += [m.span() for m in _INLINE_CODE_RE.finditer(text)]
    for trigger, pattern in _URL_RES:
        if trigger in text:
            spans += [m.span() for m in pattern.finditer(text)]
    spans.sort()
    return spans


class _SpanSet:
    """Sorted, merged ranges with a fast overlap test."""

    def __init__(self, spans: list[tuple[int, int]]):
        merged: list[list[int]] = []
        for s, e in sorted(spans):
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        self.starts = [s for s, _ in merged]
        self.ends = [e for _, e in merged]

    def __bool__(self) -> bool:
        return bool(self.starts)

    def overlaps(self, s: int, e: int) -> bool:
        i = bisect_right(self.starts, e - 1) - 1
        return i >= 0 and self.ends[i] > s


def _merge_runs(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Join spans separated only by spaces or tabs into runs."""
    runs: list[list[int]] = []
    for s, e in spans:
        if runs and (s <= runs[-1][1] or not text[runs[-1][1]:s].strip(" \t")):
            runs[-1][1] = max(runs[-1][1], e)
        else:
            runs.append([s, e])
    return [(s, e) for s, e in runs]
