"""Collapse metrics, one response at a time: `collapse_metrics` agrees with the definitions (rep-n from `ngrams`,
the tail loop from `is_tail_loop`) on short texts at the edges (exactly five tokens, a last sentence that sorts
after an earlier one), and the hand-computed values of those edges."""
from __future__ import annotations

import pytest

from cai_core.metrics.repetition import collapse_metrics, is_tail_loop, ngrams, tokens

TEXTS = [
    "a b c d e",                       # five tokens, no repeat: two distinct 4-grams
    "a a a a a",                       # five tokens, its last 4-gram is its first
    "\U0001F60A \U0001F60A \U0001F60A \U0001F60A \U0001F60A",
    "a b c d e f g",
    "a b c d a b c d",                 # ends in a 4-gram said before
    "One. Two. Three.",
    "Apple pie is great. Zebras run.",  # an earlier sentence that sorts before the last is no repeat
    "Zebras run fast. Apple pie.",
    "Walk daily. Rest. Walk daily.",
    "the cat sat on the mat and then the cat sat on",
    "x y z",
    "a b a b",
]


def _rep(text: str, n: int) -> float | None:
    grams = ngrams(tokens(text), n)
    return 1 - len(set(grams)) / len(grams) if grams else None


@pytest.mark.parametrize("text", TEXTS)
def test_one_response_measures_what_the_definitions_say(text):
    m = collapse_metrics([text])
    assert m["tail_loop_rate"] == float(is_tail_loop(text))
    for n in (2, 3, 4):
        expected = _rep(text, n)
        assert m[f"rep_{n}"] == pytest.approx(0.0 if expected is None else expected), n


def test_five_distinct_tokens_neither_repeat_nor_loop():
    m = collapse_metrics(["a b c d e"])
    assert (m["rep_2"], m["rep_3"], m["rep_4"], m["tail_loop_rate"]) == (0.0, 0.0, 0.0, 0.0)


def test_five_equal_tokens_loop_at_the_tail():
    m = collapse_metrics(["\U0001F60A \U0001F60A \U0001F60A \U0001F60A \U0001F60A"])
    assert m["tail_loop_rate"] == 1.0
    assert m["rep_4"] == pytest.approx(0.5) and m["rep_2"] == pytest.approx(0.75)


def test_a_last_sentence_is_a_loop_only_when_said_before_word_for_word():
    assert not is_tail_loop("Apple pie is great. Zebras run.")
    assert not is_tail_loop("Zebras run fast. Apple pie.")
    assert is_tail_loop("Zebras run fast. Apple pie. zebras   RUN fast.")
    rate = collapse_metrics(["Apple pie is great. Zebras run.", "One. Two. Three.", "Walk daily. Rest. Walk daily."])
    assert rate["tail_loop_rate"] == pytest.approx(1 / 3)
