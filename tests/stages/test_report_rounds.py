"""The report's preference rounds: which rounds count, the outcome in words, and the section with its plots."""
from __future__ import annotations

import base64
import json
import re

from cai_core.stages import report, report_rounds


def _gate(verdict, rep_3, reasons=()):
    return {"metrics": {"dpo.rep_3": rep_3, "dpo.distinct_2": 0.5, "dpo.tail_loop_rate": 0.1, "sft.rep_3": 0.2,
                        "sft.distinct_2": 0.6, "sft.tail_loop_rate": 0.0},
            "details": {"verdict": verdict, "reasons": list(reasons)}}


def _stages(*verdicts):
    stages = {}
    for k, verdict in enumerate(verdicts, start=1):
        sfx = "" if k == 1 else f"_r{k}"
        stages[f"pairs{sfx}"] = {"metrics": {"rows": 10 + k}}
        stages[f"judge{sfx}"] = {"metrics": {"train": 8 + k}}
        stages[f"dpo{sfx}"] = {"metrics": {"steps": 3, "rewards_margins_last": 0.1 * k}}
        stages[f"gate{sfx}"] = _gate(verdict, 0.1 * k, [f"dpo: rep_3 {0.1 * k:.1f} > max_rep_3"] if verdict != "pass" else [])
    return stages


def test_a_failed_round_ends_the_loop_and_the_last_passing_round_is_promoted():
    stages = _stages("pass", "fail")
    assert report_rounds.rounds_run(stages, 3) == [1, 2]
    text = report_rounds.outcome(stages, 3)
    assert "2 of 3 ran (round 1: pass; round 2: fail)" in text
    assert "Round 2 failed the collapse gate (dpo: rep_3 0.2 > max_rep_3)" in text
    assert "The model of round 1, the last round that passed, was evaluated and promoted." in text


def test_every_round_passing_promotes_the_last():
    text = report_rounds.outcome(_stages("pass", "pass"), 2)
    assert "2 of 2 ran" in text and "The model of round 2 passed the gate and was evaluated and promoted." in text


def test_no_round_passing_promotes_nothing():
    text = report_rounds.outcome(_stages("fail"), 2)
    assert "1 of 2 ran" in text and "No round passed, so no model was promoted." in text


def test_flagged_rounds_go_on_and_are_not_promoted():
    text = report_rounds.outcome(_stages("flag", "flag"), 2)
    assert "round 1: flag; round 2: flag" in text and "for the record only, not promoted" in text
    assert "passed" not in text


def test_a_round_left_by_an_earlier_run_after_a_failed_round_does_not_count():
    stages = _stages("fail", "pass")  # round 2 is stale: round 1 failed, so this run never ran it
    assert report_rounds.rounds_run(stages, 2) == [1]
    assert sorted(report_rounds.stale_steps(stages, 2)) == ["dpo_r2", "gate_r2", "judge_r2", "pairs_r2"]
    assert report_rounds.stale_steps(_stages("pass", "pass"), 2) == []
    assert sorted(report_rounds.stale_steps(_stages("pass", "pass"), 1)) == ["dpo_r2", "gate_r2", "judge_r2",
                                                                             "pairs_r2"]


def test_summary_and_series_come_from_each_round():
    stages = _stages("pass", "pass")
    rows = report_rounds.summary_rows(stages, [1, 2])
    assert rows[1] == [2, 12, 10, 3, 0.2, "pass", 0.2, 0.5, 0.1]
    assert report_rounds.collapse_series(stages, [1, 2])["rep_3"] == [0.2, 0.1, 0.2]  # sft first
    logs = {1: [{"step": 1, "rewards/margins": 0.0}, {"step": 2, "rewards/margins": 0.3}],
            2: [{"step": 1, "rewards/margins": 0.1}, {"step": 1, "loss": 0.6}]}
    assert report_rounds.margin_series(logs) == {"round 1": ([1, 2], [0.0, 0.3]), "round 2": ([1], [0.1])}


def test_the_report_shows_the_rounds_with_their_plots(tmp_path):
    stages = _stages("pass", "fail")
    logs = {1: [{"step": 1, "rewards/margins": 0.1}], 2: [{"step": 1, "rewards/margins": 0.2}]}
    result = report.run(report.ReportConfig(), {}, tmp_path, stages=stages, rounds=2, round_logs=logs)
    md = (tmp_path / "report.md").read_text()
    assert "## Preference rounds" in md and "Round 2 failed the collapse gate" in md
    assert "| 2 | 12 | 10 | 3 | 0.2 | fail |" in md
    for name in ("rounds_collapse.png", "rounds_margins.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    # the Markdown artifact is shown alone in the Kubeflow UI: its plots are inline, the same PNGs as plots/
    inline = re.findall(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)
    assert sorted(base64.b64decode(d) for d in inline) == sorted(
        (tmp_path / "plots" / n).read_bytes() for n in ("rounds_collapse.png", "rounds_margins.png"))
    assert "](plots/" not in md
    assert result.metrics["plots"] >= 2
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["dpo_r2"]["rewards_margins_last"] == 0.2 and metrics["gate_r2"]["dpo.rep_3"] == 0.2


def test_stale_rounds_leave_metrics_json(tmp_path):
    report.run(report.ReportConfig(), {}, tmp_path, stages=_stages("fail", "pass"), rounds=2)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "gate" in metrics and "gate_r2" not in metrics and "dpo_r2" not in metrics


def test_one_round_shows_no_rounds_section(tmp_path):
    report.run(report.ReportConfig(), {}, tmp_path, stages=_stages("pass"))
    assert "Preference rounds" not in (tmp_path / "report.md").read_text()
