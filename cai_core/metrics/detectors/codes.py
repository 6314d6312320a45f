"""Stable reason codes of the findings, and `Finding` itself."""
from __future__ import annotations

from dataclasses import dataclass

REPEATED_SENTENCE = "repeated_sentence"
REPEATED_PLEASANTRY = "repeated_pleasantry"
SIGNOFF_PILEUP = "signoff_pileup"
EMOJI = "emoji"
FOREIGN_SCRIPT = "foreign_script"
TRUNCATED_FRAGMENT = "truncated_fragment"
INVALID_CHAR = "invalid_char"
MOJIBAKE = "mojibake"

#: Codes whose findings carry a span a cleaner may remove, in report order.
EDIT_CODES = (REPEATED_SENTENCE, REPEATED_PLEASANTRY, SIGNOFF_PILEUP, EMOJI, FOREIGN_SCRIPT,
              TRUNCATED_FRAGMENT, INVALID_CHAR, MOJIBAKE)

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
    """One problem: a stable reason code, the span to edit (or None) and a human detail.

    `replacement` is what a cleaner puts in place of the span: empty (the span is removed) for
    every code but ``mojibake``, whose findings carry the repaired text.
    """

    code: str
    span: tuple[int, int] | None
    detail: str = ""
    replacement: str = ""
