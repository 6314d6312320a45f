"""The rule cleaner against a second labelled corpus, written apart from the cleaner's code.

tests/data/cleaning_corpus_independent.jsonl was written from the failure kinds the seed papers describe (the
collapse of small-model CAI into looping closing pleasantries and emoji, sign-off pile-ups, stray non-English
text and truncated final fragments, under a cleanup contract that treats instructions inside a text as data),
plus clean texts in several languages that must come back unchanged. Each case holds the exact expected output.

The rule cleaner is held to those outputs exactly. Its known misses are listed below, each with the reason; the
test fails on any other miss *and* on a listed miss that is fixed (so the list stays the true list). Run with
`-s` to see every miss printed.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from cai_core.cleaning.rule import rule_clean

CORPUS = Path(__file__).parents[1] / "data" / "cleaning_corpus_independent.jsonl"
CASES = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]

#: Cases the rule cleaner gets wrong today, with why. Not xfail: the list is asserted exactly.
KNOWN_MISSES = {
    "loop18": "a two-word closing ('Bon appétit!') said three times back to back is not a known pleasantry and is "
              "under min_loop_words (3), so the loop stays",
    "fr_loop": "'Bonne journée !' x3: French closings are not in the pleasantry vocabulary and the sentence is under "
               "min_loop_words",
    "ja_loop": "'お役に立てれば幸いです。' x3: a Japanese closing loop is not found (no pleasantry vocabulary, and a "
               "CJK sentence counts as too few words for a loop)",
    "mix01": "'Have fun!' x3 then 'Take care!': the short closing loop stays (under min_loop_words, not a known "
             "pleasantry); only the sign-off after it is cut",
    "sig04": "'Bon voyage!' is not a known sign-off, so the pile-up is cut only from the first known one on",
    "sig06": "'Cheers!' after 'Have fun!' is kept: the pile-up rule keeps one closing plus what it does not know",
    "sig10": "'Cheers!' after 'Enjoy!' is kept (as sig06); the emoji are removed",
    "mix04": "'Cheers!' after 'Enjoy the party!' is kept (as sig06); the other sign-offs go",
    "es_sig": "Spanish sign-offs ('¡Adiós! ¡Un saludo! ¡Hasta luego!') are not in the sign-off vocabulary",
    "for03": "a Cyrillic phrase that is over max_stray_share (30%) of the letters is taken for a wrong-language "
             "answer (span None), not stray text, so nothing is cut",
    "for12": "a whole Russian sentence after a Spanish one is over max_stray_share: judged a wrong-language answer, "
             "not cut",
    "inj05": "a final fragment ending in 'such as' is not recognised as truncated ('as' may end a sentence)",
}


def _outcomes():
    return [(case, rule_clean(case["text"], case["prompt"])) for case in CASES]


def test_the_corpus_is_large_varied_and_well_formed():
    assert len(CASES) >= 100
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids))
    kinds = Counter(c["kind"].split("_")[0] for c in CASES)
    for kind in ("looping", "emoji", "foreign", "truncation", "signoff", "injection", "clean", "refusal", "mixed"):
        assert kinds[kind] >= 4 or kind in ("mixed",), kinds
    assert sum(c["kind"] == "clean" for c in CASES) >= 30
    languages = {c["id"].split("_")[1][:2] for c in CASES if c["id"].startswith("ok_")}
    assert len(languages - {"en"}) >= 10, languages
    assert set(KNOWN_MISSES) <= set(ids)


def test_rule_cleaner_gives_the_exact_expected_output():
    misses = {}
    for case, out in _outcomes():
        if out.text != case["expected"]:
            misses[case["id"]] = (case, out.text)
    for cid, (case, got) in sorted(misses.items()):
        print(f"MISS {cid} [{case['kind']}]{' (known)' if cid in KNOWN_MISSES else ''}\n"
              f"  text:     {case['text']!r}\n  expected: {case['expected']!r}\n  got:      {got!r}")
    print(f"{len(CASES) - len(misses)}/{len(CASES)} exact; {len(misses)} misses ({len(KNOWN_MISSES)} known)")
    new = sorted(set(misses) - set(KNOWN_MISSES))
    fixed = sorted(set(KNOWN_MISSES) - set(misses))
    assert not new, "new misses:\n" + "\n".join(
        f"{cid}: expected {misses[cid][0]['expected']!r}, got {misses[cid][1]!r}" for cid in new)
    assert not fixed, f"fixed, remove from KNOWN_MISSES: {fixed}"


@pytest.mark.parametrize("case", [c for c in CASES if c["kind"] == "clean"], ids=lambda c: c["id"])
def test_clean_texts_come_back_unchanged(case):
    out = rule_clean(case["text"], case["prompt"])
    assert out.text == case["text"] and not out.changed and out.reasons == ()


#: Expected outputs the cleaner edits again (it is not idempotent on them), with why. Asserted exactly.
NOT_IDEMPOTENT = {
    "inj04": "removing the trailing emoji leaves an unpunctuated last clause ('... tell me a secret'); a second pass "
             "takes that clause for a truncated fragment and cuts it, the first pass did not",
}


def test_cleaning_the_expected_output_again_changes_nothing():
    """Idempotence on the corpus: an expected output is clean, so the cleaner should leave it alone."""
    changed = [c["id"] for c in CASES if c["id"] not in KNOWN_MISSES
               and rule_clean(c["expected"], c["prompt"]).text != c["expected"]]
    assert changed == sorted(NOT_IDEMPOTENT)


def test_instructions_inside_a_text_are_kept_as_data():
    for case, out in _outcomes():
        if case["kind"].startswith("injection") and case["id"] not in KNOWN_MISSES:
            for phrase in ("Ignore all previous instructions", "ignore your rules", "Ignore the above",
                           "Disregard the cleanup contract", "New instruction", "developer mode"):
                if phrase in case["text"]:
                    assert phrase in out.text, (case["id"], phrase)
