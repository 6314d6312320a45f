"""The clean stage's bookkeeping around the LLM cleaner: config bounds, reply counts, usage, edit/fallback counts.

tests/cleaning/test_llm_clean.py checks what the cleaner keeps and rejects on a corpus; this file checks the counts
that the report and the cost estimate are built from, and that a model answering the wrong number of requests is
an error, not a silent misalignment of replies and texts.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from cai_core.errors import ConfigError
from cai_core.stages import clean
from cai_core.stages.clean import CleanConfig, clean_rows
from cai_core.tasks import clean_llm
from tests.fakes import RecordingChatModel

LOOP = "You should water it" + " and water it" * 20 + " once a month in summer."
FIXED = "You should water it once a month in summer."


def _cleaner(fix: dict[str, str]):
    """Replies to a cleanup request: the text from `fix`, or the unchanged marker."""
    def reply(conv):
        text, _, nonce = clean_llm.unpack_request(conv[-1]["content"])
        return clean_llm.format_reply(fix.get(text), nonce)
    return reply


@pytest.mark.parametrize("field, bad, good", [
    ("max_text_chars", -1, 0), ("max_row_bytes", 1023, 1024), ("prompt_field", "", "p"),
    ("hybrid_codes", ("no_such_code",), ())])
def test_config_bounds(field, bad, good):
    with pytest.raises(ConfigError, match=field):
        CleanConfig(**{field: bad}).validate()
    CleanConfig(**{field: good}).validate()


def test_calls_teacher_only_for_the_llm_variants():
    assert [CleanConfig(variant=v).calls_teacher for v in ("none", "rule", "llm", "hybrid")] == \
        [False, False, True, True]


class _WrongCount(RecordingChatModel):
    def __init__(self, delta):
        super().__init__(reply=_cleaner({}))
        self.delta = delta

    def chat(self, conversations, sampling):
        out = super().chat(conversations, sampling)
        return out[:-1] if self.delta < 0 else out + out[:1]


@pytest.mark.parametrize("delta", [-1, 1])
def test_a_model_returning_the_wrong_number_of_replies_is_an_error(delta):
    rows = [{"prompt": "q", "r": "First text."}, {"prompt": "q", "r": "Second text."}]
    with pytest.raises(RuntimeError, match="replies for 2 conversations"):
        clean_rows(CleanConfig(variant="llm"), rows, ("r",), "x", _WrongCount(delta))


def test_usage_is_estimated_from_the_texts_when_the_backend_reports_none():
    rows = [{"prompt": "How often should I water a cactus?", "r": LOOP}, {"prompt": "Hi", "r": "A fine answer."}]
    llm = RecordingChatModel(reply=_cleaner({LOOP: FIXED}))
    _, counts = clean_rows(CleanConfig(variant="llm", llm=clean_llm.LLMCleanConfig(batch_size=1)), rows, ("r",),
                           "x", llm)
    convs = [conv for _, conv in llm.sent]
    replies = [_cleaner({LOOP: FIXED})(c) for c in convs]
    assert counts["llm_calls"] == 2  # batch_size 1: one call a text
    assert counts["llm_tokens_in"] == sum(clean_llm.estimate_tokens(m["content"]) for c in convs for m in c)
    assert counts["llm_tokens_out"] == sum(clean_llm.estimate_tokens(r) for r in replies)
    assert counts["llm_tokens_estimated"] == 1


class _Reporting(RecordingChatModel):
    """A backend that counts its own tokens (as the OpenAI client's summary does)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.summary = SimpleNamespace(prompt_tokens=1000, completion_tokens=50)

    def chat(self, conversations, sampling):
        self.summary.prompt_tokens += 7 * len(conversations)
        self.summary.completion_tokens += 3 * len(conversations)
        return super().chat(conversations, sampling)


def test_usage_is_the_backends_own_count_when_it_reports_one():
    rows = [{"prompt": "q", "r": "One."}, {"prompt": "q", "r": "Two."}, {"prompt": "q", "r": "Three."}]
    _, counts = clean_rows(CleanConfig(variant="llm"), rows, ("r",), "x", _Reporting(reply=_cleaner({})))
    # only what this run spent: the counts before it are not charged to it
    assert (counts["llm_tokens_in"], counts["llm_tokens_out"], counts["llm_tokens_estimated"]) == (21, 9, 0)
    assert counts["llm_calls"] == 1


def test_edits_acceptances_and_shares_are_counted():
    rows = [{"prompt": "How often should I water a cactus?", "r": LOOP},   # edited by the LLM
            {"prompt": "Hi", "r": "A fine answer."},                        # unchanged marker
            {"prompt": "Hi", "r": "Another fine answer."},                  # the same text sent back, padded
            {"prompt": "Hi", "r": "   "}]                                   # empty: flagged, not sent
    fix = {LOOP: FIXED, "Another fine answer.": "  Another fine answer.\n"}
    out, counts = clean_rows(CleanConfig(variant="llm"), rows, ("r",), "x", RecordingChatModel(reply=_cleaner(fix)))
    assert counts["llm_sent"] == 3 and counts["llm_requests"] == 3
    assert counts["llm_accepted"] == 3
    assert counts["llm_edited"] == 1  # a reply that only differs in surrounding space is no edit
    assert counts["llm_share"] == pytest.approx(3 / 4)
    assert counts["texts"] == 4 and counts["changed"] == 1 and counts["flag_empty_input"] == 1
    assert out[0]["r_cleaned"] == FIXED and out[0]["r_cleanup"]["source"] == "llm"
    assert out[0]["r_cleanup"]["changed"] and out[0]["r_cleanup"]["reasons"]
    assert out[2]["r_cleaned"] == "Another fine answer." and not out[2]["r_cleanup"]["changed"]
    assert out[2]["r_cleanup"]["reasons"] == []
    assert counts.get("fallbacks", 0) == 0


@pytest.mark.parametrize("fix", [FIXED, "You should water it and once a month in summer."])
def test_an_edit_counts_as_an_edit_however_it_compares_as_a_string(fix):
    # FIXED sorts after LOOP, the other before it: the edit count must not depend on string order
    rows = [{"prompt": "How often should I water a cactus?", "r": LOOP}]
    out, counts = clean_rows(CleanConfig(variant="llm"), rows, ("r",), "x", RecordingChatModel(reply=_cleaner({LOOP: fix})))
    assert counts["llm_accepted"] == 1 and counts["llm_edited"] == 1
    assert out[0]["r_cleaned"] == fix


def test_a_text_too_long_to_send_is_one_fallback():
    cfg = CleanConfig(variant="llm", llm=clean_llm.LLMCleanConfig(max_new_tokens=64))
    rows = [{"prompt": "q", "r": "A long answer sentence number one. " * 20 + "I hope this helps! I hope this helps!"}]
    llm = RecordingChatModel(reply=_cleaner({}))
    out, counts = clean_rows(cfg, rows, ("r",), "x", llm)
    assert llm.sent == []
    assert counts["fallbacks"] == 1 and counts["fallback_too_long"] == 1 and counts["llm_sent"] == 0
    assert counts["llm_share"] == 0.0
    assert out[0]["r_cleanup"]["fallback"] == "too_long"


def test_variant_none_read_from_a_file_passes_texts_through():
    # a value parsed from YAML/JSON is a fresh string, not the interned literal: compare by value
    none = "".join(["no", "ne"])
    rows = [{"prompt": "How often should I water a cactus?", "r": LOOP}]
    out, counts = clean_rows(CleanConfig(variant=none), rows, ("r",), "x")
    assert out[0]["r_cleaned"] == LOOP and out[0]["r_cleanup"]["source"] == "input"
    assert counts["changed"] == 0
