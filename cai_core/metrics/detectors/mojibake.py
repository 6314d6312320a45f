"""Mojibake: UTF-8 text decoded as Latin-1 or cp1252 (once or more), found cheaply and repaired with ftfy.

UTF-8 writes every character beyond ASCII as a lead byte (0xC2-0xF4) and continuation bytes
(0x80-0xBF). Decoded as Latin-1 or cp1252, the lead becomes a Latin-1 letter (``Â Ã â ä å æ ç è é
ð ...``) and each continuation a sign or C1 control (``© ¨ € ™ ‚ ...``), so a lead letter right
before a continuation sign is the tell-tale: ``cafÃ©``, ``doesnâ€™t``, ``Ã¯Â»Â¿``. Correct text
almost never has one (``é»`` in ``«café»`` does; ftfy leaves it alone), so only lines with a
tell-tale go to ftfy, with every fixer off but the re-decoding. What ftfy cannot decode is debris:
``Â``/``Ã`` runs (``ÂÂ``, ``Ã‚Â``), sequences ftfy's badness test still flags, the replacement
characters it puts for lossy sequences and byte-order marks; those are removed.
"""
from __future__ import annotations

import re
from bisect import bisect_right
from functools import lru_cache

import ftfy
from ftfy.badness import is_bad

from cai_core.metrics.detectors.codes import MOJIBAKE, Finding
from cai_core.metrics.detectors.markdown import _SpanSet

# The Latin-1 and cp1252 readings of the UTF-8 continuation bytes 0x80-0xBF.
_CONTINUATION = "".join(sorted(set(bytes(range(0x80, 0xC0)).decode("latin-1"))
                               | {bytes([b]).decode("cp1252", "ignore") for b in range(0x80, 0xC0)} - {""}))
_CONT = re.escape(_CONTINUATION)
_LEAD = "\xc2-\xf4"
# A tell-tale: a lead letter before a continuation sign, Â/Ã twice, or Â/Ã not followed by a letter
# (Ã is à whose no-break space became a space; Â before a space is a no-break space).
_TELLTALE_RE = re.compile(f"[{_LEAD}][{_CONT}]|[\xc2\xc3](?:[\xc2\xc3]|(?![^\\W\\d_]))")
# A cheaper test first, on a text's non-ASCII characters alone (`_rare_chars`): any Â/Ã there counts.
_RARE_TELLTALE_RE = re.compile(f"[{_LEAD}][{_CONT}]|[\xc2\xc3]")
# Debris left after decoding: Â or Ã before more of them or before continuation signs.
_JUNK_RE = re.compile(f"[\xc2\xc3][\xc2\xc3{_CONT}]+")
# Runs of byte-like characters that ftfy's badness test may still flag.
_BYTES_RUN_RE = re.compile(f"[{_LEAD}{_CONT}]{{2,}}")
_DEBRIS_CHARS = str.maketrans("", "", "\ufeff\ufffd")  # a decoded byte-order mark; ftfy's mark for lossy bytes

_FIXER = ftfy.TextFixerConfig(
    unescape_html=False, remove_terminal_escapes=False, fix_encoding=True, restore_byte_a0=True,
    replace_lossy_sequences=True, decode_inconsistent_utf8=True, fix_c1_controls=False,
    fix_latin_ligatures=False, fix_character_width=False, uncurl_quotes=False, fix_line_breaks=False,
    fix_surrogates=False, remove_control_chars=False, normalization=None, explain=False)
_TOKEN_RE = re.compile(r"\s+|\S+")
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]")
_WORD_REST_RE = re.compile(r"\S*\s*")
_RESYNC_WORDS = 12
# Longer stretches of a line go to ftfy (and the word alignment) in pieces of about this size.
_PIECE_CHARS = 4096


def may_have_mojibake(text: str, rare: str) -> bool:
    """Whether `text` (whose non-ASCII characters, in order, are `rare`) has a tell-tale of mojibake."""
    return bool(rare) and _RARE_TELLTALE_RE.search(rare) is not None and _TELLTALE_RE.search(text) is not None


def _junk_spans(s: str) -> list[tuple[int, int]]:
    """Ranges of `s` (already decoded as far as it goes) that are byte debris, not text."""
    spans = [m.span() for m in _JUNK_RE.finditer(s)]
    for m in _BYTES_RUN_RE.finditer(s):
        run = m.group()
        if _TELLTALE_RE.search(run) and is_bad(run):
            spans.append(m.span())
    return spans


def _without(s: str, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return s
    keep = bytearray(b"\x01") * len(s)
    for a, b in spans:
        keep[a:b] = bytes(b - a)
    return "".join(ch for ch, k in zip(s, keep) if k)


def _changes(seg: str, fixed: str):
    """(start, end, new) edits that turn `seg` into `fixed`, aligned word by word.

    ftfy's changes are local, so a greedy walk that re-synchronises on the nearest equal pair of
    words (looking `_RESYNC_WORDS` ahead) finds them in linear time; past that it takes the rest
    of the stretch as one change (still exact, only coarser).
    """
    ta, tb = _TOKEN_RE.findall(seg), _TOKEN_RE.findall(fixed)
    starts_a, starts_b = _offsets(ta), _offsets(tb)
    i = j = 0
    while i < len(ta) or j < len(tb):
        if i < len(ta) and j < len(tb) and ta[i] == tb[j]:
            i, j = i + 1, j + 1
            continue
        x, y = _resync(ta, tb, i, j)
        a, b, c, d = starts_a[i], starts_a[i + x], starts_b[j], starts_b[j + y]
        while a < b and c < d and seg[a] == fixed[c]:
            a, c = a + 1, c + 1
        while a < b and c < d and seg[b - 1] == fixed[d - 1]:
            b, d = b - 1, d - 1
        if a < b:
            yield a, b, fixed[c:d]
        i, j = i + x, j + y


def _resync(ta: list[str], tb: list[str], i: int, j: int) -> tuple[int, int]:
    """Tokens (x, y) to skip in `ta` from `i` and in `tb` from `j` to the nearest equal pair of
    words (spaces are too common to align on), looking `_RESYNC_WORDS` ahead in each."""
    first_y: dict[str, int] = {}
    for y in range(min(_RESYNC_WORDS + 1, len(tb) - j)):
        first_y.setdefault(tb[j + y], y)
    best = None
    for x in range(min(_RESYNC_WORDS + 1, len(ta) - i)):
        token = ta[i + x]
        y = first_y.get(token)
        if y is None or x + y == 0 or token.isspace():
            continue
        if best is None or x + y < best[0] + best[1]:
            best = (x, y)
    return best if best is not None else (len(ta) - i, len(tb) - j)


def _offsets(tokens: list[str]) -> list[int]:
    out = [0]
    for t in tokens:
        out.append(out[-1] + len(t))
    return out


def _lone_capital(seg: str, a: int, b: int) -> bool:
    """Whether `seg[a:b]` is a capital Â or Ã standing alone as a word, before a single space.

    ftfy reads it as à (or a no-break space) whose no-break space became a space; with no
    doubled space left to show that, a lone capital (a list of letters, a Portuguese initial)
    is as likely, and correct text is never changed on a guess.
    """
    if seg[a:b].rstrip(" ") not in ("\xc2", "\xc3"):
        return False
    before = seg[a - 1] if a else " "
    after = seg[a + 1:a + 3]
    return not before.isalpha() and after[:1] in (" ", "") and after[1:2] != " "


def _repairs(seg: str) -> list[tuple[int, int, str, str]]:
    """(start, end, replacement, detail) of the mojibake edits in `seg` (one stretch of a line).

    ftfy's cost grows with the length of what it reads, and only words with non-ASCII characters
    can be garbled, so it reads those alone, strung together (with the whitespace after each, which
    a lost no-break space may be): they carry all the evidence its tests weigh.
    """
    windows = _windows(seg)
    compact = "".join(seg[a:b] for a, b in windows)
    starts = _offsets([seg[a:b] for a, b in windows])
    out = []
    for a, b, new, detail in _compact_repairs(compact):
        k = bisect_right(starts, a) - 1
        k_end = bisect_right(starts, b - 1) - 1
        if any(windows[i][1] != windows[i + 1][0] for i in range(k, k_end)):
            return list(_compact_repairs(seg))  # an edit spans a gap between the words: read it all
        out.append((windows[k][0] + a - starts[k], windows[k_end][0] + b - starts[k_end], new, detail))
    return out


def _windows(seg: str) -> list[tuple[int, int]]:
    """Ranges of `seg`'s words with a non-ASCII character, each with the whitespace after it, merged."""
    out: list[list[int]] = []
    pos = 0
    while (m := _NON_ASCII_RE.search(seg, pos)) is not None:
        a = p = m.start()
        while a > pos and not seg[a - 1].isspace():
            a -= 1
        pos = _WORD_REST_RE.match(seg, p + 1).end()
        if out and out[-1][1] == a:
            out[-1][1] = pos
        else:
            out.append([a, pos])
    return [(a, b) for a, b in out]


@lru_cache(maxsize=4096)  # a looping text repeats its garbled words
def _compact_repairs(seg: str) -> tuple[tuple[int, int, str, str], ...]:
    fixed = ftfy.fix_encoding(seg, _FIXER).translate(_DEBRIS_CHARS)
    fixed = _without(fixed, _junk_spans(fixed))
    if fixed == seg:
        return ()
    out = []
    for a, b, new in _changes(seg, fixed):
        old = seg[a:b]
        if _lone_capital(seg, a, b):
            continue
        if new.isspace() and (a == 0 or b == len(seg) or seg[a - 1].isspace() or seg[b].isspace()):
            new = ""  # a no-break space decoded next to a space: the seam needs no second one
        detail = f"mojibake {old!r} repaired as {new!r}" if new else f"mojibake {old!r} cannot be repaired: removed"
        out.append((a, b, new, detail))
    return tuple(out)


def _pieces(text: str, lo: int, hi: int):
    """`text[lo:hi]` cut into pieces of at most `_PIECE_CHARS`, at spaces after an ASCII character
    where it can be (no mojibake sequence spans such a space)."""
    while hi - lo > _PIECE_CHARS:
        cut = text.rfind(" ", lo + 1, lo + _PIECE_CHARS)
        while cut > lo and not text[cut - 1].isascii():
            cut = text.rfind(" ", lo + 1, cut)
        if cut <= lo:
            cut = lo + _PIECE_CHARS
        yield lo, cut
        lo = cut
    yield lo, hi


def mojibake_findings(text: str, frozen: _SpanSet) -> list[Finding]:
    """Mojibake repairs and removals in `text`, outside the `frozen` ranges (code, URLs), in text order.

    Each stretch of a line between frozen ranges that holds a tell-tale is decoded by ftfy on its
    own (long ones piece by piece).
    """
    out: list[Finding] = []
    done_to = 0
    for m in _TELLTALE_RE.finditer(text):
        p = m.start()
        if p < done_to or frozen.overlaps(p, m.end()):
            continue
        lo = text.rfind("\n", 0, p) + 1
        hi = text.find("\n", p)
        hi = len(text) if hi == -1 else hi
        i = bisect_right(frozen.starts, p) - 1  # narrow to the stretch between frozen ranges
        if i >= 0:
            lo = max(lo, frozen.ends[i])
        if i + 1 < len(frozen.starts):
            hi = min(hi, frozen.starts[i + 1])
        for a, b in _pieces(text, lo, hi):
            if b <= p:
                continue
            piece = text[a:b]
            if a < p or _TELLTALE_RE.search(piece):
                out += [Finding(MOJIBAKE, (a + s, a + e), detail, new) for s, e, new, detail in _repairs(piece)]
        done_to = hi
    return out
