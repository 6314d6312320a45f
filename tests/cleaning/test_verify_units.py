"""verify's thresholds at their boundaries (the documented VerifyConfig defaults) and its helpers: sentence
matching, word containment, clipping, the dropped-content share and the prompt words."""
from __future__ import annotations

import difflib

import pytest

from cai_core.cleaning import verify as v
from cai_core.cleaning.verify import (ANSWERED_PROMPT, DROPPED_CONTENT, LONGER, NEW_SENTENCE, VerifyConfig, verify)
from cai_core.config.base import ConfigError

#: Only the check under test can fail.
LOOSE = dict(max_growth_chars=1000, max_new_words=100, check_rephrased=False, check_dropped_words=False,
             check_order=False, max_dropped_share=1.0, min_sentence_similarity=0.0)


@pytest.mark.parametrize("field,ok,bad", [
    ("max_growth_chars", (0, 5), (-1,)),
    ("max_new_words", (0, 5), (-1,)),
    ("min_sentence_similarity", (0.0, 0.5, 1.0), (-0.01, 1.01)),
    ("min_copy_share", (0.0, 0.5, 1.0), (-0.01, 1.01)),
    ("max_dropped_share", (0.0, 0.5, 1.0), (-0.01, 1.01)),
])
def test_config_bounds_are_inclusive(field, ok, bad):
    for value in ok:
        VerifyConfig(**{field: value})
    for value in bad:
        with pytest.raises(ConfigError, match=field):
            VerifyConfig(**{field: value})


def test_growth_is_allowed_up_to_max_growth_chars_not_counting_whitespace():
    assert verify("Walk daily.", "Walk   daily.").ok  # whitespace is not growth
    assert verify("Walk daily.", "Walk daily..").reasons == (LONGER,)  # one character over the default 0
    assert verify("Walk daily.", "Walk daily..", None, VerifyConfig(max_growth_chars=1)).ok  # at the limit
    assert LONGER in verify("Walk daily.", "Walk daily...", None, VerifyConfig(max_growth_chars=1)).reasons


def test_copy_share_at_the_default_minimum_passes_and_below_it_fails():
    original = "One two three four five six."
    at = verify(original, "One two three four five six seven eight nine ten.", None, VerifyConfig(**LOOSE))
    assert at.ok, at  # 6 of 10 words from the text: exactly min_copy_share 0.6
    below = verify(original, "One two three four five six seven eight nine ten eleven.", None, VerifyConfig(**LOOSE))
    assert ANSWERED_PROMPT in below.reasons and "only 55% of the reply's words" in below.detail
    mostly = verify(original, "One two three four five six seven.", None, VerifyConfig(**LOOSE))
    assert mostly.ok  # 6 of 7


def test_a_reply_without_words_is_no_copy_failure():
    assert verify("\U0001F600 \U0001F600 :)", ":)").ok


def test_dropped_content_share_at_the_limit_passes_and_beyond_fails():
    original = "Walk daily. Drink water. Sleep well. Have a great day!"
    cleaned = "Walk daily. Drink water. Have a great day!"  # 2 of 6 content words gone
    assert DROPPED_CONTENT not in verify(original, cleaned).reasons  # 1/3 <= 0.34
    assert DROPPED_CONTENT not in verify(original, cleaned, None, VerifyConfig(max_dropped_share=1 / 3)).reasons
    assert DROPPED_CONTENT in verify(original, cleaned, None, VerifyConfig(max_dropped_share=0.33)).reasons
    assert DROPPED_CONTENT in verify(original, "Walk daily. Have a great day!").reasons  # 4/6


def test_dropped_content_needs_three_content_words_and_skips_pleasantries_anywhere():
    assert DROPPED_CONTENT in verify("Walk daily outside. Have a great day!", "Have a great day!").reasons
    assert DROPPED_CONTENT not in verify("Walk daily. Have a great day!", "Have a great day!").reasons
    # a pleasantry first: the content after it still counts
    original = "Have a great day! Walk daily near parks. Drink cold water often. Sleep eight hours nightly."
    assert DROPPED_CONTENT in verify(original, "Have a great day!").reasons


def test_dropped_share_leaves_out_an_unfinished_last_sentence():
    sents = v._sentences("Walk daily near parks. Drink cold water often. Sleep eight hours")
    targets = v.target_scripts(None, "Walk daily near parks.")
    share, n = v._dropped_share(sents, set(), targets)
    assert (share, n) == (1.0, 8)  # walk daily near parks drink cold water often; not "sleep eight hours"
    share, n = v._dropped_share(sents, {"walk", "daily"}, targets)
    assert (share, n) == (6 / 8, 8)
    assert v._dropped_share(v._sentences("Walk daily."), set(), targets) == (0.0, 0)


def test_prompt_words_of_three_letters_or_more_that_are_not_stopwords_mark_an_answer():
    original = "Walk every day in the park. Drink water often after lunch."
    added = " Tea helps."
    assert ANSWERED_PROMPT in verify(original, original + added, "Tea?").reasons  # "tea": 3 letters
    short = verify(original, original + " Go the way.", "Is the go ok?")  # go, ok: too short; is, the: stopwords
    assert ANSWERED_PROMPT not in short.reasons and NEW_SENTENCE in short.reasons


def test_contained_is_the_share_of_words_found_in_order():
    assert v._contained(["a", "b", "c", "d"], ["a", "b", "x"]) == 0.5
    assert v._contained(["a", "b", "c"], ["x", "a", "y", "b", "c"]) == 1.0
    assert v._contained([], ["a"]) == 0.0


def test_clip_keeps_short_text_and_cuts_long_text_to_n_characters():
    assert v._clip("a  b\n c") == "a b c"
    assert v._clip("x" * 60) == "x" * 60
    assert v._clip("x" * 61) == "x" * 59 + "\u2026"
    assert v._clip("abcdef", 4) == "abc\u2026"


def _index(text: str) -> v._Index:
    return v._Index(v._sentences(text))


def test_match_prefers_the_most_similar_input_sentence():
    text = ("The big brown dog ran to the old red barn quickly. The big brown dog ran to a farm. "
            "Cats sleep all day.")
    index = _index(text)
    reply = v._sentences("The big brown dog ran to the old barn.")[0]
    ratios = [difflib.SequenceMatcher(None, reply.key, s.key, autojunk=False).ratio() for s in index.sents]
    assert 0.5 < ratios[1] < ratios[0] < 0.95  # both near enough at 0.5, neither stops the search
    lo, hi, r = index.match(reply, 0.5)
    assert (lo, hi) == (0, 0) and r == pytest.approx(ratios[0])


def test_match_by_containment_uses_one_sentence_in_order_not_twice():
    index = _index("Alpha beta gamma delta.")
    shuffled = v._sentences("Gamma delta alpha beta.")[0]
    assert index.match(shuffled, 0.8) is None  # only half its words in order
    kept = v._sentences("Alpha gamma delta.")[0]
    assert index.match(kept, 0.8)[:2] == (0, 0)


def test_match_of_a_kept_sentence_is_exact_and_of_a_stranger_none():
    index = _index("Walk daily. Drink water.")
    assert index.match(v._sentences("Drink water!")[0], 0.8) == (1, 1, 1.0)
    assert index.match(v._sentences("Quantum flux.")[0], 0.8) is None
