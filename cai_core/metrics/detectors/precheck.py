"""The cheap pre-check: prove that no edit rule can fire without running the analysis."""
from __future__ import annotations

import re
from collections.abc import Callable

from cai_core.metrics.detectors.characters import _SUSPECT_RE, _ends_with_emoji, _may_have_emoticon
from cai_core.metrics.detectors.configs import DetectorConfig
from cai_core.metrics.detectors.markdown import PROSE, _classify_lines, _Lines
from cai_core.metrics.detectors.mojibake import may_have_mojibake
from cai_core.metrics.detectors.sentences import (
    _ALNUM_BYTES_RE,
    _ALNUM_RE,
    _ASCII_KEY_STRIP,
    _LOWER_CUT,
    _NON_ASCII_CUTS,
    _NON_ASCII_STRIP,
    _PLAIN_RE,
    _RUN_CHARS,
    _TERMINATOR_TO_NEWLINE,
    COMPLETE_END,
    _rare_chars,
    closing_kind,
    is_signoff,
    sentence_ends,
    sentence_key,
)


def _units_backwards(text: str, window: int = 200):
    """Sentence units of `text` from the last one back, split exactly as the full analysis splits prose.

    Only the end of a long line is scanned at first: a boundary depends on its own few characters
    only, so the boundaries inside a window are the line's; the piece before the window's first
    boundary may be cut, and the whole line is scanned only when the walk gets that far.
    """
    end = len(text)
    while end > 0:
        start = text.rfind("\n", 0, end) + 1
        seg = text[start:end]
        if seg.strip():
            lo = max(0, len(seg) - window)
            while lo and seg[lo - 1] in _RUN_CHARS:  # never start inside a terminator run
                lo -= 1
            while True:
                bounds = sentence_ends(seg, lo)
                if lo and not bounds:
                    lo = 0
                    continue
                stops = bounds if bounds and bounds[-1] == len(seg) else bounds + [len(seg)]
                for i in range(len(stops) - 1, 0, -1):
                    piece = seg[stops[i - 1]:stops[i]]
                    if piece.strip():
                        yield piece
                if lo:
                    lo = 0  # the walk needs what lies before the window: scan the whole line
                    seg = seg[:stops[0]]
                    continue
                if seg[:stops[0]].strip():
                    yield seg[:stops[0]]
                break
        end = start - 1


class _Doubt:
    """Why the pre-check could not prove a text clean (`sentences`: the sentence rules may fire on
    the text as it is), with the text's lines once computed, for the full analysis to reuse."""

    __slots__ = ("text", "sentences", "_lines")

    def __init__(self, text: str, sentences: bool = False):
        self.text, self.sentences, self._lines = text, sentences, None

    def lines(self) -> _Lines:
        if self._lines is None:
            self._lines = _classify_lines(self.text)
        return self._lines


def _precheck(text: str, cfg: DetectorConfig) -> _Doubt | None:
    """`nothing_to_fix`: None when it holds, else what the checks found out."""
    rare = _rare_chars(text.encode("utf-8", "surrogatepass"))
    if rare and _PLAIN_RE.search(rare) and (_SUSPECT_RE.search(rare) or "\ufffd" in rare or not rare.isprintable()):
        return _Doubt(text)  # control or invalid characters, emoji, other scripts, odd spaces, format characters
    if rare and may_have_mojibake(text, rare):
        return _Doubt(text)  # perhaps mojibake (its characters are all plain Latin-1 and cp1252 ones)
    if _may_have_emoticon(text):
        return _Doubt(text)
    doubt = _Doubt(text, sentences=True)
    return None if _sentences_settled(text, text, cfg, doubt.lines) else doubt


# Whitespace other than space, tab, CR and LF (what `str.split()` also splits on).
_ODD_SPACE_RE = re.compile("[\x0b\x0c\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")


def _has_odd_space(text: str) -> bool:
    return not text.isascii() and bool(_ODD_SPACE_RE.search(_rare_chars(text.encode("utf-8", "surrogatepass"))))


def _may_repeat(text: str) -> bool:
    """Whether some sentence of `text` may occur twice (False is certain, True may be wrong).

    Works on UTF-8 bytes of the lower-cased text: deletes every whitespace and key-strip character
    wherever it is (coarser than `sentence_key`, which strips them at the ends only) and cuts at
    every terminator and newline. Two sentences with equal keys then leave equal, non-empty pieces
    with a letter or digit, so a repeat can only be over-reported here, never missed.
    """
    if text.isascii():
        low = text.encode("ascii").translate(_LOWER_CUT, _ASCII_KEY_STRIP)
    else:
        # Lower-casing neither changes nor makes the non-ASCII cut and strip characters, so they can
        # go first: what is left is often ASCII (dashes and curly quotes were all), cheap to lower-case.
        data = text.encode("utf-8", "surrogatepass")
        present = set(_rare_chars(data))
        raw = _cut_non_ascii(data, present)
        if raw.isascii():
            low = raw.translate(_LOWER_CUT, _ASCII_KEY_STRIP)
        else:
            low = _cut_non_ascii(text.lower().encode("utf-8", "surrogatepass"), present)
            low = low.translate(_TERMINATOR_TO_NEWLINE, _ASCII_KEY_STRIP)
    keys = list(filter(None, low.split(b"\n")))
    if len(set(keys)) == len(keys):
        return False
    seen: set[bytes] = set()
    for k in keys:
        if k in seen and _ALNUM_BYTES_RE.search(k):
            return True
        seen.add(k)
    return False


def _cut_non_ascii(data: bytes, present: set[str]) -> bytes:
    """UTF-8 `data` (holding no non-ASCII characters but `present`) with the non-ASCII terminators
    made newlines and the other key-strip characters deleted."""
    for ch in present:
        if ch in _NON_ASCII_CUTS:
            data = data.replace(ch.encode(), b"\n")
        elif ch in _NON_ASCII_STRIP:
            data = data.replace(ch.encode(), b"")
    return data


def _sentences_settled(text: str, masked: str, cfg: DetectorConfig, lines_of: Callable[[], _Lines]) -> bool:
    """True only when the sentence rules certainly find nothing in `masked` (`text` with the
    character-level findings blanked out); `masked` must hold no whitespace but space, tab, CR, LF.

    Only prose lines hold sentences the rules compare, so when a repeat shows up in the whole
    text, the check is redone on the prose lines alone before giving up (`lines_of()` gives
    `text`'s lines).
    """
    tail = text.rstrip()
    if not tail:
        return True
    if tail[-1] not in COMPLETE_END and not _ends_with_emoji(tail):
        return False
    if _may_repeat(masked):
        # perhaps only code fences, list items or table rows repeat: look at prose lines alone
        lines = lines_of()
        prose = "\n".join([masked[a:b] for a, b, k in zip(lines.start, lines.end, lines.kind) if k is PROSE])
        if _may_repeat(prose):
            return False
    # The closing rules, on a walk from the end that goes at least as far back as the closing block
    # (a sign-off followed by another kind of closing is left to the analysis):
    # it stops at a long non-closing sentence, or at a short one (a possible name under a sign-off)
    # whose preceding sentence is not a sign-off ending in a comma.
    kinds: set[str] = set()
    signoffs = 0
    name_pending = False
    closing_after = False  # a closing other than a sign-off comes later in the text
    for piece in _units_backwards(masked):
        key = sentence_key(piece)
        has_words = bool(key) and (key[0].isalnum() or bool(_ALNUM_RE.search(key)))
        kind = closing_kind(key) if has_words else None
        if name_pending:
            if kind is None or not is_signoff(kind) or not piece.rstrip().endswith(","):
                break
            name_pending = False
        if kind is None:
            if not has_words:
                continue
            if key.count(" ") < 4:
                name_pending = True
                continue
            break
        if kind in kinds:
            return False
        kinds.add(kind)
        signoff = is_signoff(kind)
        if signoff and closing_after and cfg.max_signoffs:
            return False  # closings after a kept sign-off count toward the limit
        closing_after = closing_after or not signoff
        signoffs += signoff
        if signoffs > cfg.max_signoffs:
            return False
    return True
