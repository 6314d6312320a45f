"""The clean stage around its LLM cleaner, piece by piece: the size limits, token usage (reported in part, or
counted by the backend from a non-zero start), the LLM stance classifier's labels and cost, what an accepted edit
is said to have fixed, and an empty input."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from cai_core.cleaning.rule import rule_clean
from cai_core.stages import clean
from cai_core.stages.clean import CleanConfig, clean_rows
from cai_core.tasks import clean_llm, stance
from tests.fakes import RecordingChatModel

LOOP = "Water the cactus once a month. " * 3 + "Give it plenty of sun."
FIXED = "Water the cactus once a month. Give it plenty of sun."


def _is_stance(conv) -> bool:
    content = conv[-1]["content"]
    return content.startswith("Marker code: ") and "\n<<<RESPONSE " in content


def _stance_text(conv) -> str:
    return conv[-1]["content"].split(">>>\n", 1)[1].rsplit("\n<<<END RESPONSE", 1)[0]


def _teacher(fix: dict[str, str], label=lambda text: "COMPLIANCE"):
    """Cleanup replies from `fix` (else the unchanged marker); stance replies from `label(text)`."""
    def reply(conv):
        if _is_stance(conv):
            return label(_stance_text(conv))
        text, _, nonce = clean_llm.unpack_request(conv[-1]["content"])
        return clean_llm.format_reply(fix.get(text), nonce)
    return reply


# ---- size limits


def test_a_text_at_the_limit_is_cleaned_and_one_over_it_passes_through():
    cfg = CleanConfig(max_text_chars=len(LOOP))
    out, counts = clean_rows(cfg, [{"prompt": "q", "r": LOOP}, {"prompt": "q", "r": LOOP + " "}], ("r",), "x")
    assert out[0]["r_cleaned"] == rule_clean(LOOP, "q").text != LOOP
    assert out[0]["r_cleanup"]["flags"] == [] and out[0]["r_cleanup"]["source"] == "rule"
    assert out[1]["r_cleaned"] == LOOP + " " and out[1]["r_cleanup"]["flags"] == ["oversized"]
    assert out[1]["r_cleanup"]["source"] == "input" and counts["flag_oversized"] == 1


def test_the_default_limit_is_16_million_characters():
    text = "a" * 16_000_001  # one over: passed through without running the rules on it
    out, counts = clean_rows(CleanConfig(), [{"r": text}], ("r",), "x")
    assert out[0]["r_cleanup"]["flags"] == ["oversized"] and out[0]["r_cleaned"] is text
    assert counts["flag_oversized"] == 1 and counts["changed"] == 0


# ---- token usage


class _Counting(RecordingChatModel):
    """A backend with its own running token counters (a summary), already non-zero when the stage starts."""

    def __init__(self, reply, prompt_tokens=500, completion_tokens=77, per_in=11, per_out=13):
        super().__init__(reply=reply)
        self.summary = SimpleNamespace(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        self.per_in, self.per_out = per_in, per_out

    def chat(self, conversations, sampling):
        if isinstance(self.summary.prompt_tokens, int):
            self.summary.prompt_tokens += self.per_in * len(conversations)
        if isinstance(self.summary.completion_tokens, int):
            self.summary.completion_tokens += self.per_out * len(conversations)
        return super().chat(conversations, sampling)


def test_reported_usage_is_what_this_run_added_to_the_backends_counters():
    rows = [{"prompt": "q", "r": t} for t in ("One thing.", "Two things.", "Three things.")]
    _, counts = clean_rows(CleanConfig(variant="llm"), rows, ("r",), "x", _Counting(_teacher({})))
    assert (counts["llm_tokens_in"], counts["llm_tokens_out"], counts["llm_tokens_estimated"]) == (33, 39, 0)


@pytest.mark.parametrize("prompt_tokens, completion_tokens", [(500, None), (None, 77)])
def test_a_backend_reporting_only_half_its_usage_is_estimated(prompt_tokens, completion_tokens):
    rows = [{"prompt": "q", "r": "One thing."}]
    llm = _Counting(_teacher({}), prompt_tokens, completion_tokens)
    _, counts = clean_rows(CleanConfig(variant="llm"), rows, ("r",), "x", llm)
    (_, conv), = llm.sent
    assert counts["llm_tokens_estimated"] == 1
    assert counts["llm_tokens_in"] == sum(clean_llm.estimate_tokens(m["content"]) for m in conv)


# ---- the LLM stance classifier


def test_each_text_is_judged_by_its_own_stance_labels():
    texts = ["Boil the eggs. " * 3 + "Peel them.", "Rinse the rice. " * 3 + "Cook it.",
             "Slice the bread. " * 3 + "Toast it."]
    fix = {t: rule_clean(t, None).text for t in texts}
    flipped = fix[texts[1]]  # the classifier calls only the second text's cleanup a refusal

    def label(text):
        return "REFUSAL" if text == flipped else "COMPLIANCE"

    cfg = CleanConfig(variant="llm", verify=clean.VerifyConfig(stance_classifier="llm"))
    out, counts = clean_rows(cfg, [{"prompt": "q", "r": t} for t in texts], ("r",), "x",
                             RecordingChatModel(reply=_teacher(fix, label)))
    verdicts = [row["r_cleanup"]["verdict"] for row in out]
    assert [v["ok"] for v in verdicts] == [True, False, True]
    assert verdicts[1]["reasons"] == ["stance_flipped"] and verdicts[1]["detail"] == "stance compliance -> refusal"
    assert [row["r_cleaned"] for row in out] == [fix[texts[0]], rule_clean(texts[1], "q").text, fix[texts[2]]]
    assert counts["llm_accepted"] == 2 and counts["fallback_stance_flipped"] == 1
    assert counts["llm_stance_requests"] == 6  # before and after, for each of the three edits


def test_stance_requests_are_charged_to_the_estimated_usage():
    texts = ["Boil the eggs. " * 3 + "Peel them.", "Rinse the rice. " * 3 + "Cook it."]
    fix = {t: rule_clean(t, None).text for t in texts}
    llm = RecordingChatModel(reply=_teacher(fix))
    cfg = CleanConfig(variant="llm", verify=clean.VerifyConfig(stance_classifier="llm"))
    _, counts = clean_rows(cfg, [{"prompt": "q", "r": t} for t in texts], ("r",), "x", llm)
    cleanup = [conv for _, conv in llm.sent if not _is_stance(conv)]
    stances = [conv for _, conv in llm.sent if _is_stance(conv)]
    assert len(cleanup) == 2 and len(stances) == 4
    assert sorted(_stance_text(c) for c in stances) == sorted(texts + list(fix.values()))
    assert stances == [stance.format_input(t) for t in texts + [fix[t] for t in texts]]
    # a stance request at 3.5 characters a token, its one-word reply one token
    stance_in = int(sum(len(m["content"]) for c in stances for m in c) / 3.5)
    assert counts["llm_tokens_in"] == sum(clean_llm.estimate_tokens(m["content"]) for c in cleanup for m in c) \
        + stance_in
    replies = [_teacher(fix)(c) for c in cleanup]
    assert counts["llm_tokens_out"] == sum(clean_llm.estimate_tokens(r) for r in replies) + 4
    assert counts["llm_calls"] == 2 and counts["llm_tokens_estimated"] == 1  # one cleanup call, one stance call


# ---- what an accepted edit fixed


def test_an_accepted_edit_is_credited_only_with_what_it_removed():
    text = "Walk in the park daily. " * 3 + "Rest well and sleep more today."
    edit = "Walk in the park daily. Rest well and sleep more today"  # the loop gone, and the final stop with it
    out, counts = clean_rows(CleanConfig(variant="llm"), [{"prompt": "q", "r": text}], ("r",), "x",
                             RecordingChatModel(reply=_teacher({text: edit})))
    rec = out[0]["r_cleanup"]
    assert rec["verdict"]["ok"] and out[0]["r_cleaned"] == edit and rec["source"] == "llm"
    assert rec["reasons"] == ["repeated_sentence"]  # the cut-off end it left is no fix
    assert counts["llm_residual"] == 1 and counts["reason_repeated_sentence"] == 1
    assert "reason_truncated_fragment" not in counts


def test_an_accepted_edit_that_leaves_nothing_behind_is_no_residual():
    out, counts = clean_rows(CleanConfig(variant="llm"), [{"prompt": "q", "r": LOOP}], ("r",), "x",
                             RecordingChatModel(reply=_teacher({LOOP: FIXED})))
    assert out[0]["r_cleaned"] == FIXED and out[0]["r_cleanup"]["reasons"] == ["repeated_sentence"]
    assert counts["llm_accepted"] == 1 and counts.get("llm_residual", 0) == 0


# ---- no input


@pytest.mark.parametrize("variant", ["llm", "hybrid"])
def test_an_empty_input_sends_nothing_and_reports_zero_shares(variant):
    llm = RecordingChatModel(reply=_teacher({}))
    out, counts = clean_rows(CleanConfig(variant=variant), [], ("r",), "x", llm)
    assert out == [] and llm.sent == []
    assert counts["rows"] == 0 and counts["llm_sent"] == 0 and counts["fallbacks"] == 0
    assert counts["llm_share"] == 0.0 and counts["llm_calls"] == 0
    assert clean.stage_metrics(counts)["changed_rate"] == 0.0
