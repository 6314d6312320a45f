"""Character classes: emoji and emoticons, invalid characters, scripts and the languages that use them."""
from __future__ import annotations

import re
from bisect import bisect_right

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


def _ends_with_emoji(tail: str) -> bool:
    for m in _EMOJI_OR_EMOTICON_RE.finditer(tail, max(0, len(tail) - 16)):
        if m.end() == len(tail):
            return True
    return False
