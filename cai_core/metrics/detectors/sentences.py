"""Sentences and their keys: sentence ends, comparison keys, closing pleasantries and sign-offs."""
from __future__ import annotations

import re
from functools import lru_cache

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
