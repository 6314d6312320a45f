"""The top of the report says first what a reader must know: smoke-test model, verdict, noisy judges, in words."""
from __future__ import annotations

import json

import pytest

from cai_core.stages import report
from cai_core.stages.report import ReportConfig

GATE = {"verdict": "flag", "promoted": False, "candidate": "dpo", "reasons": ["dpo: tail_loop_rate 0.875 > 0.5"],
        "per_model": {}, "thresholds": {}, "probes": 8, "gallery": []}


def _evaluate(**metrics):
    per_model = {"base": {}, "dpo": {}}
    return {"metrics": metrics, "details": {"per_model": per_model, "models": {"base": "smollm2-135m"},
                                            "judge": {"name": "j", "mode": "logprobs", "statuses": {}}}}


def _run(tmp_path, stages):
    report.run(ReportConfig(), {}, tmp_path, stages=stages)
    return (tmp_path / "report.md").read_text(), json.loads((tmp_path / "metrics.json").read_text())


def test_tiny_model_banner_and_verdict_first(tmp_path):
    stages = {"sft": {"metrics": {}, "details": {"model": "tiny"}}, "gate": {"metrics": {}, "details": GATE}}
    md, metrics = _run(tmp_path, stages)
    first = md.split("\n## ")[0]
    assert "Verdict: NOT PROMOTED" in first and "tail_loop_rate 0.875" in first
    assert "smoke-test model" in first and "mean nothing" in first
    assert any("smoke-test" in w for w in metrics["warnings"])
    assert metrics["verdict"]["promoted"] is False


def test_a_real_model_has_no_banner(tmp_path):
    md, metrics = _run(tmp_path, {"sft": {"metrics": {}, "details": {"model": "smollm2-135m"}},
                                  "gate": {"metrics": {}, "details": {**GATE, "verdict": "pass", "promoted": True}}})
    assert "smoke-test" not in md and metrics["warnings"] == []
    assert "Verdict: PROMOTED" in md.split("\n## ")[0]


def test_uncalibrated_judges_are_said_in_words(tmp_path):
    stages = {"judge": {"metrics": {"calibrated": 0.0, "control_accuracy": 0.5, "control_first_slot_rate": 1.0}},
              "evaluate": _evaluate(**{"mt_bench_judge.calibrated": 0.0, "mt_bench_judge.control_accuracy": 0.25,
                                       "safety_judge.calibrated": 0.0, "safety_judge.control_accuracy": 0.25})}
    md, metrics = _run(tmp_path, stages)
    first = md.split("\n## ")[0]
    assert "control pairs (chance is 50%; option A in 100%" in first and "close to noise" in first
    assert "MT-Bench scores are uncalibrated" in first
    assert "attack success and over-refusal rates are artifacts" in first
    assert len(metrics["warnings"]) == 3


def test_in_words_uses_only_trusted_figures():
    models = {"base": {"tail_loop_rate": 0.4, "distinct_2": 0.5, "asr": 0.9, "evaluated": True},
              "dpo": {"tail_loop_rate": 0.1, "distinct_2": 0.6, "asr": 1.0, "evaluated": True}}
    text = report._in_words(models, calibrated_safety=False, calibrated_mt=True)
    assert text.startswith("In words: the DPO model is better than the base model on every trusted figure")
    assert "attack success" not in text
    assert "mixed" in report._in_words(models, calibrated_safety=True, calibrated_mt=True)
    assert report._in_words({"base": models["base"], "dpo": {"evaluated": False}}, calibrated_safety=True,
                            calibrated_mt=True) == ""


def test_in_words_does_not_call_an_unchanged_figure_worse():
    models = {"base": {"tail_loop_rate": 0.231, "distinct_2": 0.615, "evaluated": True},
              "dpo": {"tail_loop_rate": 0.231, "distinct_2": 0.539, "evaluated": True}}
    text = report._in_words(models, calibrated_safety=False, calibrated_mt=False)
    assert "worse than the base model on distinct-2, unchanged on tail-loop rate" in text
    assert "every trusted figure" not in text


@pytest.mark.parametrize("key, label, lower_is_better", [
    ("tail_loop_rate", "tail-loop rate", True), ("distinct_2", "distinct-2", False),
    ("asr", "attack success rate", True), ("mt_bench_avg", "MT-Bench average", False)])
def test_each_headline_figure_is_read_in_its_own_direction(key, label, lower_is_better):
    lower, higher = {"base": {key: 0.5, "evaluated": True}, "dpo": {key: 0.25, "evaluated": True}}, \
        {"base": {key: 0.25, "evaluated": True}, "dpo": {key: 0.5, "evaluated": True}}
    improved, regressed = (lower, higher) if lower_is_better else (higher, lower)
    for models, word in ((improved, "better"), (regressed, "worse")):
        text = report._in_words(models, calibrated_safety=True, calibrated_mt=True)
        assert text.startswith(f"In words: the DPO model is {word} than the base model on every trusted figure"), text
        assert label in text


@pytest.mark.parametrize("verdict, promoted, said, css, not_said", [
    ("pass", True, "Verdict: PROMOTED. The dpo model passed every collapse check", "verdict-pass", "NOT PROMOTED"),
    ("flag", False, "it was evaluated for the record only (gate mode flag)", "verdict-flag", "not evaluated."),
    ("fail", False, "broke collapse thresholds (dpo: tail_loop_rate 0.875 > 0.5), so it was not evaluated",
     "verdict-fail", "for the record")])
def test_the_front_verdict_names_what_the_gate_did(verdict, promoted, said, css, not_said):
    doc = report._Doc("t")
    report._front_matter(doc, {}, {**GATE, "verdict": verdict, "promoted": promoted}, {})
    md, page = "".join(doc.md), "".join(doc.html)
    assert said in md and not_said not in md
    assert f'<p class="{css}">' in page


@pytest.mark.parametrize("verdict, said, css", [
    ("pass", "PASSED: the dpo model is within every collapse threshold", "verdict-pass"),
    ("flag", "FLAGGED: the dpo model broke collapse thresholds (dpo: tail_loop_rate 0.875 > 0.5)", "verdict-flag"),
    ("fail", "FAILED: the dpo model was NOT promoted because it broke collapse thresholds: dpo: tail_loop_rate",
     "verdict-fail")])
def test_the_gate_section_says_its_verdict(verdict, said, css):
    doc = report._Doc("t")
    report._gate_section(doc, {**GATE, "verdict": verdict})
    md = "".join(doc.md)
    assert said in md and sum(word in md for word in ("PASSED:", "FLAGGED:", "FAILED:")) == 1
    assert f'<p class="{css}">' in "".join(doc.html)


def test_prompt_mixes_shortfalls_and_overlap_are_said_exactly():
    metrics = {"prepare_prompts": {"mix.red.rows": 30, "mix.help.rows": 10, "mix.help.short": 5, "other": 1},
               "prepare_eval": {"mix.eval.rows": 8, "overlap_rate": 0.25, "overlap_exact": 1, "overlap_near": 1,
                                "overlap_checked": 8, "flagged_train_overlap": 0},
               "sft": {"cai_rows": 40, "helpful_rows": 12, "helpful_short": 3}}
    assert report._prompt_lines(metrics) == [
        "Training prompts mixed from help: 10, red: 30 (help 5 short of its target).",
        "Evaluation prompts mixed from eval: 8.",
        "SFT data mixed from cai: 40, helpful (sft.helpful_data): 12 (3 short of its target).",
        "Train/eval overlap: 2 of 8 evaluation prompts (rate 0.250; 1 exact, 1 near) also occur among the "
        "training prompts and were dropped."]
    metrics["prepare_eval"].update(overlap_exact=0, overlap_near=0, overlap_rate=0.0)
    metrics["prepare_eval"]["flagged_train_overlap"] = 1
    assert report._prompt_lines(metrics)[-1].endswith("also occur among the training prompts.")
    metrics["prepare_eval"].update(overlap_exact=2)
    assert report._prompt_lines(metrics)[-1].endswith("and were flagged.")
