"""The far-repeat rule: a long sentence (min_far_repeat_words words or more, 8 by default) said again anywhere
is a repeat, even when neither back to back nor in a looping tail; a shorter one said again mid-text is kept
(it may be meant), and structure (code, lists, quotes) is never edited. Both the fast path and the exhaustive
path must agree."""
from __future__ import annotations

import pytest

from cai_core.cleaning.rule import RuleCleanConfig, rule_clean
from cai_core.metrics.detectors import DetectorConfig, detect

NINE = "Always check the weather forecast before you leave home."      # 9 words
EIGHT = "Check the weather forecast before you leave home."             # 8 words: the default boundary
SEVEN = "Check the weather forecast before leaving home."               # 7 words
MIDDLE = "Pack a light rain jacket. Bring enough water for the day."
END = "Start early to avoid the heat."

PATHS = [pytest.param(True, id="fast_path"), pytest.param(False, id="exhaustive")]


def _clean(text, fast, **detector):
    return rule_clean(text, None, RuleCleanConfig(fast_path=fast, detector=DetectorConfig(**detector)))


@pytest.mark.parametrize("fast", PATHS)
@pytest.mark.parametrize("sentence", [NINE, EIGHT], ids=["nine_words", "eight_words"])
def test_a_long_sentence_said_again_mid_text_is_removed(sentence, fast):
    text = f"{sentence} {MIDDLE} {sentence} {END}"
    out = _clean(text, fast)
    assert out.text == f"{sentence} {MIDDLE} {END}"
    assert out.changed and out.reasons == ("repeated_sentence",)


@pytest.mark.parametrize("fast", PATHS)
def test_a_long_sentence_said_three_times_far_apart_is_kept_once(fast):
    text = f"{NINE} Pack a light rain jacket. {NINE} Bring enough water for the day. {NINE} {END}"
    assert _clean(text, fast).text == f"{NINE} Pack a light rain jacket. Bring enough water for the day. {END}"


def test_the_far_repeat_is_reported_with_the_span_of_the_later_copy():
    text = f"{NINE} {MIDDLE} {NINE} {END}"
    found = [f for f in detect(text) if f.code == "repeated_sentence"]
    start = text.index(NINE, 1)
    assert [f.span for f in found] == [(start, start + len(NINE))]


@pytest.mark.parametrize("fast", PATHS)
def test_a_short_sentence_said_again_mid_text_is_kept(fast):
    text = f"{SEVEN} {MIDDLE} {SEVEN} {END}"
    out = _clean(text, fast)
    assert out.text == text and not out.changed


@pytest.mark.parametrize("fast", PATHS)
def test_a_short_repeat_in_the_looping_tail_is_removed(fast):
    assert _clean(f"{SEVEN} {MIDDLE} {SEVEN}", fast).text == f"{SEVEN} {MIDDLE}"


@pytest.mark.parametrize("fast", PATHS)
def test_the_word_limit_is_the_configured_one(fast):
    text = f"{NINE} {MIDDLE} {NINE} {END}"
    assert _clean(text, fast, min_far_repeat_words=10).text == text  # 9 < 10: kept
    assert _clean(text, fast, min_far_repeat_words=9).text == f"{NINE} {MIDDLE} {END}"
    seven = f"{SEVEN} {MIDDLE} {SEVEN} {END}"
    assert _clean(seven, fast, min_far_repeat_words=7).text == f"{SEVEN} {MIDDLE} {END}"


@pytest.mark.parametrize("fast", PATHS)
def test_a_long_far_repeat_in_another_language_is_removed(fast):
    first = "Prüfe immer den Wetterbericht, bevor du das Haus verlässt."
    text = f"{first} Packe eine leichte Regenjacke ein. Nimm genug Wasser mit. {first} Starte früh am Morgen."
    assert _clean(text, fast).text == (f"{first} Packe eine leichte Regenjacke ein. Nimm genug Wasser mit. "
                                       "Starte früh am Morgen.")


@pytest.mark.parametrize("fast", PATHS)
@pytest.mark.parametrize("text", [
    f"Run this:\n\n```\necho 'Always check the weather forecast before you leave home now'\n"
    f"echo 'Always check the weather forecast before you leave home now'\n```\n\nThat is all.",
    f"Steps:\n- {NINE}\n- Pack a light rain jacket.\n- {NINE}\n\nDone.",
    f'He said: "{NINE}" Later he wrote it down. Pack a light rain jacket. Then: "{NINE}" {END}',
], ids=["code", "list", "quote"])
def test_long_repeats_inside_structure_are_not_edited(text, fast):
    out = _clean(text, fast)
    assert out.text == text and not out.changed
