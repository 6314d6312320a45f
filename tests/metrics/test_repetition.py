"""Collapse metrics: hand-computed values for the exact definitions, and edge cases."""
from __future__ import annotations

import math
import time

import pytest

from cai_core.metrics.repetition import METRIC_KEYS, collapse_metrics, is_tail_loop, ngrams, sentences, tokens


def test_tokens_split_words_and_every_symbol():
    assert tokens("Hi!! 😊😊 I'm FINE.") == ["hi", "!", "!", "😊", "😊", "i", "'", "m", "fine", "."]
    assert tokens("") == [] and tokens(" \n\t ") == []
    assert tokens("Ça va? 東京") == ["ça", "va", "?", "東京"]


def test_ngrams():
    assert ngrams(["a", "b", "c"], 2) == [("a", "b"), ("b", "c")]
    assert ngrams(["a"], 2) == []
    with pytest.raises(ValueError):
        ngrams(["a"], 0)


def test_hand_computed_set():
    # 'a b a b': 2-grams ab ba ab -> 1 - 2/3; 3-grams aba bab -> 0; one 4-gram -> 0
    # 'Hi. Hi.': tokens hi . hi . -> same shape as above
    # 'x y z w v x y z w': 2-grams 8 (5 unique), 3-grams 7 (5 unique), 4-grams 6 (5 unique)
    m = collapse_metrics(["a b a b", "Hi. Hi.", "", "x y z w v x y z w"])
    assert set(m) == set(METRIC_KEYS)
    assert m["n"] == 4
    assert m["rep_2"] == pytest.approx((1 / 3 + 1 / 3 + 3 / 8) / 3)
    assert m["rep_3"] == pytest.approx((0 + 0 + 2 / 7) / 3)
    assert m["rep_4"] == pytest.approx((0 + 0 + 1 / 6) / 3)
    # pooled: 17 tokens, 9 distinct (a b hi . x y z w v); 14 2-grams, 9 distinct
    assert m["distinct_1"] == pytest.approx(9 / 17)
    assert m["distinct_2"] == pytest.approx(9 / 14)
    # non-empty: 3; loops: 'Hi. Hi.' (sentence) and 'x y z w v x y z w' (4-gram) -> 2/3
    assert m["tail_loop_rate"] == pytest.approx(2 / 3)


def test_rep_n_averages_only_responses_with_an_ngram():
    # 'a' has no 2-gram, so only 'a a' (rep_2 = 0) counts for rep_2; rep_3 has no data at all
    m = collapse_metrics(["a", "a a"])
    assert m["rep_2"] == 0.0 and m["rep_3"] == 0.0 and m["rep_4"] == 0.0
    m = collapse_metrics(["a", "b b b"])  # 2-grams (b,b) twice -> 1 - 1/2
    assert m["rep_2"] == pytest.approx(0.5)


def test_distinct_is_pooled_over_the_set():
    m = collapse_metrics(["a b", "a b"])
    assert m["distinct_1"] == pytest.approx(2 / 4)
    assert m["distinct_2"] == pytest.approx(1 / 2)
    assert m["rep_2"] == 0.0  # each response alone has no repeat


def test_no_data_gives_zeros_never_nan():
    for texts in ([], [""], ["   ", "\n"]):
        m = collapse_metrics(texts)
        assert all(isinstance(v, (int, float)) and not math.isnan(v) for v in m.values())
        assert m["n"] == len(texts)
        assert all(m[k] == 0.0 for k in METRIC_KEYS if k != "n")


def test_tail_loop_rate_counts_only_non_empty_responses():
    m = collapse_metrics(["", "   ", "Hi. Hi."])
    assert m["tail_loop_rate"] == 1.0 and m["n"] == 3


def test_tail_loop_sentence_rule():
    assert is_tail_loop("Have a great day! Thanks. Have a great day!")
    assert is_tail_loop("Hello  World.\nhello world.")  # case and whitespace do not matter
    assert is_tail_loop("A\nB\nA")  # a newline ends a sentence
    assert not is_tail_loop("Wow!!! Great!!!")  # a run of marks ends one sentence, not three
    assert not is_tail_loop("One. Two. Three.")


def test_tail_loop_four_gram_rule():
    assert is_tail_loop("the cat sat on the mat and then the cat sat on")  # 'the cat sat on' seen before
    assert not is_tail_loop("a b c d")  # exactly four tokens: nothing earlier
    assert not is_tail_loop("a b c d e")
    assert is_tail_loop("😊 😊 😊 😊 😊")  # emoji are tokens too


def test_tail_loop_empty_and_whitespace():
    assert not is_tail_loop("") and not is_tail_loop(" \n ")


def test_sentences_normalise():
    assert sentences("Hi!!  There.\nNew   line") == ["hi!!", "there.", "new line"]


def test_rejects_a_single_string_and_non_strings():
    with pytest.raises(TypeError):
        collapse_metrics("not a list")
    with pytest.raises(TypeError):
        collapse_metrics([None])


def test_mixed_scripts_and_invalid_surrogates():
    m = collapse_metrics(["English, русский, 日本語, العربية. English, русский.", "bad \ud83d half \udc00 pair"])
    assert m["n"] == 2 and 0.0 <= m["rep_2"] <= 1.0
    assert tokens("x \ud83d y") == ["x", "\ud83d", "y"]


@pytest.mark.slow
@pytest.mark.parametrize("unit", ["Let me know if you have any questions! ", "word ", "😊"])
def test_ten_megabytes_is_fast(unit):
    text = unit * (10 * 1024 * 1024 // len(unit.encode()))
    t0 = time.perf_counter()
    m = collapse_metrics([text])
    elapsed = time.perf_counter() - t0
    assert m["rep_4"] > 0.99 and m["tail_loop_rate"] == 1.0
    # The throughput figure is benchmarks/clean_throughput.py's; this bound (about 15x the usual time) only catches a
    # complexity blow-up, and a loaded shared machine cannot reach it.
    assert elapsed < 120.0, f"collapse_metrics on 10 MB took {elapsed:.1f}s"
