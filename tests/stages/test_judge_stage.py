"""The judge stage's decisions: config bounds, combining the two orders, margins, failures, calibration, metrics.

tests/stages/test_conversations.py checks what the judge is shown; this file checks what the stage makes of the
verdicts: which pairs are kept and which way, why the others are dropped (status and reason), the split, the
control-pair bar, and the bias metrics.
"""
from __future__ import annotations

import json
from collections import Counter

import pytest

from cai_core import records
from cai_core.errors import ConfigError, StageError
from cai_core.llm.openai_backend import FailedScores, FailedText
from cai_core.stages import judge
from cai_core.tasks import calibration
from tests.fakes import RecordingChatModel


@pytest.mark.parametrize("field, bad, good", [
    ("min_margin", -0.01, 0.0), ("min_margin", 0.5, 0.49),
    ("min_control_accuracy", -0.01, 0.0), ("min_control_accuracy", 1.01, 1.0),
    ("test_fraction", -0.01, 0.0), ("test_fraction", 1.0, 0.99),
    ("batch_size", 0, 1)])
def test_config_bounds(field, bad, good):
    with pytest.raises(ConfigError, match=field):
        judge.JudgeConfig(**{field: bad}).validate()
    judge.JudgeConfig(**{field: good}).validate()


# -- decide: P(a) from both orders ---------------------------------------------------------------------------------

def test_both_orders_average_p_a_over_the_slots():
    cfg = judge.JudgeConfig(min_margin=0.1)
    # a in slot A: P(A) = 0.9; a in slot B: P(A) = 0.3, i.e. P(a) = 0.7 there
    assert judge.decide(cfg, 0.9, 0.3) == ("ok", pytest.approx(0.8))
    # b preferred in both orders
    assert judge.decide(cfg, 0.2, 0.6) == ("ok", pytest.approx(0.3))


def test_a_single_order_is_taken_as_is():
    cfg = judge.JudgeConfig(min_margin=0.1)
    assert judge.decide(cfg, 0.8, None) == ("ok", 0.8)
    assert judge.decide(cfg, 0.55, None) == ("undecided", 0.55)


def test_orders_that_prefer_different_responses_are_inconsistent():
    cfg = judge.JudgeConfig(min_margin=0.0)
    # slot A wins both times: a in order (a, b), b in order (b, a)
    assert judge.decide(cfg, 0.9, 0.8)[0] == "order_inconsistent"
    assert judge.decide(cfg, 0.1, 0.2)[0] == "order_inconsistent"
    # an undecided order (exactly 0.5) contradicts nothing
    assert judge.decide(cfg, 0.5, 0.1) == ("ok", pytest.approx(0.7))
    # kept when asked to: the mean decides
    loose = judge.JudgeConfig(min_margin=0.0, drop_inconsistent=False)
    assert judge.decide(loose, 0.9, 0.6) == ("ok", pytest.approx(0.65))
    status, p = judge.decide(loose, 0.9, 0.9)
    assert status == "undecided" and p == pytest.approx(0.5)


def test_the_margin_is_a_strict_lower_bound_and_one_half_is_never_a_preference():
    cfg = judge.JudgeConfig(min_margin=0.25)
    assert judge.decide(cfg, 0.75, None)[0] == "ok"
    assert judge.decide(cfg, 0.25, None)[0] == "ok"
    assert judge.decide(cfg, 0.74, None)[0] == "undecided"
    assert judge.decide(cfg, 0.26, None)[0] == "undecided"
    assert judge.decide(judge.JudgeConfig(min_margin=0.0), 0.5, None)[0] == "undecided"
    assert judge.decide(judge.JudgeConfig(min_margin=0.0), 0.5, 0.5)[0] == "undecided"


# -- run ---------------------------------------------------------------------------------------------------------

def _write(tmp_path, rows):
    path = tmp_path / "pairs.jsonl"
    records.write_jsonl(path, rows)
    return path


def _option_a(conv) -> str:
    content = conv[-1]["content"]
    return content.split("Option A:\n<<<\n", 1)[1].split("\n>>>", 1)[0]


def _read(path) -> list[dict]:
    """The rows of a JSONL output (an empty file is an empty list here)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _run(tmp_path, rows, llm, **kw):
    kw.setdefault("calibration", "off")
    kw.setdefault("test_fraction", 0.0)
    cfg = judge.JudgeConfig(**kw)
    result = judge.run(cfg, _write(tmp_path, rows), tmp_path / "out", llm)
    verdicts = {v["id"]: v for v in _read(tmp_path / "out" / "verdicts.jsonl")}
    train, test = _read(tmp_path / "out" / "train.jsonl"), _read(tmp_path / "out" / "test.jsonl")
    return result, verdicts, train, test


def _pair(i, a, b, prompt="Q?"):
    return {"id": f"r{i}", "prompt": prompt, "response_a": a, "response_b": b}


def test_a_pair_won_by_b_is_kept_with_b_chosen_and_its_confidence(tmp_path):
    # the judge gives P(A) = 0.2 when "good" is option B, 0.8 when it is option A: "good" wins in both orders
    rows = [_pair(1, "bad", "good"), _pair(2, "good", "bad")]
    llm = RecordingChatModel(logprobs=lambda conv: [0.0, 1.3862943611198906] if _option_a(conv) == "bad"
                             else [1.3862943611198906, 0.0])  # softmax: 0.2 / 0.8
    result, verdicts, train, _ = _run(tmp_path, rows, llm)
    assert verdicts["r1"]["status"] == "ok" and verdicts["r1"]["p_a"] == pytest.approx(0.2)
    assert verdicts["r1"]["p_a_first"] == pytest.approx(0.2) and verdicts["r1"]["p_a_second"] == pytest.approx(0.8)
    prefs = {p["id"]: p for p in train}
    assert (prefs["r1"]["chosen"], prefs["r1"]["rejected"]) == ("good", "bad")
    assert (prefs["r2"]["chosen"], prefs["r2"]["rejected"]) == ("good", "bad")
    assert prefs["r1"]["confidence"] == pytest.approx(0.8) and prefs["r2"]["confidence"] == pytest.approx(0.8)
    assert result.metrics["mean_confidence"] == pytest.approx(0.8)
    assert result.metrics["kept"] == 2 and result.metrics["train"] == 2 and result.metrics["status_ok"] == 2


def test_empty_and_identical_pairs_are_dropped_without_asking(tmp_path):
    rows = [_pair(1, "  \n", "fine"), _pair(2, "fine", ""), _pair(3, "same", "same"), _pair(4, "x", "y")]
    llm = RecordingChatModel(logprobs=lambda conv: [2.0, 0.0] if _option_a(conv) == "x" else [0.0, 2.0])
    result, verdicts, train, _ = _run(tmp_path, rows, llm)
    assert [verdicts[f"r{i}"]["status"] for i in (1, 2, 3, 4)] == ["empty_response", "empty_response",
                                                                  "identical", "ok"]
    assert len(llm.sent) == 2  # only r4, in both orders
    assert [p["id"] for p in train] == ["r4"]
    m = result.metrics
    assert (m["status_empty_response"], m["status_identical"], m["status_ok"], m["pairs"]) == (2, 1, 1, 4)


def test_a_failure_in_either_order_is_request_failed_and_the_next_pair_is_still_judged(tmp_path):
    rows = [_pair(1, "fails first", "z"), _pair(2, "z", "fails second"), _pair(3, "win", "lose")]

    def logprobs(conv):
        a = _option_a(conv)
        if a in ("fails first", "fails second"):
            return FailedScores(2, "context_length", "too long")
        return [3.0, 0.0] if a in ("win", "z") else [0.0, 3.0]

    class FailingScores(RecordingChatModel):
        """RecordingChatModel copies the scores into a list; a backend's failure marker must come through whole."""

        def choice_logprobs(self, conversations, choices):
            super().choice_logprobs(conversations, choices)
            return [self.logprobs(conv) for conv in conversations]

    result, verdicts, train, _ = _run(tmp_path, rows, FailingScores(logprobs=logprobs), batch_size=16)
    assert verdicts["r1"]["status"] == "request_failed" and verdicts["r1"]["reason"] == "context_length: too long"
    assert verdicts["r2"]["status"] == "request_failed" and verdicts["r2"]["reason"] == "context_length: too long"
    assert verdicts["r3"]["status"] == "ok" and "reason" not in verdicts["r3"]
    assert [p["chosen"] for p in train] == ["win"]
    assert result.metrics["status_request_failed"] == 2


def test_letter_mode_unparsed_in_either_order_and_failed_chat_requests(tmp_path):
    rows = [_pair(1, "mumble", "x"), _pair(2, "x", "mumble"), _pair(3, "broken", "x"), _pair(4, "win", "lose")]

    def reply(conv):
        a = _option_a(conv)
        if a == "mumble":
            return "I cannot decide"
        if a == "broken":
            return FailedText("retries_exhausted", "503")
        return "A" if a in ("win", "x") else "B"

    llm = RecordingChatModel(reply=reply)
    result, verdicts, train, _ = _run(tmp_path, rows, llm, mode="letter")
    assert verdicts["r1"]["status"] == "unparsed" and verdicts["r2"]["status"] == "unparsed"
    assert verdicts["r3"]["status"] == "request_failed" and verdicts["r3"]["reason"] == "retries_exhausted: 503"
    assert verdicts["r4"]["status"] == "ok" and verdicts["r4"]["p_a"] == 1.0
    assert [(p["chosen"], p["confidence"]) for p in train] == [("win", 1.0)]
    assert result.metrics["status_unparsed"] == 2 and result.metrics["status_request_failed"] == 1
    # a letter is read greedily from a short reply
    assert all(s.temperature == 0.0 and 1 <= s.max_new_tokens <= 16 for s in llm.sampling)


def test_one_order_only_asks_once_and_decides_on_that_order(tmp_path):
    rows = [_pair(1, "win", "lose"), _pair(2, "lose", "win")]
    llm = RecordingChatModel(logprobs=lambda conv: [2.0, 0.0] if _option_a(conv) == "win" else [0.0, 2.0])
    result, verdicts, train, _ = _run(tmp_path, rows, llm, both_orders=False)
    assert len(llm.sent) == 2
    assert [_option_a(c) for _, c in llm.sent] == ["win", "lose"]
    assert all(v["p_a_second"] is None and v["status"] == "ok" for v in verdicts.values())
    assert sorted(p["chosen"] for p in train) == ["win", "win"]
    assert result.metrics["flip_rate"] == 0.0  # nothing was asked in both orders


def test_letter_mode_single_order_unparsed(tmp_path):
    llm = RecordingChatModel(reply=lambda conv: "hmm")
    _, verdicts, _, _ = _run(tmp_path, [_pair(1, "a", "b")], llm, mode="letter", both_orders=False)
    assert verdicts["r1"]["status"] == "unparsed"


def test_the_split_is_by_id_deterministic_and_covers_every_kept_pair(tmp_path):
    rows = [_pair(i, f"good {i}", f"bad {i}") for i in range(60)]
    llm = RecordingChatModel(logprobs=lambda conv: [2.0, 0.0] if _option_a(conv).startswith("good") else [0.0, 2.0])
    _, _, train, test = _run(tmp_path / "a", rows, llm, test_fraction=0.5)
    assert sorted(p["id"] for p in train + test) == sorted(r["id"] for r in rows)
    assert 10 <= len(test) <= 50  # about half of 60
    # the same ids land on the same side in a run over fewer rows (the split depends on the id alone)
    _, _, train2, test2 = _run(tmp_path / "b", rows[::2], llm, test_fraction=0.5)
    assert {p["id"] for p in test2} == {p["id"] for p in test} & {r["id"] for r in rows[::2]}
    _, _, train3, test3 = _run(tmp_path / "c", rows, llm, test_fraction=0.0)
    assert len(train3) == 60 and test3 == []


# -- calibration -------------------------------------------------------------------------------------------------

CONTROLS = calibration.control_pairs()
GOOD = {p.good for p in CONTROLS}


def _calibration_judge(good_first_right=True, good_second_right=True):
    """P(A) per control conversation: right or wrong in each order (the good response first, or second)."""
    def logprobs(conv):
        a = _option_a(conv)
        if a in GOOD:
            return [3.0, 0.0] if good_first_right else [0.0, 3.0]
        if any(a == p.bad for p in CONTROLS):
            return [0.0, 3.0] if good_second_right else [3.0, 0.0]
        return [3.0, 0.0] if a == "win" else [0.0, 3.0]
    return RecordingChatModel(logprobs=logprobs)


def test_calibration_passes_a_judge_that_knows_the_answers(tmp_path, capsys):
    result, _, train, _ = _run(tmp_path, [_pair(1, "win", "lose")], _calibration_judge(), calibration="fail")
    assert result.metrics["calibrated"] == 1.0 and result.metrics["control_accuracy"] == 1.0
    assert result.metrics["control_pairs"] == len(CONTROLS)
    assert result.details["calibration"]["mode"] == "fail"
    assert result.details["calibration"]["min_accuracy"] == 0.75
    assert len(train) == 1
    assert "WARNING" not in capsys.readouterr().err


def test_calibration_fail_stops_a_judge_below_the_bar(tmp_path):
    # always option A: right when the good response is first, wrong when second -> accuracy 0.5
    with pytest.raises(StageError, match="50%"):
        _run(tmp_path, [_pair(1, "win", "lose")], _calibration_judge(True, False), calibration="fail")


def test_calibration_bar_is_inclusive(tmp_path):
    result, *_ = _run(tmp_path, [_pair(1, "win", "lose")], _calibration_judge(True, False), calibration="fail",
                      min_control_accuracy=0.5)
    assert result.metrics["calibrated"] == 1.0 and result.metrics["control_accuracy"] == 0.5


def test_calibration_warn_goes_on_marked_uncalibrated(tmp_path, capsys):
    result, _, train, _ = _run(tmp_path, [_pair(1, "win", "lose")], _calibration_judge(False, False),
                               calibration="warn")
    assert result.metrics["calibrated"] == 0.0 and result.metrics["control_accuracy"] == 0.0
    assert len(train) == 1
    assert "WARNING" in capsys.readouterr().err


def test_calibration_off_asks_no_control_pair_even_when_read_from_a_file(tmp_path):
    # a value parsed from YAML/JSON is a fresh string, not the interned literal: compare by value
    off = "".join(["of", "f"])
    llm = _calibration_judge()
    result, *_ = _run(tmp_path, [_pair(1, "win", "lose")], llm, calibration=off)
    assert len(llm.sent) == 2 and "calibrated" not in result.metrics


# -- metrics -----------------------------------------------------------------------------------------------------

def _v(p1, p2, status="ok", p_a=None, a="aa", b="b"):
    v = {"status": status, "response_a": a, "response_b": b, "p_a_first": p1, "p_a_second": p2}
    if p_a is not None:
        v["p_a"] = p_a
    return v


def test_metrics_count_flips_slots_length_bias_and_confidence():
    verdicts = [
        _v(0.9, 0.2, p_a=0.85, a="longer", b="x"),      # a wins both orders; longer wins
        _v(0.8, 0.7, status="order_inconsistent"),       # slot A both times: a flip
        _v(0.3, 0.4, status="order_inconsistent"),       # slot B both times: a flip
        _v(0.1, 0.6, p_a=0.25, a="longer", b="x"),       # b wins; shorter wins
        _v(0.5, None, status="undecided"),               # single order: no flip counted, 0.5 is not slot A
        {"status": "empty_response", "response_a": "", "response_b": "x"},
        _v(0.2, 0.9, p_a=0.15, a="same", b="four"),      # equal lengths: not counted for length bias
    ]
    counts = Counter(v["status"] for v in verdicts)
    m = judge.judge_metrics(verdicts, counts, n_train=2, n_test=1)
    assert m["pairs"] == 7 and m["kept"] == 3 and (m["train"], m["test"]) == (2, 1)
    assert m["flip_rate"] == pytest.approx(2 / 5) and m["position_bias_rate"] == m["flip_rate"]
    # single-order verdicts: 0.9 0.2 0.8 0.7 0.3 0.4 0.1 0.6 0.5 0.2 0.9 -> above 0.5: 0.9 0.8 0.7 0.6 0.9
    assert m["first_slot_rate"] == pytest.approx(5 / 11)
    assert m["length_bias_rate"] == pytest.approx(1 / 3)
    assert m["mean_confidence"] == pytest.approx((0.85 + 0.75 + 0.85) / 3)
    assert (m["status_ok"], m["status_order_inconsistent"], m["status_undecided"], m["status_empty_response"],
            m["status_unparsed"], m["status_identical"], m["status_request_failed"]) == (3, 2, 1, 1, 0, 0, 0)


def test_metrics_of_nothing_are_zero():
    m = judge.judge_metrics([], Counter(), 0, 0)
    assert m["flip_rate"] == m["first_slot_rate"] == m["length_bias_rate"] == m["mean_confidence"] == 0.0
    assert m["pairs"] == 0


def test_longer_response_winning_everything_is_full_length_bias():
    verdicts = [_v(0.9, 0.1, p_a=0.9, a="long one", b="s"), _v(0.1, 0.9, p_a=0.1, a="s", b="long one")]
    m = judge.judge_metrics(verdicts, Counter(ok=2), 2, 0)
    assert m["length_bias_rate"] == 1.0 and m["flip_rate"] == 0.0 and m["first_slot_rate"] == 0.5
    assert m["mean_confidence"] == pytest.approx(0.9)
