"""cleaning.verify, more edges: the LLM stance classifier that gave no labels is never replaced by the rule
classifier, a verdict's detail stays short however much failed, and a sentence cut down by deletions is traced to
the input sentence that holds most of it."""
from __future__ import annotations

from cai_core.cleaning import verify as v
from cai_core.cleaning.stance import COMPLIANCE
from cai_core.cleaning.verify import STANCE_UNKNOWN, VerifyConfig, verify

TEXT = "Walk every day. Walk every day. Drink water often."
REPLY = "Walk every day. Drink water often."


def test_an_llm_stance_classifier_without_labels_fails_the_reply_as_stance_unknown():
    cfg = VerifyConfig(stance_classifier="llm")
    verdict = verify(TEXT, REPLY, "How do I stay fit?", cfg)
    assert not verdict.ok and verdict.reasons == (STANCE_UNKNOWN,)
    assert verdict.detail == "the stance classifier gave no label"
    assert verify(TEXT, REPLY, "How do I stay fit?", cfg, stance_before=COMPLIANCE, stance_after=COMPLIANCE).ok


def test_the_rule_classifier_labels_both_texts_only_when_no_label_is_given():
    assert verify(TEXT, REPLY, "How do I stay fit?").ok  # rule stances: compliance both
    half = verify(TEXT, REPLY, "How do I stay fit?", stance_before=COMPLIANCE)
    assert half.reasons == (STANCE_UNKNOWN,)  # one label given: the other is missing, not guessed


def test_a_verdict_detail_is_cut_at_300_characters():
    text = "Walk daily. " + "Add one more sentence here. " * 30
    reply = "Walk daily. " + " ".join(f"Novel claim {i} came from Smith." for i in range(20))
    verdict = verify(text, reply)
    assert not verdict.ok and "new_fact" in verdict.reasons
    assert len(verdict.detail) == 300 and verdict.detail.startswith("new_fact: 'Novel claim 0 came from Smith.'; ")
    short = verify("Walk daily. Rest well.", "Walk daily. Rest well. Call Novak today.")
    # under the cap every failed check is said, in full: 15 characters "CallNovaktoday.", 4 of 7 words kept
    assert short.detail == ("15 characters longer; new_fact: 'Call Novak today.'; "
                            "only 57% of the reply's words are in the text")


def test_a_cut_down_sentence_is_traced_to_the_input_sentence_that_holds_all_of_it():
    # neither input sentence is near enough as a whole (difflib ratio under 0.8), so containment decides: the
    # first holds every word of the reply sentence in order, the second four of its five
    index = v._Index(v._sentences("Alpha beta gamma delta epsilon zeta eta theta. "
                                  "Alpha gamma epsilon eta iota kappa lambda mu."))
    cut = v._sentences("Alpha gamma epsilon eta theta.")[0]
    assert all(v._ratio(cut.key, s.key) < 0.8 for s in index.sents)
    assert v._contained(cut.words, index.sents[1].words) == 0.8
    assert index.match(cut, 0.8) == (0, 0, 1.0)
