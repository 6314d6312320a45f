"""The report's sections read what the run left: the cleaning table, the gate's thresholds, the examples, the
training curves, `cai evaluate` on its own, and the figures the report stage hands back to the runtime."""
from __future__ import annotations

import io
import json

import pytest

from cai_core import records
from cai_core.config.base import ConfigError
from cai_core.runtime import artifacts
from cai_core.stages import report
from cai_core.stages.report import ReportConfig

GATE = {"verdict": "pass", "promoted": True, "candidate": "dpo", "reasons": [], "probes": 6, "gallery": [],
        "per_model": {"dpo": {"pass": True, "metrics": {"rep_3": 0.125}, "reasons": []}},
        "thresholds": {"max_tail_loop_rate": 0.5, "max_rep_3": -1.0, "min_distinct_2": 0.0, "min_mean_chars": 20.0}}


def _evaluate(models=None, **metrics):
    return {"metrics": metrics,
            "details": {"per_model": {"base": {}, "dpo": {}},
                        "models": models or {"base": "smollm2-135m", "dpo": "runs/x/dpo/model"}}}


def _md(tmp_path, stages, stage_dirs=None, **cfg):
    result = report.run(ReportConfig(**cfg), stage_dirs or {}, tmp_path, stages=stages)
    return (tmp_path / "report.md").read_text(), result


def _section(md: str, heading: str) -> str:
    return md.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


# ---- data cleaning


def test_the_cleaning_table_has_one_row_per_clean_step_with_its_reasons(tmp_path):
    stages = {"clean_revisions": {"metrics": {"texts": 10, "changed": 3, "changed_rate": 0.3, "reason_tail_loop": 2,
                                              "reason_emoji": 1}},
              "clean_pairs": {"metrics": {"changed": 0}},  # an older record without a text count
              "sft": {"metrics": {"texts": 99, "reason_odd": 5}},  # not a cleaning step: not in the table
              "gate": {"metrics": {}, "details": GATE}}
    md, _ = _md(tmp_path, stages)
    section = _section(md, "Data cleaning")
    rows = [line for line in section.splitlines() if line.startswith("| clean") or line.startswith("| sft")]
    assert rows == ["| clean_revisions | 10 | 3 | 0.3 | emoji=1, tail_loop=2 |",
                    "| clean_pairs | 0 | 0 | 0 | none |"]
    assert "No cleaning stage ran." not in section


def test_no_clean_step_is_said(tmp_path):
    md, _ = _md(tmp_path, {"gate": {"metrics": {}, "details": GATE}})
    assert "No cleaning stage ran." in _section(md, "Data cleaning")


def test_a_stage_record_inside_an_artifact_is_read_and_wins(tmp_path):
    art = tmp_path / "clean_revisions"
    art.mkdir()
    records.write_json(art / artifacts.STAGE_FILE, {"metrics": {"texts": 7, "changed": 7, "changed_rate": 1.0},
                                                     "details": {}})
    out = tmp_path / "out"
    md, result = _md(out, {"clean_revisions": {"metrics": {"texts": 1}}}, {"clean_revisions": art})
    assert "| clean_revisions | 7 | 7 | 1 | none |" in md
    assert json.loads((out / "metrics.json").read_text())["clean_revisions"]["texts"] == 7


# ---- the judge paragraphs


def test_a_pipeline_run_without_judge_statistics_says_so(tmp_path):
    md, _ = _md(tmp_path, {"gate": {"metrics": {}, "details": GATE}})
    assert "No judge statistics." in _section(md, "Judge")


def test_the_preference_judge_table_replaces_the_no_statistics_line(tmp_path):
    md, _ = _md(tmp_path, {"judge": {"metrics": {"train": 12, "dropped_inconsistent": 3}}})
    section = _section(md, "Judge")
    assert "Preference judge (pairs for DPO):" in section and "| dropped_inconsistent | 3 |" in section
    assert "No judge statistics." not in md


# ---- `cai evaluate` on its own


def test_an_evaluation_alone_names_its_models_and_has_no_pipeline_sections(tmp_path):
    md, _ = _md(tmp_path, {"evaluate": _evaluate()})
    assert "Evaluation of base (smollm2-135m), dpo (runs/x/dpo/model).\n" in md
    assert "Pipeline:" not in md
    for heading in ("Collapse gate", "Data cleaning", "Judge", "Training curves"):
        assert f"\n## {heading}\n" not in md
    assert "No judge statistics." not in md and "No training logs found." not in md


def test_a_report_of_nothing_says_so(tmp_path):
    md, _ = _md(tmp_path, {})
    assert "No step of a run and no evaluated model were found: there is nothing to report.\n" in md
    assert "Evaluation of" not in md and "Pipeline:" not in md


def test_an_evaluation_alone_shows_its_judge_under_its_own_heading(tmp_path):
    ev = _evaluate()
    ev["details"]["judge"] = {"name": "qwen", "mode": "text", "statuses": {"mt_bench": {"ok": 4, "unparsed": 1}}}
    md, _ = _md(tmp_path, {"evaluate": ev})
    section = _section(md, "Judge")
    assert "Evaluation judge: qwen (grades read from the reply text)." in section
    assert "| mt_bench | 4 | 1 |" in section


# ---- the collapse gate's thresholds


def test_thresholds_that_are_switched_off_say_off(tmp_path):
    doc = report._Doc("t")
    report._gate_section(doc, GATE)
    md = "\n".join(doc.md)
    assert ("On 6 probe prompts per model. Thresholds: max_tail_loop_rate=0.5, max_rep_3=off, min_distinct_2=off, "
            "min_mean_chars=20.") in md


def test_a_minimum_above_zero_is_shown_as_its_value():
    doc = report._Doc("t")
    report._gate_section(doc, {**GATE, "thresholds": {"min_distinct_2": 0.25, "max_empty_rate": 0.0}})
    assert "Thresholds: min_distinct_2=0.25, max_empty_rate=0." in "\n".join(doc.md)


# ---- the summary in words and the figures handed back


def _figures(asr_base, asr_dpo, mt_base, mt_dpo):
    return {"base.asr": asr_base, "dpo.asr": asr_dpo, "base.mt_bench_avg": mt_base, "dpo.mt_bench_avg": mt_dpo,
            "base.tail_loop_rate": 0.25, "dpo.tail_loop_rate": 0.125, "base.rep_3": 0.5, "dpo.rep_3": 0.375}


def test_in_words_counts_the_safety_figures_unless_the_classifier_is_uncalibrated(tmp_path):
    md, _ = _md(tmp_path / "a", {"evaluate": _evaluate(**_figures(0.5, 0.25, 4.0, 5.0))})
    assert "attack success rate 0.5 -> 0.25" in md and "MT-Bench average 4 -> 5" in md
    md, _ = _md(tmp_path / "b", {"evaluate": _evaluate(**_figures(0.5, 0.25, 4.0, 5.0),
                                                       **{"safety_judge.calibrated": 1.0})})
    assert "attack success rate 0.5 -> 0.25" in md
    md, _ = _md(tmp_path / "c", {"evaluate": _evaluate(**_figures(0.5, 0.25, 4.0, 5.0),
                                                       **{"safety_judge.calibrated": 0.0,
                                                          "safety_judge.control_accuracy": 0.5})})
    words = next(line for line in md.splitlines() if line.startswith("In words:"))
    assert "attack success" not in words and "MT-Bench average 4 -> 5" in words


def test_the_stage_hands_back_each_models_headline_figures(tmp_path):
    stages = {"evaluate": _evaluate(**_figures(0.5, 0.25, 4.0, 5.0), **{"dpo.over_refusal": 0.0625}),
              "gate": {"metrics": {}, "details": GATE}}
    _, result = _md(tmp_path, stages)
    m = result.metrics
    assert {k: m[k] for k in m if "." in k} == {
        "base.asr": 0.5, "dpo.asr": 0.25, "base.mt_bench_avg": 4.0, "dpo.mt_bench_avg": 5.0,
        "base.tail_loop_rate": 0.25, "dpo.tail_loop_rate": 0.125, "base.rep_3": 0.5, "dpo.rep_3": 0.375,
        "dpo.over_refusal": 0.0625}
    assert m["promoted"] == 1.0 and m["stages"] == 2 and m["plots"] == 1  # the evaluation plot


# ---- examples


def _example_dirs(tmp_path):
    cleaned, judge, evaluate = (tmp_path / n for n in ("clean_revisions", "judge", "evaluate"))
    for d in (cleaned, judge, evaluate):
        d.mkdir()
    records.write_jsonl(cleaned / artifacts.CLEANED, [
        {"prompt": f"prompt {i}", "response": f"first {i}", "final": f"final {i}", "final_cleaned": f"clean {i}",
         "final_cleanup": {"reasons": ["emoji", "tail_loop"]}} for i in range(3)])
    records.write_jsonl(judge / artifacts.PREFERENCES, [
        {"prompt": f"ask {i}", "chosen": f"good {i}", "rejected": f"bad {i}", "principle_id": "harm",
         "confidence": 0.75} for i in range(3)])
    for name in ("base", "dpo"):
        records.write_jsonl(evaluate / f"mt_bench_{name}.jsonl", [
            {"category": "writing", "turns": ["t1", "t2"], "answers": [f"{name} a1", f"{name} a2"],
             "grades": [{"status": "ok", "score": 7}, {"status": "unparsed"}]}])
    return {"clean_revisions": cleaned, "judge": judge, "evaluate": evaluate}


def test_examples_show_the_first_rows_of_each_artifact(tmp_path):
    dirs = _example_dirs(tmp_path)
    md, _ = _md(tmp_path / "out", {"gate": {"metrics": {}, "details": GATE}}, dirs, examples=2)
    section = _section(md, "Examples")
    assert "| prompt 0 | first 0 | final 0 | clean 0 | emoji, tail_loop |" in section
    assert "| prompt 1 |" in section and "prompt 2" not in section
    assert "Judged pairs:" in section and "| ask 0 | good 0 | bad 0 | harm | 0.75 |" in section
    assert "ask 2" not in section
    assert "MT-Bench answers of the dpo model (grades per turn):" in section
    assert "| writing | t1 | dpo a1 | t2 | dpo a2 | ok:7, unparsed:n/a |" in section and "base a1" not in section


def test_zero_examples_is_a_valid_setting_that_shows_none(tmp_path):
    dirs = _example_dirs(tmp_path)
    md, _ = _md(tmp_path / "out", {"gate": {"metrics": {}, "details": GATE}}, dirs, examples=0)
    assert _section(md, "Examples").strip() == ""
    with pytest.raises(ConfigError, match="examples"):
        ReportConfig(examples=-1)


# ---- training curves


def _pixels(png: bytes, rgb: tuple[int, int, int], tol: int = 12) -> int:
    """How many pixels of the image have (about) this colour."""
    import matplotlib.image as mpimg
    import numpy as np

    img = (mpimg.imread(io.BytesIO(png))[..., :3] * 255).astype(int)
    return int((np.abs(img - np.array(rgb)).max(axis=-1) <= tol).sum())


BLUE, ORANGE = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)  # matplotlib's first two line colours


def test_training_curves_draw_every_logged_series(tmp_path):
    log = tmp_path / "dpo" / artifacts.TRAIN_LOG
    log.parent.mkdir()
    records.write_jsonl(log, [{"step": s, "loss": 1.0 / s, "rewards/chosen": 0.1 * s, "rewards/rejected": -0.1 * s}
                              for s in range(1, 11)] + [{"loss": 9.0}])  # a row without a step is not a point
    plots = dict(report.training_plots("dpo", log, 90))
    assert list(plots) == ["dpo: Loss", "dpo: Rewards"]  # the curves with no logged key are left out
    assert _pixels(plots["dpo: Loss"], BLUE) > 100 and _pixels(plots["dpo: Loss"], ORANGE) == 0
    assert _pixels(plots["dpo: Rewards"], BLUE) > 100 and _pixels(plots["dpo: Rewards"], ORANGE) > 100


def test_the_training_section_says_what_was_trained(tmp_path):
    stages = {"sft": {"metrics": {"total_params": 10000, "trainable_params": 1000}},
              "dpo": {"metrics": {"total_params": 10000, "trainable_params": 10000}}}
    md, _ = _md(tmp_path, stages)
    section = _section(md, "Training curves")
    assert "sft: trained 1,000 of 10,000 parameters (10.0%; a LoRA adapter, merged into the model handed on)." \
        in section
    assert "dpo: trained 10,000 of 10,000 parameters (100.0%; full fine-tuning)." in section
    assert "No training logs found." in section


# ---- the evaluation plot

GREEN = (0x2C, 0xA0, 0x2C)  # matplotlib's third colour


def _columns(png: bytes, rgb: tuple[int, int, int], left_half: bool = True, tall: int = 20) -> list[int]:
    """The x positions where a bar of this colour stands (at least `tall` pixels of it in the column)."""
    import matplotlib.image as mpimg
    import numpy as np

    img = (mpimg.imread(io.BytesIO(png))[..., :3] * 255).astype(int)
    if left_half:
        img = img[:, : img.shape[1] // 2]
    counts = (np.abs(img - np.array(rgb)).max(axis=-1) <= 12).sum(axis=0)
    return [int(x) for x in np.nonzero(counts >= tall)[0]]


def test_the_mt_bench_bars_of_a_model_stand_side_by_side_in_turn_order():
    # turn 1 highest: a turn-2 bar drawn over it would hide it below its own top
    png = report.evaluation_plot({"base": {"mt_bench_t1": 8.0, "mt_bench_t2": 4.0, "mt_bench_avg": 6.0}}, 90)
    turn1, turn2, average = (_columns(png, c) for c in (BLUE, ORANGE, GREEN))
    assert turn1 and turn2 and average
    assert max(turn1) < min(turn2) and max(turn2) < min(average)


@pytest.mark.parametrize("verdict, said", [
    ("pass", "PASSED: the dpo model is within every collapse threshold and was promoted to evaluation."),
    ("flag", "FLAGGED: the dpo model broke collapse thresholds (dpo: rep_3 0.5 > 0.4)"),
    ("fail", "FAILED: the dpo model was NOT promoted because it broke collapse thresholds: dpo: rep_3 0.5 > 0.4.")])
def test_the_gate_verdict_read_from_the_gate_artifact_is_said(tmp_path, verdict, said):
    # a verdict parsed from gate.json is a fresh string, not the interned literal: compared by value
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir()
    details = {**GATE, "verdict": verdict, "promoted": verdict == "pass",
               "reasons": [] if verdict == "pass" else ["dpo: rep_3 0.5 > 0.4"]}
    records.write_json(gate_dir / artifacts.GATE, details)
    records.write_json(gate_dir / artifacts.STAGE_FILE, {"metrics": {"promoted": float(verdict == "pass")},
                                                         "details": details})
    md, result = _md(tmp_path / "out", {}, {"gate": gate_dir})
    assert said in _section(md, "Collapse gate")
    assert result.metrics["promoted"] == float(verdict == "pass")
