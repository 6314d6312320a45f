"""detectors.analysis piece by piece: emoji spans (keycaps), stray vs mostly-foreign script at the
max_stray_share boundary, masking, clipping, repair_first and texts that end in an emoji."""
from __future__ import annotations

from cai_core.metrics.detectors import (EMOJI, FOREIGN_SCRIPT, MOJIBAKE, TRUNCATED_FRAGMENT, DetectorConfig, detect,
                                        edit_findings)
from cai_core.metrics.detectors import analysis as a


def test_a_keycap_emoji_is_one_run_from_its_digit():
    text = "Press 1\ufe0f\u20e3 now to start."
    assert [(f.code, f.span) for f in edit_findings(text)] == [(EMOJI, (6, 9))]
    text = "Go 12 #\ufe0f\u20e3 and 7\ufe0f\u20e3 then stop."
    assert [(f.code, f.span) for f in edit_findings(text)] == [(EMOJI, (6, 9)), (EMOJI, (14, 17))]


def test_emoji_spans_cover_every_run_and_leave_text_alone():
    text = "A \U0001F60A\U0001F60A b \U0001F680 c \u2764\ufe0f d"
    assert a._emoji_spans(text) == [(2, 4), (7, 8), (11, 13)]
    assert a._emoji_spans("no emoji here") == []


def test_stray_script_at_the_max_stray_share_is_a_span_and_beyond_it_the_whole_answer():
    at = detect("Walking \u0434\u043e\u043c.", "Say hello")  # 3 of 10 letters Cyrillic: 0.30, the default
    assert [(f.code, f.span) for f in at] == [(FOREIGN_SCRIPT, (8, 11))]
    beyond = detect("Walking \u0434\u043e\u043c\u043e.", "Say hello")  # 4 of 11
    assert [(f.code, f.span) for f in beyond] == [(FOREIGN_SCRIPT, None)]
    assert "answer mostly in cyrillic (4/11 letters)" in beyond[0].detail
    looser = detect("Walking \u0434\u043e\u043c\u043e.", "Say hello", DetectorConfig(max_stray_share=0.4))
    assert [(f.code, f.span) for f in looser] == [(FOREIGN_SCRIPT, (8, 12))]


def test_a_stray_word_in_a_long_answer_is_cut_out_not_the_answer_judged():
    text = "The word \u041f\u0440\u0438\u0432\u0435\u0442 means hello in English here today."
    assert [(f.code, f.span) for f in edit_findings(text)] == [(FOREIGN_SCRIPT, (9, 15))]


def test_mask_blanks_every_span_even_after_overlapping_ones():
    assert a._mask("abcdefgh", []) == "abcdefgh"
    assert a._mask("abcdefgh", [(0, 4), (1, 3), (5, 7)]) == "    e  h"
    assert a._mask("abcdefgh", [(2, 5), (3, 6)]) == "ab    gh"
    assert len(a._mask("abcdefgh", [(6, 8), (0, 1)])) == 8


def test_clip_keeps_up_to_80_characters():
    assert a._clip("x" * 80) == "x" * 80
    assert a._clip("x" * 81) == "x" * 77 + "..."
    assert a._clip("abcdef", 5) == "ab..."
    assert a._clip("") == ""


def test_repair_first_returns_only_the_mojibake_findings():
    text = "Caf\u00c3\u00a9 is nice \U0001F60A."
    assert [f.code for f in edit_findings(text)] == [MOJIBAKE, EMOJI]
    assert [(f.code, f.span) for f in edit_findings(text, repair_first=True)] == [(MOJIBAKE, (3, 5))]
    plain = "Walk daily \U0001F60A."
    assert [f.code for f in edit_findings(plain, repair_first=True)] == [EMOJI]  # no mojibake: every finding


def test_a_text_ending_in_an_emoji_is_not_cut_off():
    found = detect("Walk daily. Rest well. Have fun \U0001F60A", None)
    assert TRUNCATED_FRAGMENT not in {f.code for f in found}
    assert [(f.code, f.span) for f in found] == [(EMOJI, (32, 33))]
    cut = detect("Walk daily. Rest well. Have fun and then", None)
    assert TRUNCATED_FRAGMENT in {f.code for f in cut}


def test_a_finding_says_how_much_it_covers():
    (bad,) = detect("Hello \ufffd\ufffd\ufffd world, this is fine.", "Say hello")
    assert (bad.span, bad.detail) == ((6, 9), "3 invalid character(s)")
    text = "The sky is blue today. " * 4 + "Anything else?"
    (rep,) = detect(text, "Say hello")
    assert rep.span == (23, 91) and text[rep.span[0]:rep.span[1]] == ("The sky is blue today. " * 3).strip()
    assert rep.detail == "repeated sentence: 'The sky is blue today.' (+2 more)"
    (two,) = detect("The sky is blue today. " * 2 + "Anything else?", "Say hello")
    assert two.detail == "repeated sentence: 'The sky is blue today.'"  # one repeat: no "+0 more"
