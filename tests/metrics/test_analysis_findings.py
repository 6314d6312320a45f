"""detectors.analysis, what its findings say: invalid-character counts, every emoji wherever it stands (also after
a stray variation selector), a sign-off's name under a heading-led answer, two separate loops in one answer, and a
fragment cut off on the line after a complete sentence."""
from __future__ import annotations

import pytest

from cai_core.metrics.detectors import (EMOJI, INVALID_CHAR, REPEATED_SENTENCE, SIGNOFF_PILEUP, TRUNCATED_FRAGMENT,
                                        detect)
from cai_core.metrics.detectors import analysis as a

SMILE, ROCKET = "\U0001F600", "\U0001F680"


def _found(text, prompt="Say hello"):
    return [(f.code, text[f.span[0]:f.span[1]] if f.span else None) for f in detect(text, prompt)]


@pytest.mark.parametrize("text, span, count", [
    ("ab\ufffd\ufffd\ufffd is fine here.", (2, 5), 3),  # a run longer than its offset
    ("\ufffd\ufffd start of the answer is fine.", (0, 2), 2),  # a run at the very start
    ("Hello there, my friend \x00 is fine.", (23, 24), 1)])
def test_an_invalid_character_finding_counts_its_run(text, span, count):
    (bad,) = [f for f in detect(text, "Say hello") if f.code == INVALID_CHAR]
    assert bad.span == span and bad.detail == f"{count} invalid character(s)"


@pytest.mark.parametrize("before", range(1, 8))
def test_every_emoji_is_found_wherever_it_stands(before):
    for between in range(1, 14):
        text = "a" * before + SMILE + "b" * between + ROCKET + "c"
        second = before + 1 + between
        assert a._emoji_spans(text) == [(before, before + 1), (second, second + 1)], text


def test_an_emoji_after_a_stray_variation_selector_is_still_found():
    text = f"Next \u2192\ufe0f {SMILE} done."  # U+2192 is no emoji: its selector stands alone
    assert a._emoji_spans(text) == [(8, 9)]
    assert [(f.code, f.span) for f in detect(text, "Say hello") if f.code == EMOJI] == [(EMOJI, (8, 9))]
    assert a._emoji_spans("A lone \ufe0f and \u20e3 mark no emoji.") == []


def test_the_name_under_a_sign_off_goes_with_it_after_a_heading():
    # the heading is a unit the sentence rules skip; the name line still belongs to the sign-off above it
    text = "# Plan\n\nSee the attached plan.\n\nCheers!\nBest regards,\nAlex"
    assert _found(text, None) == [(SIGNOFF_PILEUP, "Best regards,\nAlex")]


def test_two_separate_loops_in_one_answer_are_both_reported():
    text = ("Here is my plan. Eat the red apple. Drink the cold water. Eat the red apple. Drink the cold water. "
            "Then rest. Walk to the park. Walk to the park. That is all for today.")
    assert _found(text) == [(REPEATED_SENTENCE, "Eat the red apple. Drink the cold water."),
                            (REPEATED_SENTENCE, "Walk to the park.")]


def test_a_fragment_on_the_line_after_a_complete_sentence_is_cut_off():
    # weak evidence (no dangling word, no comma): it counts because a complete sentence precedes it in the paragraph
    text = "Walk daily and rest well.\nThen eat well and sleep more often today"
    assert _found(text) == [(TRUNCATED_FRAGMENT, "Then eat well and sleep more often today")]
    # after a list item the line is no continuation of prose: nothing to go on
    assert _found("- Walk daily and rest well.\nThen eat well and sleep more often today") == []
    # and after a blank line it starts a paragraph of its own
    assert _found("Walk daily and rest well.\n\nThen eat well and sleep more often today") == []
