"""Degeneration detectors: what is wrong with a generated text, where, and why.

`detect(text, prompt=None, cfg=DetectorConfig())` returns a list of `Finding`
(code, span, detail) in text order. The code is a stable reason code from the
table below; the span is the ``(start, end)`` character range a cleaner would
remove, or None when the finding is about the text as a whole (nothing to
cut). Consecutive sentences flagged with the same code are one finding whose
span covers the run. The rule cleaner (`cai_core.cleaning.rule`) removes
exactly the spans found here and nothing else.

==========================  ==================================================
code                        meaning (span)
==========================  ==================================================
``repeated_sentence``       a block of prose sentences repeated back to back
                            (a loop; the block has `min_loop_words` words or
                            more), a sentence of `min_repeat_words` words or
                            more that repeats an earlier one where the text
                            ends in such repeats (a looping tail), or a
                            sentence of `min_far_repeat_words` words or more
                            repeated anywhere; span: the later copies
``repeated_pleasantry``     a closing pleasantry ("I hope this helps!", "Let
                            me know if you have any other questions.", "Have a
                            great day!") said before: word for word anywhere,
                            or of the same kind within the closing block (the
                            run of pleasantries and sign-offs that ends the
                            text); span: the later ones
``signoff_pileup``          more than `max_signoffs` different sign-offs in
                            the closing block ("Take care! Goodbye! Best
                            regards,"); span: the extra sign-offs (and a name
                            line under them)
``emoji``                   an emoji or an emoticon, or a run of them
                            ("😊😊😊", ":) :)"); span: the run
``foreign_script``          letters of a script that is not a target script:
                            the prompt's scripts (the text's own when there is
                            no prompt), Latin always, Greek in runs of at most
                            `max_greek_run` letters (math), and the scripts of
                            languages the prompt names; span: the stray run,
                            or None when the answer is mostly in that script
                            (a wrong-language answer is not stray characters)
``truncated_fragment``      the text stops mid-sentence (generation hit the
                            token limit): it ends on a comma or dash, a word
                            that cannot end a sentence, a prefix of an
                            earlier sentence, or an unpunctuated clause after
                            a complete sentence of its paragraph; span: the
                            fragment, or None when nothing precedes it
``invalid_char``            a lone surrogate, U+FFFD, U+FFFE/U+FFFF or a
                            control character other than tab/newline/CR (it
                            cannot be written as UTF-8 or is decoding debris);
                            span: the run
``gopher_<stat>``           a Gopher repetition statistic above its threshold
                            (`GOPHER_CODES`, see `GopherThresholds`); span:
                            None; reported only, never cleaned
==========================  ==================================================

Sentences: a prose line is cut after a run of ``. ! ? …`` (with closing quotes
or brackets) followed by a space or the end of the line, and after a CJK full
stop anywhere; a newline always ends a sentence. Sentences are compared by
`sentence_key` (lower-cased, outer punctuation stripped, whitespace collapsed).

Gopher statistics (`gopher_stats`), all in [0, 1]:

* ``dup_line_frac`` / ``dup_para_frac``: share of lines (paragraphs) that are
  copies of an earlier one; ``dup_line_chars`` / ``dup_para_chars``: share of
  their characters in such copies. Lines are stripped and empty ones dropped;
  paragraphs are separated by blank lines.
* ``top_<n>gram`` (n = 2, 3, 4): characters of the most frequent word n-gram
  (the longest of them on a tie) times its count, over all word characters (0
  when no n-gram repeats).
* ``dup_<n>gram`` (n = 5..10): share of word characters covered by n-grams
  that occur more than once (every occurrence counts, overlaps once).

Words are the ``\\w+`` runs of the lower-cased text; character shares count
word characters only, so whitespace and punctuation do not dilute them.

Where a rule cannot tell degeneration from legitimate repetition it leaves the
text alone: code (fenced or indented), tables, lists, headings, block quotes,
quoted speech and verse (a poem or song's refrain, or anything answering a
prompt that asks for a poem, a song or a repetition) are never
sentence-deduplicated, and code, tables, inline code and URLs are never
touched at all.

Speed: `nothing_to_fix` is a cheap pre-check that proves a text has nothing a
cleaner could edit (most texts); inside the analysis the same checks skip the
sentence rules where they cannot fire. ``exhaustive=True`` turns every such
shortcut off (same findings, slower; the tests hold the two equal).
"""
from __future__ import annotations

import gc
import operator
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate, compress

from cai_core.configbase import ConfigBase, require

# --------------------------------------------------------------------------- codes

REPEATED_SENTENCE = "repeated_sentence"
REPEATED_PLEASANTRY = "repeated_pleasantry"
SIGNOFF_PILEUP = "signoff_pileup"
EMOJI = "emoji"
FOREIGN_SCRIPT = "foreign_script"
TRUNCATED_FRAGMENT = "truncated_fragment"
INVALID_CHAR = "invalid_char"

#: Codes whose findings carry a span a cleaner may remove, in report order.
EDIT_CODES = (REPEATED_SENTENCE, REPEATED_PLEASANTRY, SIGNOFF_PILEUP, EMOJI, FOREIGN_SCRIPT,
              TRUNCATED_FRAGMENT, INVALID_CHAR)

GOPHER_STATS = ("dup_line_frac", "dup_para_frac", "dup_line_chars", "dup_para_chars",
                "top_2gram", "top_3gram", "top_4gram",
                "dup_5gram", "dup_6gram", "dup_7gram", "dup_8gram", "dup_9gram", "dup_10gram")
#: One reason code per Gopher statistic: ``gopher_<stat>``.
GOPHER_CODES = tuple(f"gopher_{s}" for s in GOPHER_STATS)
ALL_CODES = EDIT_CODES + GOPHER_CODES
#: Detector names accepted by `DetectorConfig.enabled` ("gopher" switches all Gopher statistics).
DETECTOR_NAMES = EDIT_CODES + ("gopher",)


@dataclass(frozen=True)
class Finding:
    """One problem: a stable reason code, the span to remove (or None) and a human detail."""

    code: str
    span: tuple[int, int] | None
    detail: str = ""


# --------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class GopherThresholds(ConfigBase):
    """Gopher (MassiveText) repetition thresholds; a statistic above its threshold is reported."""

    #: Share of lines that repeat an earlier line.
    dup_line_frac: float = 0.30
    #: Share of paragraphs that repeat an earlier paragraph.
    dup_para_frac: float = 0.30
    #: Share of line characters inside repeated lines.
    dup_line_chars: float = 0.20
    #: Share of paragraph characters inside repeated paragraphs.
    dup_para_chars: float = 0.20
    #: Character share of the most frequent word 2-gram.
    top_2gram: float = 0.20
    #: Character share of the most frequent word 3-gram.
    top_3gram: float = 0.18
    #: Character share of the most frequent word 4-gram.
    top_4gram: float = 0.16
    #: Character share covered by repeated word 5-grams.
    dup_5gram: float = 0.15
    #: Character share covered by repeated word 6-grams.
    dup_6gram: float = 0.14
    #: Character share covered by repeated word 7-grams.
    dup_7gram: float = 0.13
    #: Character share covered by repeated word 8-grams.
    dup_8gram: float = 0.12
    #: Character share covered by repeated word 9-grams.
    dup_9gram: float = 0.11
    #: Character share covered by repeated word 10-grams.
    dup_10gram: float = 0.10
    #: Texts with fewer words are not judged (the statistics are meaningless on a few words).
    min_words: int = 50
    #: Only the first this many characters are measured (the shares are estimates beyond it).
    max_chars: int = 200_000

    def validate(self) -> None:
        for name in GOPHER_STATS:
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, name, f"must be in [0, 1], got {value}")
        require(self.min_words >= 0, "min_words", f"must be >= 0, got {self.min_words}")
        require(self.max_chars >= 1, "max_chars", f"must be >= 1, got {self.max_chars}")


@dataclass(frozen=True)
class DetectorConfig(ConfigBase):
    """Settings of the degeneration detectors."""

    #: Detectors to run, by reason code; "gopher" runs all the Gopher statistics.
    enabled: tuple[str, ...] = DETECTOR_NAMES
    #: Words a sentence needs to count as repeated where the text ends in repeats (a looping tail).
    min_repeat_words: int = 4
    #: A sentence repeated neither back to back nor in the text's looping tail counts only with this many words.
    min_far_repeat_words: int = 8
    #: A block of sentences repeated back to back counts as a loop when the block has this many words.
    min_loop_words: int = 3
    #: Longest block of sentences (in sentences) looked for as a back-to-back loop.
    max_loop_period: int = 8
    #: Sign-offs kept in the closing block; further different ones are a pile-up.
    max_signoffs: int = 1
    #: An unpunctuated final fragment with no other sign of truncation needs this many words.
    min_fragment_words: int = 3
    #: A script is a target script when it has at least this share of the prompt's letters.
    script_share: float = 0.15
    #: Above this share of the text's letters a foreign script is a wrong-language answer, not stray characters.
    max_stray_share: float = 0.30
    #: Greek runs up to this many letters are math symbols (theta, pi, delta x), not stray text.
    max_greek_run: int = 2
    #: Thresholds of the Gopher repetition statistics.
    gopher: GopherThresholds = field(default_factory=GopherThresholds)

    def validate(self) -> None:
        unknown = [d for d in self.enabled if d not in DETECTOR_NAMES]
        require(not unknown, "enabled", f"unknown detector(s) {unknown}; known: {', '.join(DETECTOR_NAMES)}")
        require(self.min_repeat_words >= 1, "min_repeat_words", f"must be >= 1, got {self.min_repeat_words}")
        require(self.min_far_repeat_words >= self.min_repeat_words, "min_far_repeat_words",
                f"must be >= min_repeat_words ({self.min_repeat_words}), got {self.min_far_repeat_words}")
        require(self.min_loop_words >= 1, "min_loop_words", f"must be >= 1, got {self.min_loop_words}")
        require(1 <= self.max_loop_period <= 64, "max_loop_period", f"must be in [1, 64], got {self.max_loop_period}")
        require(self.max_signoffs >= 0, "max_signoffs", f"must be >= 0, got {self.max_signoffs}")
        require(self.min_fragment_words >= 1, "min_fragment_words", f"must be >= 1, got {self.min_fragment_words}")
        require(0.0 < self.script_share <= 1.0, "script_share", f"must be in (0, 1], got {self.script_share}")
        require(0.0 < self.max_stray_share <= 1.0, "max_stray_share", f"must be in (0, 1], got {self.max_stray_share}")
        require(self.max_greek_run >= 0, "max_greek_run", f"must be >= 0, got {self.max_greek_run}")


# --------------------------------------------------------------------------- character classes

# Emoji: everything in U+1F000..U+1FAFF, the BMP characters shown as emoji by default,
# a few text-default symbols models use bare as emoji (hearts, smiles, victory hand), any
# symbol followed by the emoji variation selector, and keycaps.
_EMOJI_BMP = ("\u231A-\u231B\u23E9-\u23EC\u23F0\u23F3\u25FD-\u25FE\u2614-\u2615\u2648-\u2653\u267F\u2693"
              "\u26A1\u26AA-\u26AB\u26BD-\u26BE\u26C4-\u26C5\u26CE\u26D4\u26EA\u26F2-\u26F3\u26F5\u26FA\u26FD"
              "\u2705\u270A-\u270B\u2728\u274C\u274E\u2753-\u2755\u2757\u2795-\u2797\u27B0\u27BF\u2B1B-\u2B1C"
              "\u2B50\u2B55"
              "\u263A\u2639\u2764\u2763\u2665\u270C")
_EMOJI_BASE = f"[\U0001F000-\U0001FAFF{_EMOJI_BMP}]"
_EMOJI_TEXTSTYLE = "[\u00A9\u00AE\u203C\u2049\u2122\u2139\u2194-\u21AA\u2300-\u23FF\u24C2\u25A0-\u25FF\u2600-\u27BF\u2934\u2935\u2B00-\u2BFF\u3030\u303D\u3297\u3299]"
_EMOJI_ONE = f"(?:{_EMOJI_BASE}|{_EMOJI_TEXTSTYLE}\uFE0F|[0-9#*]\uFE0F?\u20E3)"
_EMOJI_MOD = "[\uFE0F\uFE0E\u20E3\U0001F3FB-\U0001F3FF\U000E0020-\U000E007F]"
_EMOJI_CLUSTER = f"{_EMOJI_ONE}(?:{_EMOJI_MOD}|\u200D{_EMOJI_ONE})*"
_EMOJI_RE = re.compile(_EMOJI_CLUSTER)
_EMOJI_RUN_RE = re.compile(f"{_EMOJI_CLUSTER}(?:[ \t]*{_EMOJI_CLUSTER})*")
# Classic emoticons; only as a free-standing token (after start/space/punctuation, before end/space/punctuation).
_EMOTICON = r"(?:[:;]-?(?:[)(\]]+|[DPp])|=[)(DP]|:'\(|\^_?\^)"
_EMOTICON_RE = re.compile(rf"(?<![^\s.,!?]){_EMOTICON}(?![^\s.,!?])")
_EMOTICON_RUN_RE = re.compile(rf"(?<![^\s.,!?]){_EMOTICON}(?:[ \t]+{_EMOTICON})*(?![^\s.,!?])")
_EMOJI_OR_EMOTICON_RE = re.compile(rf"{_EMOJI_CLUSTER}|(?<![^\s.,!?]){_EMOTICON}(?![^\s.,!?])")
_EMOJI_CHAR_RE = re.compile(f"[\U0001F000-\U0001FAFF{_EMOJI_BMP}\uFE0F\u20E3]")
# Characters that may follow the first character of an emoticon (a cheap test before the regex).
_EMOTICON_FOLLOWERS = {":": ")(]DPp-'", ";": ")(]DPp-", "=": ")(DP", "^": "_^"}


def _may_have_emoticon(text: str) -> bool:
    for ch, followers in _EMOTICON_FOLLOWERS.items():
        i = text.find(ch)
        while i != -1:
            if text[i + 1:i + 2] in followers and text[i + 1:i + 2]:
                return True
            i = text.find(ch, i + 1)
    return False


_NONASCII_INVALID = "\ud800-\udfff\ufffd\ufffe\uffff"
_INVALID_CLASS = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f" + _NONASCII_INVALID
_INVALID_RE = re.compile(f"[{_INVALID_CLASS}]+")

# Scripts other than Latin (Latin is always allowed: names, code, units, numbers).
_SCRIPTS = {
    "greek": "\u0370-\u03FF\u1F00-\u1FFF",
    "cyrillic": "\u0400-\u052F\u1C80-\u1C8F\u2DE0-\u2DFF\uA640-\uA69F",
    "armenian": "\u0530-\u058F\uFB13-\uFB17",
    "hebrew": "\u0590-\u05FF\uFB1D-\uFB4F",
    "arabic": "\u0600-\u06FF\u0750-\u077F\u08A0-\u08FF\uFB50-\uFDFF\uFE70-\uFEFF",
    "indic": "\u0900-\u0DFF",
    "thai": "\u0E00-\u0EFF",
    "tibetan": "\u0F00-\u0FFF",
    "myanmar": "\u1000-\u109F",
    "georgian": "\u10A0-\u10FF\u1C90-\u1CBF",
    "hangul": "\u1100-\u11FF\u3130-\u318F\uA960-\uA97F\uAC00-\uD7AF\uD7B0-\uD7FF",
    "ethiopic": "\u1200-\u139F",
    "khmer": "\u1780-\u17FF",
    "cjk": ("\u2E80-\u2FDF\u3001-\u303F\u3040-\u30FF\u3100-\u312F\u31A0-\u31FF\u3400-\u4DBF\u4E00-\u9FFF"
            "\uF900-\uFAFF\uFF00-\uFFEF\U00020000-\U0003134F"),
}
_SCRIPT_NAMES = tuple(_SCRIPTS)
_ANY_SCRIPT_RE = re.compile("[" + "".join(_SCRIPTS.values()) + "]+")


def _range_table() -> tuple[list[int], list[int], list[str]]:
    rows = []
    for name, ranges in _SCRIPTS.items():
        i = 0
        while i < len(ranges):
            lo = ranges[i]
            if i + 2 < len(ranges) and ranges[i + 1] == "-":
                rows.append((ord(lo), ord(ranges[i + 2]), name))
                i += 3
            else:
                rows.append((ord(lo), ord(lo), name))
                i += 1
    rows.sort()
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


_RANGE_LO, _RANGE_HI, _RANGE_NAME = _range_table()
# ASCII letters survive this deletion table; their count stands in for the Latin letters.
_NOT_ASCII_LETTER = bytes(c for c in range(256) if not (65 <= c <= 90 or 97 <= c <= 122))


def script_of(ch: str) -> str:
    """Script group of one character ("latin" for anything not in a listed script)."""
    i = bisect_right(_RANGE_LO, ord(ch)) - 1
    return _RANGE_NAME[i] if i >= 0 and ord(ch) <= _RANGE_HI[i] else "latin"


_ONE_SCRIPT_RE = {name: re.compile(f"[{ranges}]+") for name, ranges in _SCRIPTS.items()}


def _script_runs(text: str):
    """(start, end, script) of runs of non-Latin script letters; a run mixing scripts is split."""
    for m in _ANY_SCRIPT_RE.finditer(text):
        j, e = m.span()
        while j < e:
            name = script_of(text[j])
            k = _ONE_SCRIPT_RE[name].match(text, j, e).end()
            yield j, k, name
            j = k


def _ascii_letters(text: str) -> int:
    # every byte of a multi-byte UTF-8 sequence is >= 0x80, so only ASCII letters survive
    return len(text.encode("utf-8", "surrogatepass").translate(None, _NOT_ASCII_LETTER))


# Anything a cheap pre-check must look at in a non-ASCII text: emoji, variation selectors,
# invalid characters and letters of any non-Latin script.
_SUSPECT_RE = re.compile(f"[\U0001F000-\U0001FAFF{_EMOJI_BMP}\uFE0F\u20E3{_NONASCII_INVALID}"
                         + "".join(_SCRIPTS.values()) + "]")

# Languages a prompt may name, so an answer may legitimately quote their script.
_LANGUAGE_SCRIPTS = {
    "cyrillic": ("cyrillic",), "russian": ("cyrillic",), "ukrainian": ("cyrillic",), "bulgarian": ("cyrillic",),
    "serbian": ("cyrillic",), "belarusian": ("cyrillic",), "macedonian": ("cyrillic",), "kazakh": ("cyrillic",),
    "mongolian": ("cyrillic",), "greek": ("greek",),
    "japanese": ("cjk",), "chinese": ("cjk",), "mandarin": ("cjk",), "cantonese": ("cjk",), "kanji": ("cjk",),
    "hiragana": ("cjk",), "katakana": ("cjk",), "hanzi": ("cjk",), "pinyin": ("cjk",),
    "korean": ("hangul", "cjk"), "hangul": ("hangul", "cjk"),
    "arabic": ("arabic",), "persian": ("arabic",), "farsi": ("arabic",), "urdu": ("arabic",), "pashto": ("arabic",),
    "hebrew": ("hebrew",), "yiddish": ("hebrew",),
    "hindi": ("indic",), "sanskrit": ("indic",), "bengali": ("indic",), "bangla": ("indic",), "tamil": ("indic",),
    "telugu": ("indic",), "marathi": ("indic",), "nepali": ("indic",), "punjabi": ("indic",),
    "gujarati": ("indic",), "kannada": ("indic",), "malayalam": ("indic",), "sinhala": ("indic",),
    "thai": ("thai",), "lao": ("thai",), "armenian": ("armenian",), "georgian": ("georgian",),
    "amharic": ("ethiopic",), "tigrinya": ("ethiopic",), "ethiopic": ("ethiopic",), "tibetan": ("tibetan",),
    "burmese": ("myanmar",), "myanmar": ("myanmar",), "khmer": ("khmer",), "cambodian": ("khmer",),
}
_LANGUAGE_RE = re.compile(r"\b(?:" + "|".join(_LANGUAGE_SCRIPTS) + r")\b")
_ANY_LANGUAGE_RE = re.compile(r"\b(?:translat\w*|in (?:other|different|several|many) languages|multilingual)\b")

# --------------------------------------------------------------------------- sentences and keys

_TERMINATORS = ".!?\u2026\u3002\uff01\uff1f\u061f\u0964\u0965"
_CLOSERS = "\"'\u201d\u2019\u00bb)]*_\u300d\u300f\uff09"
# A text whose last visible character is one of these ends a sentence (or a markup construct).
COMPLETE_END = frozenset(_TERMINATORS + _CLOSERS + ":`|>}")
# End of a sentence: CJK full stops end one wherever they are; Western ones need a following space.
_CLOSERS_CLASS = re.escape(_CLOSERS)
_CJK_TERMINATORS = "\u3002\uff01\uff1f"
# A run of terminators and the closing quotes/brackets after it. It ends a sentence when a space
# or the end of the line follows, or at once when it holds a CJK full stop (CJK text has no spaces).
_TERM_RUN_RE = re.compile(f"[{_TERMINATORS}]+[{_CLOSERS_CLASS}]*")
_RUN_CHARS = frozenset(_TERMINATORS + _CLOSERS)
# The same ends where no CJK full stop is involved, found by the regex alone: the last terminator
# of a run, its closers, then a space or the end of the line (terminators and closers are disjoint
# sets, so this ends exactly where a run followed by a space ends).
_SPACED_END_RE = re.compile(f"[{_TERMINATORS}][{_CLOSERS_CLASS}]*(?!\\S)")


def sentence_ends(seg: str, lo: int = 0) -> list[int]:
    """Offsets in `seg` (one line) just after each sentence end found at or after `lo`."""
    cjk = not seg.isascii() and any(c in seg for c in _CJK_TERMINATORS)
    if not cjk:
        return [m.end() for m in _SPACED_END_RE.finditer(seg, lo)]
    n = len(seg)
    ends = []
    for m in _TERM_RUN_RE.finditer(seg, lo):
        e = m.end()
        if e == n or seg[e].isspace():
            ends.append(e)
        else:
            run = m.group()
            if not run.isascii() and any(c in _CJK_TERMINATORS for c in run):
                ends.append(e)
    return ends


_KEY_STRIP = " \t\r\n" + _TERMINATORS + _CLOSERS + ",;:\"'\u201c\u2018\u00ab(\u00a1\u00bf[-\u2013\u2014~\u300c\u300e"


def sentence_key(sentence: str) -> str:
    """Comparison key of a sentence: lower-cased, outer punctuation and spaces stripped, inner
    whitespace collapsed to single spaces, curly apostrophes made straight."""
    key = sentence.lower().strip(_KEY_STRIP)
    if "  " in key or not key.isascii() or not key.isprintable():
        key = " ".join(key.split())
        if "\u2019" in key:
            key = key.replace("\u2019", "'")
    return key


_ALNUM_RE = re.compile(r"[^\W_]")

# Characters the pre-check lets through without a closer look: printable ASCII with tab, newline
# and CR; Latin-1 letters and signs (not C1 controls, no-break space, soft hyphen); Latin and IPA
# with diacritics; dashes, curly quotes, bullets and ellipsis; super/subscripts, currency,
# letterlike symbols, arrows and math operators. Any other character sends the text to the exact
# tests (`_SUSPECT_RE`, printability), so invalid characters and odd spaces never pass unseen.
_PLAIN_RE = re.compile("[^\t\n\r\x20-\x7e\xa1-\xac\xae-\u036f\u2010-\u2027\u2030-\u205e"
                       "\u2070-\u209f\u20a0-\u20cf\u2100-\u214f\u2190-\u22ff]")
# Deleting these from an ASCII text leaves exactly its control characters.
_ASCII_PRINTABLE = bytes([9, 10, 13] + list(range(32, 127)))


def _rare_chars(data: bytes) -> str:
    """The characters other than printable ASCII, tab, newline and CR, in order, of a text given as
    UTF-8 `data` (cheap: the common ones are deleted in C, which leaves whole characters)."""
    return data.translate(None, _ASCII_PRINTABLE).decode("utf-8", "surrogatepass")


_TERMINATOR_TO_NEWLINE = bytes.maketrans(b".!?", b"\n\n\n")
_LOWER_CUT = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ.!?", b"abcdefghijklmnopqrstuvwxyz\n\n\n")  # ASCII only
_ASCII_KEY_STRIP = "".join(c for c in _KEY_STRIP if c.isascii() and c not in ".!?\n").encode()
_NON_ASCII_CUTS = frozenset(c for c in _TERMINATORS if not c.isascii())
_NON_ASCII_STRIP = frozenset(c for c in _KEY_STRIP if not c.isascii() and c not in _TERMINATORS)
_ALNUM_BYTES_RE = re.compile(rb"[0-9a-z\x80-\xff]")  # any non-ASCII byte may belong to a letter


# Closing pleasantries and sign-offs, matched against a whole sentence key.
_T = r"(?:[ ,;].*)?"  # optional tail after a complete phrase
_SIGNOFF_KINDS = ("day", "luck", "happy", "care", "regards", "cheers", "bye")
_CLOSING_RE = re.compile("|".join([
    rf"(?P<day>(?:(?:(?:i |we )?hope you |you )?have|wishing you) an? (?:[\w-]+ ){{0,2}}(?:day|evening|night|weekend|week|one|time|holiday|holidays){_T}"
    rf"|enjoy (?:the rest of )?(?:your|the) (?:day|evening|weekend|week){_T})",
    rf"(?P<luck>(?:good|best of) luck{_T}|wishing you (?:the best|good luck|luck|all the best|success){_T})",
    r"(?P<happy>happy (?:[\w-]+ing|travels|holidays)(?:[ ,;].{0,40})?)",
    rf"(?P<care>take care{_T}|stay (?:safe|healthy|well|curious|positive|strong|warm|cool|hydrated)(?:[ ,;].{{0,40}})?)",
    r"(?P<regards>(?:(?:best|kind|kindest|warm|warmest|many) )?regards|best wishes|all the best|sincerely"
    r"|yours (?:truly|sincerely)|warmly|respectfully|with gratitude)",
    r"(?P<cheers>cheers)",
    r"(?P<bye>bye|goodbye|good bye|bye for now|farewell|see you(?: soon| later| next time| around)?"
    r"|talk (?:to you )?soon|until next time|catch you later)",
    rf"(?P<hope>(?:i |we )?(?:really |truly |sincerely |do )?hope (?:this|that|it|these|the above|my (?:answer|response|explanation|reply|suggestions?)"
    rf"|you (?:find|found|enjoy|enjoyed|like|liked|get|got)){_T})",
    r"(?P<offer>(?:please |so |and |just )?(?:let me know (?:if|whether|how|what|when|in case)\b.*"
    r"|(?:feel free|don't hesitate|do not hesitate) to (?:ask|reach out|contact|let me know|get in touch|follow up|come back|drop)\b.*"
    r"|if you (?:have|need|want|'d like|would like) (?:any )?(?:other |more |further |additional |follow-up |specific )?"
    r"(?:questions?|help|assistance|clarification|information|details|anything)\b.*"
    r"|(?:is there )?anything else (?:i can|you(?:'d| would) like|you need)\b.*"
    r"|(?:i'm|i am) (?:always )?(?:here|happy|glad|available) (?:to help|if you need|for you|whenever|to assist)\b.*))",
    r"(?P<thanks>(?:thank you|thanks|many thanks)(?: (?:so|very) much)?(?: again)?"
    r"(?: for (?:asking|reading|reaching out|your (?:question|patience|understanding|interest|time)|the question|using \w+|chatting)\b.{0,40})?)",
    r"(?P<welcome>you(?:'re| are) (?:very |most |always )?welcome\b.{0,40}|(?:it was )?my pleasure\b.{0,40}"
    r"|(?:i'm |i am )?(?:so )?(?:glad|happy) (?:i could|to|that i could|i was able to) (?:help|assist|be of help)\b.*"
    r"|no problem(?: at all)?|anytime)",
]))


# Every closing phrase above starts with one of these words (a cheap test before the regex).
_CLOSING_FIRST_WORDS = frozenset("""
i we hope wishing you have enjoy good best happy take stay kind kindest warm warmest many regards all sincerely
yours warmly respectfully with cheers bye goodbye farewell see talk until catch really truly do please so and just
let feel don't if is anything i'm thank thanks you're it my glad no anytime
""".split())


def closing_kind(key: str) -> str | None:
    """Kind of closing pleasantry or sign-off a sentence key is ("day", "hope", ...), or None."""
    if key.split(" ", 1)[0].rstrip(",;:") not in _CLOSING_FIRST_WORDS:
        return None
    return _closing_match(key)


@lru_cache(maxsize=4096)  # answers end in the same few pleasantries again and again
def _closing_match(key: str) -> str | None:
    m = _CLOSING_RE.fullmatch(key)
    return m.lastgroup if m else None


def is_signoff(kind: str | None) -> bool:
    return kind in _SIGNOFF_KINDS


# Words that cannot end an English (or common Romance/German) sentence.
_DANGLING = frozenset("""
a an the and or but nor of with your my our their its his any some each every because although though unless
whereas whose whom than if whether very such into onto between among i let
der und oder mit für von zu ein eine einen dem den et ou avec pour les des du une con para los las del y
""".split())
_ABBREVIATIONS = frozenset({"etc", "e.g", "i.e", "vs", "al", "approx", "incl", "cf"})
_STRONG_CUT_END = frozenset(",;-\u2013\u2014(/&+=")

_REFRAIN_PROMPT_RE = re.compile(
    r"\b(?:poems?|poetry|poet|songs?|lyrics?|chorus|refrain|verses?|stanzas?|chants?|rhymes?|rhyming|haiku|limericks?"
    r"|sonnets?|ballads?|raps?|jingles?|lullaby|lullabies|nursery|mantras?|affirmations?|tongue twisters?|cheer"
    r"|repeat\w*|repetition|(?:\d+|two|three|four|five|six|seven|eight|nine|ten|several|many) times)\b")

# --------------------------------------------------------------------------- markdown structure

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


# --------------------------------------------------------------------------- scripts


def _script_counts(text: str) -> Counter:
    counts: Counter = Counter()
    for s, e, name in _script_runs(text):
        counts[name] += e - s
    counts["latin"] = _ascii_letters(text)  # accented Latin letters are not counted: close enough for shares
    return counts


def target_scripts(prompt: str | None, text: str, share: float = 0.15) -> frozenset[str]:
    """Scripts an answer may use: Latin, the prompt's own scripts (the text's when there is no
    prompt with letters) and the scripts of languages the prompt names."""
    if prompt:
        allowed = _prompt_scripts(prompt, share)
        if allowed is not None:
            return allowed
    return _scripts_from(None, _script_counts(text), share)


@lru_cache(maxsize=4096)
def _prompt_scripts(prompt: str, share: float) -> frozenset[str] | None:
    counts = _script_counts(prompt)
    return _scripts_from(prompt, counts, share) if sum(counts.values()) else None


def _scripts_from(prompt: str | None, counts: Counter, share: float) -> frozenset[str]:
    total = sum(counts.values())
    allowed = {"latin"} | {s for s, c in counts.items() if c and c >= share * total}
    if prompt:
        low = prompt.lower()
        if _ANY_LANGUAGE_RE.search(low):
            return frozenset(_SCRIPT_NAMES) | {"latin"}
        for name in _LANGUAGE_RE.findall(low):
            allowed.update(_LANGUAGE_SCRIPTS[name])
    if "hangul" in allowed:
        allowed.add("cjk")  # Korean text may carry hanja
    return frozenset(allowed)


@lru_cache(maxsize=64)
def _foreign_re(allowed: frozenset[str]) -> re.Pattern | None:
    ranges = "".join(r for name, r in _SCRIPTS.items() if name not in allowed)
    return re.compile(f"[{ranges}]+") if ranges else None


_GREEK_RE = re.compile(f"[{_SCRIPTS['greek']}]+")

# --------------------------------------------------------------------------- units


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


# --------------------------------------------------------------------------- the analysis


def _char_findings(text: str, prompt: str | None, cfg: DetectorConfig, frozen: _SpanSet,
                   enabled: frozenset[str]) -> list[Finding]:
    out: list[Finding] = []
    rare = _rare_chars(text.encode("utf-8", "surrogatepass"))  # every character these rules look for
    if INVALID_CHAR in enabled and ("\ufffd" in rare or not rare.isprintable()):
        for m in _INVALID_RE.finditer(text):
            out.append(Finding(INVALID_CHAR, m.span(), f"{m.end() - m.start()} invalid character(s)"))
    plain = text.isascii() or not _PLAIN_RE.search(rare)  # no emoji and no letters of other scripts
    if EMOJI in enabled:
        spans = _emoji_spans(text) if not plain else []
        if _may_have_emoticon(text):
            spans += _emoticon_spans(text)
        if spans:
            spans = sorted(sp for sp in spans if not frozen.overlaps(*sp))
            for s, e in _merge_runs(text, spans):
                out.append(Finding(EMOJI, (s, e), f"emoji/emoticon run {text[s:e]!r}"))
    if FOREIGN_SCRIPT in enabled and not plain and _ANY_SCRIPT_RE.search(rare):
        out += _foreign_findings(text, prompt, cfg, frozen)
    return out


def _emoji_spans(text: str) -> list[tuple[int, int]]:
    """Runs of emoji clusters, found from their emoji characters (a cheap scan) outwards."""
    spans: list[tuple[int, int]] = []
    pos = 0
    search = _EMOJI_CHAR_RE.search
    while (hit := search(text, pos)) is not None:
        p = hit.start()
        pos = p + 1
        for start in (p - 2, p - 1, p):  # a keycap or a text-style symbol starts before its selector
            if start < 0 or (spans and start < spans[-1][1]):
                continue
            m = _EMOJI_RUN_RE.match(text, start)
            if m and m.end() > p:
                spans.append(m.span())
                pos = m.end()
                break
    return spans


def _emoticon_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    for ch in _EMOTICON_FOLLOWERS:
        i = text.find(ch)
        while i != -1:
            m = _EMOTICON_RUN_RE.match(text, i)
            if m:
                spans.append(m.span())
                i = text.find(ch, m.end())
            else:
                i = text.find(ch, i + 1)
    spans.sort()
    return spans


def _quote_spans(text: str) -> "_SpanSet":
    """Quoted stretches ("...", curly, guillemets, CJK corner brackets) within one line."""
    if not any(q in text for q in "\"\u201c\u00ab\u201e\u300c\u300e"):
        return _SpanSet([])
    return _SpanSet([m.span() for m in _QUOTE_RE.finditer(text)])


def _foreign_findings(text: str, prompt: str | None, cfg: DetectorConfig, frozen: _SpanSet) -> list[Finding]:
    counts = _script_counts(text)
    allowed = _prompt_scripts(prompt, cfg.script_share) if prompt else None
    if allowed is None:  # no prompt, or one without letters: the text's own scripts are the target
        allowed = _scripts_from(None, counts, cfg.script_share)
    pattern = _foreign_re(allowed)
    if pattern is None or not pattern.search(text):
        return []
    quotes = _quote_spans(text)
    greek_ok = "greek" not in allowed and cfg.max_greek_run > 0
    spans = []
    foreign_letters = 0
    for m in pattern.finditer(text):
        s, e = m.span()
        foreign_letters += e - s
        if greek_ok and e - s <= cfg.max_greek_run and _GREEK_RE.fullmatch(text, s, e):
            continue
        if frozen.overlaps(s, e) or quotes.overlaps(s, e):
            continue
        spans.append((s, e))
    if not spans:
        return []
    letters = sum(counts.values())
    scripts = sorted({script_of(text[s]) for s, e in spans})
    if letters and foreign_letters > cfg.max_stray_share * letters:
        return [Finding(FOREIGN_SCRIPT, None,
                        f"answer mostly in {'/'.join(scripts)} ({foreign_letters}/{letters} letters); "
                        f"target scripts {sorted(allowed)}")]
    return [Finding(FOREIGN_SCRIPT, (s, e), f"stray {'/'.join(scripts)} text {text[s:e]!r}")
            for s, e in _merge_runs(text, spans)]


def _mask(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with the given ranges blanked by spaces (same length, so offsets still hold)."""
    if not spans:
        return text
    parts = []
    pos = 0
    for s, e in sorted(spans):
        if s < pos:
            s = pos
        if e <= s:
            continue
        parts.append(text[pos:s])
        parts.append(" " * (e - s))
        pos = e
    parts.append(text[pos:])
    return "".join(parts)


# Above this size the cyclic garbage collector is paused during the analysis: it would otherwise
# rescan the many small objects of a huge text again and again (nothing here makes cycles).
_GC_PAUSE_CHARS = 256 * 1024
_SHORTCUT_MAX_CHARS = 64 * 1024


def _analyze(text: str, prompt: str | None, cfg: DetectorConfig, gopher: bool,
             exhaustive: bool = False, doubt: _Doubt | None = None) -> list[Finding]:
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    if prompt is not None and not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string or None, got {type(prompt).__name__}")
    if len(text) > _GC_PAUSE_CHARS and gc.isenabled():
        gc.disable()
        try:
            return _analyze(text, prompt, cfg, gopher, exhaustive, doubt)
        finally:
            gc.enable()
    findings: list[Finding] = []
    if not text.strip():
        return findings
    enabled = frozenset(cfg.enabled)
    lines = doubt.lines() if doubt is not None else _classify_lines(text)
    frozen = _SpanSet(_frozen_spans(text, lines))
    char_findings = _char_findings(text, prompt, cfg, frozen, enabled)
    findings += char_findings
    masked = _mask(text, [f.span for f in char_findings if f.span is not None])
    # the shortcut pays on answer-sized texts; a huge one is almost always a loop that fails it
    known_unsettled = doubt is not None and doubt.sentences and masked is text
    if (exhaustive or len(text) > _SHORTCUT_MAX_CHARS or known_unsettled or _has_odd_space(masked)
            or not _sentences_settled(text, masked, cfg, lambda: lines)):
        findings += _sentence_findings(text, masked, prompt, cfg, lines, frozen, enabled)
    if gopher and "gopher" in enabled:
        findings += gopher_findings(text, cfg.gopher)
    findings.sort(key=lambda f: (f.span or (len(text), len(text)), ALL_CODES.index(f.code)))
    return findings


def _sentence_findings(text: str, masked: str, prompt: str | None, cfg: DetectorConfig, lines: _Lines,
                       frozen: _SpanSet, enabled: frozenset[str]) -> list[Finding]:
    want_repeat = REPEATED_SENTENCE in enabled
    want_pleasantry = REPEATED_PLEASANTRY in enabled
    want_signoff = SIGNOFF_PILEUP in enabled
    want_trunc = TRUNCATED_FRAGMENT in enabled
    if not (want_repeat or want_pleasantry or want_signoff or want_trunc):
        return []
    verse = _verse_paragraphs(text, lines)
    refrain_ok = bool(prompt) and bool(_REFRAIN_PROMPT_RE.search(prompt.lower()))
    quotes = _quote_spans(text)
    U = _collect_units(masked, lines, verse, quotes)
    n = len(U)
    if not n:
        return []
    keys, oks, starts, ends = U.key, U.ok, U.start, U.end
    code: dict[int, str] = {}  # unit index -> reason code
    findings: list[Finding] = []

    # ---- truncated final fragment
    body_n = n
    if want_trunc and _truncated(text, masked, U, lines, cfg, weak=not refrain_ok):
        body_n = n - 1
        s0, e0 = starts[-1], ends[-1]
        prior = masked[:s0].strip()
        findings.append(Finding(TRUNCATED_FRAGMENT, (s0, e0) if prior else None,
                                f"text ends mid-sentence: {_clip(text[s0:e0])!r}"))

    # ---- closing block: the trailing run of pleasantries / sign-offs (and a name under a sign-off)
    if want_pleasantry or want_signoff:
        block: list[int] = []
        j = body_n - 1
        while j >= 0 and oks[j]:
            if not keys[j] or U.kind(j) is not None:
                block.append(j)
            elif (j > 0 and oks[j - 1] and is_signoff(U.kind(j - 1)) and _name_line(text, starts[j], ends[j], keys[j])
                  and masked[starts[j - 1]:ends[j - 1]].rstrip().endswith(",")):
                block.append(j)
            else:
                break
            j -= 1
        block.reverse()
        seen_kinds: set[str] = set()
        signoffs = 0
        last_flagged = None
        for idx in block:
            kind = U.kind(idx)
            if kind is None:
                if last_flagged is not None and idx == last_flagged + 1 and keys[idx]:
                    code[idx] = code[last_flagged]  # the name under a removed sign-off goes with it
                continue
            c = None
            if kind in seen_kinds:
                c = REPEATED_PLEASANTRY if want_pleasantry else None
            elif is_signoff(kind) and signoffs >= cfg.max_signoffs:
                c = SIGNOFF_PILEUP if want_signoff else None
            else:
                seen_kinds.add(kind)
                signoffs += is_signoff(kind)
            if c:
                code[idx] = c
                last_flagged = idx
            else:
                last_flagged = None

    # ---- pleasantries said word for word again; back-to-back loops; far repeats
    if not refrain_ok:
        far: list[int] = []  # later copies of a sentence said earlier, not back to back
        kind_of_key = U.kind_of_key
        seen: set[str] = {""}  # units the rules skip have empty keys
        remember = seen.add
        ok_keys = [k if o else "" for k, o in zip(keys[:body_n], oks)]
        for idx in [i for i, k in enumerate(ok_keys) if k in seen or remember(k)]:
            key = ok_keys[idx]
            if not key or idx in code:
                continue
            if want_pleasantry and kind_of_key(key) is not None:
                code[idx] = REPEATED_PLEASANTRY
            elif want_repeat and key.count(" ") + 1 >= cfg.min_repeat_words:
                far.append(idx)
        if want_repeat:
            for idx in _tandem_repeats(U, body_n, cfg):
                if idx not in code:
                    pleasantry = want_pleasantry and kind_of_key(keys[idx]) is not None
                    code[idx] = REPEATED_PLEASANTRY if pleasantry else REPEATED_SENTENCE
            far_set = set(far)
            for idx in far:  # long sentences said twice are never intended
                if idx not in code and U.words(idx) >= cfg.min_far_repeat_words:
                    code[idx] = REPEATED_SENTENCE
            for idx in range(body_n - 1, -1, -1):  # shorter ones only where the text ends in a loop
                if idx in code or (oks[idx] and (not keys[idx] or U.kind(idx) is not None)):
                    continue
                if idx not in far_set:
                    break
                code[idx] = REPEATED_SENTENCE

    # one finding per run of consecutive units with the same code
    order = sorted(code)
    i = 0
    while i < len(order):
        j = i
        c = code[order[i]]
        while j + 1 < len(order) and order[j + 1] == order[j] + 1 and code[order[j + 1]] == c:
            j += 1
        s0, e0 = starts[order[i]], ends[order[j]]
        count = j - i + 1
        what = {REPEATED_SENTENCE: "repeated sentence", REPEATED_PLEASANTRY: "repeated pleasantry",
                SIGNOFF_PILEUP: "extra sign-off"}[c]
        detail = f"{what}: {_clip(text[starts[order[i]]:ends[order[i]]])!r}"
        if count > 1:
            detail += f" (+{count - 1} more)"
        findings.append(Finding(c, (s0, e0), detail))
        i = j + 1
    return findings


def _clip(s: str, limit: int = 80) -> str:
    return s if len(s) <= limit else s[:limit - 3] + "..."


def _name_line(text: str, start: int, end: int, key: str) -> bool:
    raw = text[start:end]
    return key.count(" ") < 4 and raw[-1] not in _TERMINATORS and (raw[0].isupper() or raw[0] in "[-\u2014")


def _tandem_repeats(U: _Units, n: int, cfg: DetectorConfig):
    """Indices (< n), in order, of units that repeat the block of sentences just before them (a loop)."""
    keys, oks = U.key, U.ok
    # units the rules skip get a distinct integer, so they never equal anything
    seq: list[object] = [k if (o and k) else i for i, (k, o) in enumerate(zip(keys[:n], oks[:n]))]
    present = [k for k in seq if isinstance(k, str)]
    if len(present) == len(set(present)):
        return ()
    marked = bytearray(n)
    for p in range(1, min(cfg.max_loop_period, n // 2) + 1):
        eq = bytes(map(operator.eq, seq[p:], seq))  # eq[i] is 1 when seq[i + p] == seq[i]
        for m in re.finditer(b"\x01{%d,}" % p, eq):
            first = m.start() + p  # position of the first unit of the first repeated copy
            if sum(U.words(k) for k in range(first, first + p)) < cfg.min_loop_words:
                continue
            marked[first:m.end() + p] = b"\x01" * (m.end() - m.start())
    return compress(range(n), marked)


def _truncated(text: str, masked: str, U: _Units, lines: _Lines, cfg: DetectorConfig,
               weak: bool = True) -> bool:
    """Whether the last unit is a fragment cut off mid-sentence."""
    last = len(U) - 1
    key = U.key[last]
    if not U.ok[last] or not key:
        return False
    tail = text.rstrip()
    if not tail or tail[-1] in COMPLETE_END or _ends_with_emoji(tail):
        return False
    raw = masked[U.start[last]:U.end[last]].rstrip()
    if not raw or raw[-1] in COMPLETE_END:
        return False
    words = key.split(" ")
    last_word = words[-1]
    if raw[-1] in _STRONG_CUT_END or last_word in _DANGLING:
        return True
    for other in set(U.key[:last]):  # units the rules skip have empty keys
        if len(other) > len(key) and other.startswith(key):
            return True  # a looping sentence cut short
    if not weak or len(words) < cfg.min_fragment_words or not last_word.isalpha() or last_word in _ABBREVIATIONS:
        return False
    if closing_kind(key) is not None:
        return False
    # weak evidence: only when a complete sentence precedes it in the same paragraph
    ln_index = U.line[last]
    same_line_before = last > 0 and U.line[last - 1] == ln_index
    continues_para = (ln_index > 0 and lines.kind[ln_index - 1] == PROSE
                      and lines.para[ln_index - 1] == lines.para[ln_index])
    return same_line_before or continues_para


def _ends_with_emoji(tail: str) -> bool:
    for m in _EMOJI_OR_EMOTICON_RE.finditer(tail, max(0, len(tail) - 16)):
        if m.end() == len(tail):
            return True
    return False


# --------------------------------------------------------------------------- gopher

_WORD_RE = re.compile(r"\w+")
_PARA_SPLIT_RE = re.compile(r"\n[ \t\r]*\n")


def _dup_shares(items: list[str]) -> tuple[float, float]:
    seen: set[str] = set()
    dup = dup_chars = total_chars = 0
    for item in items:
        total_chars += len(item)
        if item in seen:
            dup += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    return (dup / len(items) if items else 0.0, dup_chars / total_chars if total_chars else 0.0)


def gopher_stats(text: str, max_chars: int = 200_000) -> dict[str, float]:
    """The Gopher repetition statistics of `text` (its first `max_chars` characters); also ``words``."""
    t = text[:max_chars]
    lines = [s for s in (ln.strip() for ln in t.split("\n")) if s]
    paras = [s for s in (p.strip() for p in _PARA_SPLIT_RE.split(t)) if s]
    stats: dict[str, float] = {}
    stats["dup_line_frac"], stats["dup_line_chars"] = _dup_shares(lines)
    stats["dup_para_frac"], stats["dup_para_chars"] = _dup_shares(paras)
    words = _WORD_RE.findall(t.lower())
    # intern words as small ints: cheaper tuples to hash
    ids: dict[str, int] = {}
    seq = [ids.setdefault(w, len(ids)) for w in words]
    id_len = [0] * len(ids)
    for w, i in ids.items():
        id_len[i] = len(w)
    lens = [id_len[i] for i in seq]
    total = sum(lens)
    n_words = len(seq)
    for n in (2, 3, 4):
        share = 0.0
        if n_words >= n and total:
            grams = Counter(zip(*(seq[i:] for i in range(n))))
            top = max(grams.values())
            if top > 1:  # the longest of the most frequent n-grams, so ties do not depend on order
                chars = max(sum(id_len[i] for i in g) for g, c in grams.items() if c == top)
                share = min(1.0, top * chars / total)
        stats[f"top_{n}gram"] = share
    for n in range(5, 11):
        share = 0.0
        if n_words >= 2 * n and total:
            grams = list(zip(*(seq[i:] for i in range(n))))
            counts = Counter(grams)
            if len(counts) < len(grams):
                covered = bytearray(n_words)
                ones = b"\x01" * n
                for start, g in enumerate(grams):
                    if counts[g] > 1:
                        covered[start:start + n] = ones
                share = sum(l for l, c in zip(lens, covered) if c) / total
        stats[f"dup_{n}gram"] = share
    stats["words"] = float(n_words)
    return stats


def gopher_findings(text: str, thresholds: GopherThresholds = GopherThresholds()) -> list[Finding]:
    """One `gopher_<stat>` finding per statistic above its threshold (texts of enough words only)."""
    stats = gopher_stats(text, thresholds.max_chars)
    if stats["words"] < thresholds.min_words:
        return []
    return [Finding(f"gopher_{name}", None, f"{name} = {stats[name]:.3f} > {getattr(thresholds, name):.2f}")
            for name in GOPHER_STATS if stats[name] > getattr(thresholds, name)]


# --------------------------------------------------------------------------- public API


def detect(text: str, prompt: str | None = None, cfg: DetectorConfig = DetectorConfig(), *,
           exhaustive: bool = False) -> list[Finding]:
    """Every finding in `text` (answer to `prompt`, whose scripts are the target), in text order.

    `exhaustive` runs every sentence rule even where a cheap check proves it cannot fire (same
    result, slower: for tests and benchmarks).
    """
    return _analyze(text, prompt, cfg, gopher=True, exhaustive=exhaustive)


def edit_findings(text: str, prompt: str | None = None, cfg: DetectorConfig = DetectorConfig(), *,
                  exhaustive: bool = False) -> list[Finding]:
    """The findings of `detect` a cleaner can act on (those with a span), without the Gopher statistics."""
    return [f for f in _analyze(text, prompt, cfg, gopher=False, exhaustive=exhaustive) if f.span is not None]


def prechecked_edit_findings(text: str, prompt: str | None = None,
                              cfg: DetectorConfig = DetectorConfig()) -> list[Finding] | None:
    """None when `nothing_to_fix(text, cfg)` holds, else `edit_findings(text, prompt, cfg)`, whose
    analysis then reuses what the pre-check computed."""
    doubt = _precheck(text, cfg)
    if doubt is None:
        return None
    return [f for f in _analyze(text, prompt, cfg, gopher=False, doubt=doubt) if f.span is not None]


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


def nothing_to_fix(text: str, cfg: DetectorConfig = DetectorConfig()) -> bool:
    """Cheap pre-check: True only when `edit_findings` is certainly empty.

    It looks for the raw material of every edit rule: characters that are not
    printable or not plain Latin text (invalid characters, emoji, letters of
    other scripts), emoticon-like character pairs, an unpunctuated ending, any
    sentence key that occurs twice, and closing pleasantries at the end that
    repeat a kind or pile up sign-offs. When none is there, no rule can fire;
    when one is, the full analysis decides (it usually finds nothing either).
    """
    return _precheck(text, cfg) is None


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
    # The closing rules, on a walk from the end that goes at least as far back as the closing block:
    # it stops at a long non-closing sentence, or at a short one (a possible name under a sign-off)
    # whose preceding sentence is not a sign-off ending in a comma.
    kinds: set[str] = set()
    signoffs = 0
    name_pending = False
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
        signoffs += is_signoff(kind)
        if signoffs > cfg.max_signoffs:
            return False
    return True
