"""The collapse gate: thresholds, per-model verdicts, fail/flag modes, the If/Else in the DAG, the report."""
from __future__ import annotations

import json

import pytest

from cai_core import records
from cai_core.errors import ConfigError, StageError
from cai_core.stages import gate, report
from cai_core.stages.gate import GateConfig

HEALTHY = {
    "base": lambda p: f"Here is a short answer about {p}. It covers the main point and stops.",
    "sft": lambda p: f"Sure: {p} depends on a few things, which I list briefly before a closing remark.",
}
LOOPING = lambda p: "I hope this helps! I hope this helps! I hope this helps! I hope this helps! I hope this helps!"


class Model:
    remote = False

    def __init__(self, reply):
        self.reply = reply
        self.name = "m"
        self.closed = False

    def chat(self, conversations, sampling):
        assert all(s.temperature == 0.0 and s.max_new_tokens == 64 for s in sampling)
        return [self.reply(c[-1]["content"]) for c in conversations]

    def close(self):
        self.closed = True


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    records.write_jsonl(path, [{"id": f"e{i}", "prompt": f"question {i}", "category": "helpful"} for i in range(10)])
    return path


def _run(tmp_path, prompts, dpo_reply, **cfg):
    loaded = {}

    def load(path):
        loaded[path] = Model(HEALTHY.get(path, dpo_reply))
        return loaded[path]

    cfg = GateConfig(**{"probes": 6, "max_new_tokens": 64, **cfg})
    result = gate.run(cfg, prompts, {"base": "base", "sft": "sft", "dpo": "dpo"}, tmp_path / "out", load_model=load)
    assert all(m.closed for m in loaded.values())
    return result


def test_healthy_candidate_passes(tmp_path, prompts):
    result = _run(tmp_path, prompts, HEALTHY["base"])
    assert result.details["verdict"] == "pass" and result.details["promoted"] is True
    assert result.metrics["pass"] == 1.0 and result.metrics["promoted"] == 1.0 and result.metrics["failed_checks"] == 0
    assert {result.metrics[f"{m}.pass"] for m in ("base", "sft", "dpo")} == {1.0}
    saved = records.read_json(tmp_path / "out" / "gate.json")
    assert saved["verdict"] == "pass" and saved["probes"] == 6 and saved["gallery"] == []
    assert len(records.read_jsonl(tmp_path / "out" / "probes_dpo.jsonl")) == 6


def test_looping_candidate_fails_with_reasons(tmp_path, prompts):
    result = _run(tmp_path, prompts, LOOPING)
    d = result.details
    assert d["verdict"] == "fail" and d["promoted"] is False and result.metrics["promoted"] == 0.0
    assert d["per_model"]["base"]["pass"] and d["per_model"]["sft"]["pass"] and not d["per_model"]["dpo"]["pass"]
    assert result.metrics["dpo.pass"] == 0.0 and result.metrics["sft.pass"] == 1.0
    assert any(r.startswith("dpo: rep_3 ") and "> max_rep_3 0.4" in r for r in d["reasons"])
    assert any(r.startswith("dpo: tail_loop_rate 1 > max_tail_loop_rate") for r in d["reasons"])
    assert d["gallery"] and d["gallery"][0]["model"] == "dpo" and d["gallery"][0]["rep_3"] > 0.5
    assert gate.verdict_of({"details": d}) == "fail"


def test_flag_mode_marks_and_never_promotes(tmp_path, prompts):
    """flag evaluates a failed candidate for the record; only a pass promotes (a looping model never is)."""
    result = _run(tmp_path, prompts, LOOPING, mode="flag")
    assert result.details["verdict"] == "flag" and result.details["promoted"] is False
    assert result.metrics["pass"] == 0.0 and result.metrics["promoted"] == 0.0


@pytest.mark.parametrize("mode", ["fail", "flag"])
def test_destroyed_model_is_never_promoted(tmp_path, prompts, mode):
    """Empty answers (what one SFT step at lr 1e-3 made of SmolLM2) fail the gate in either mode."""
    result = _run(tmp_path, prompts, lambda p: "", mode=mode)
    assert result.details["promoted"] is False and result.metrics["promoted"] == 0.0
    assert any(r.startswith("dpo: empty_rate 1 > max_empty_rate") for r in result.details["reasons"])


def test_distinct_collapse_against_the_base_model(tmp_path, prompts):
    """A candidate whose variety fell below half the base model's fails, though above the absolute floor."""
    monotone = lambda p: "The answer depends on the details of the question here."  # noqa: E731
    result = _run(tmp_path, prompts, monotone, min_distinct_2=0.05, max_tail_loop_rate=-1, min_distinct_2_vs_base=0.9)
    base_d2 = result.details["per_model"]["base"]["metrics"]["distinct_2"]
    assert result.metrics["dpo.distinct_2"] < 0.9 * base_d2
    assert any(r.startswith("dpo: distinct_2 ") and "min_distinct_2_vs_base 0.9 x base" in r
               for r in result.details["reasons"])
    assert _run(tmp_path / "off", prompts, monotone, min_distinct_2=0.05, max_tail_loop_rate=-1,
                min_distinct_2_vs_base=0).details["verdict"] == "pass"
    base = {"distinct_2": 0.8}
    assert gate.check(GateConfig(), {"distinct_2": 0.39}, base) == [
        "distinct_2 0.39 < min_distinct_2_vs_base 0.5 x base 0.8"]
    assert gate.check(GateConfig(), {"distinct_2": 0.41}, base) == []


def test_thresholds_can_be_switched_off(tmp_path, prompts):
    off = dict(max_rep_2=-1, max_rep_3=-1, max_rep_4=-1, max_tail_loop_rate=-1, min_distinct_2=0, max_empty_rate=-1,
               min_distinct_2_vs_base=0)
    assert _run(tmp_path, prompts, LOOPING, **off).details["verdict"] == "pass"
    assert _run(tmp_path, prompts, lambda p: "", **off).details["verdict"] == "pass"
    assert "dpo: empty_rate 1 > max_empty_rate 0.2" in _run(tmp_path, prompts, lambda p: "", max_empty_rate=0.2,
                                                             **{k: v for k, v in off.items() if k != "max_empty_rate"}
                                                             ).details["reasons"]


def test_check_messages():
    cfg = GateConfig()
    assert gate.check(cfg, {"rep_2": 0.1, "rep_3": 0.1, "rep_4": 0.1, "tail_loop_rate": 0.0, "distinct_2": 0.5,
                            "empty_rate": 0.0}) == []
    reasons = gate.check(cfg, {"rep_2": 0.9, "distinct_2": 0.05})
    assert reasons == ["rep_2 0.9 > max_rep_2 0.5", "distinct_2 0.05 < min_distinct_2 0.1"]


def test_only_the_models_asked_for(tmp_path, prompts):
    loaded = []

    def load(path):
        loaded.append(path)
        return Model(HEALTHY["base"])

    cfg = GateConfig(models=("dpo",), probes=2, max_new_tokens=64)
    result = gate.run(cfg, prompts, {"base": "b", "sft": "s", "dpo": "d"}, tmp_path, load_model=load)
    assert loaded == ["d"] and set(result.details["per_model"]) == {"dpo"}
    with pytest.raises(StageError, match="candidate model 'dpo' was not given"):
        gate.run(cfg, prompts, {"sft": "s"}, tmp_path, load_model=load)


@pytest.mark.parametrize("kwargs, message", [
    ({"models": ("dpo", "rlhf")}, "models: unknown model"),
    ({"models": ("sft",)}, "candidate: must be one of models"),
    ({"probes": 0}, "probes: must be >= 1"),
    ({"min_distinct_2": 1.5}, "min_distinct_2: must be in [0, 1]"),
    ({"max_rep_3": 2.0}, "max_rep_3: must be <= 1"),
    ({"models": ()}, "models: name at least one model"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ConfigError) as exc:
        GateConfig(**kwargs)
    assert message in str(exc.value)
    with pytest.raises(ConfigError, match="gate.mode: expected one of 'fail', 'flag'"):
        GateConfig.from_dict({"mode": "warn"}, path="gate")


def test_verdict_of_a_broken_record():
    with pytest.raises(StageError, match="no verdict"):
        gate.verdict_of({"details": {}})


def test_report_of_a_failed_gate_says_why_and_ignores_a_stale_evaluation(tmp_path, prompts):
    result = _run(tmp_path, prompts, LOOPING)
    gate_dir = tmp_path / "out"
    records.write_json(gate_dir / "_stage.json", {"metrics": result.metrics, "details": result.details})
    stale = {"metrics": {"dpo.mt_bench_avg": 9.9}, "details": {"per_model": {"dpo": {}}}}
    out = tmp_path / "report"
    res = report.run(report.ReportConfig(), {"gate": gate_dir}, out, stages={"evaluate": stale})
    page = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    assert "FAILED: the dpo model was NOT promoted" in page and "rep_3" in page
    assert "Not evaluated: the dpo model failed the collapse gate" in md and "9.9" not in md
    metrics = json.loads((out / "metrics.json").read_text())
    assert "evaluate" not in metrics and metrics["verdict"]["gate"] == "fail" and metrics["verdict"]["promoted"] is False
    assert metrics["models"]["dpo"]["gate"] == "fail" and metrics["models"]["base"]["gate"] == "pass"
    assert metrics["models"]["dpo"]["evaluated"] is False and res.metrics["promoted"] == 0.0
    assert "I hope this helps!" in page  # the looping probe answers are shown


def test_pipeline_gates_evaluation_with_if_else():
    """The compiled DAG: gate after dpo; evaluate + report only when the verdict is not 'fail', else a report."""
    from kfp import compiler

    from cai_core.config.loading import load_run_config
    from cai_pipelines.cai_pipeline import build_pipeline

    seen = []

    def platform(task, step):
        seen.append(step)
        return task

    pipeline = build_pipeline(load_run_config(), platform=platform)
    assert seen.count("gate") == 1 and seen.count("evaluate") == 1 and seen.count("report") == 2
    import tempfile
    from pathlib import Path

    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        compiler.Compiler().compile(pipeline, str(Path(tmp) / "p.yaml"))
        spec = yaml.safe_load((Path(tmp) / "p.yaml").read_text())
    dag = spec["root"]["dag"]["tasks"]
    assert "dpo" in dag["gate"]["dependentTasks"]
    branches = [t for t in dag.values() if "gate" in t.get("dependentTasks", []) and t is not dag["gate"]]
    assert len(branches) == 1  # the If/Else group; nothing else waits for the gate
    group = spec["components"][branches[0]["componentRef"]["name"]]["dag"]["tasks"]
    by_condition = {t["triggerPolicy"]["condition"]: spec["components"][t["componentRef"]["name"]]["dag"]["tasks"]
                    for t in group.values()}
    assert len(by_condition) == 2
    passed = next(v for c, v in by_condition.items() if not c.startswith("!(") and "gate-verdict'] != 'fail'" in c)
    failed = next(v for c, v in by_condition.items() if c.startswith("!("))
    assert sorted(t["componentRef"]["name"] for t in passed.values()) == ["comp-evaluate", "comp-report"]
    assert [t["componentRef"]["name"] for t in failed.values()] == ["comp-report-2"]
    assert not any(t["componentRef"]["name"] == "comp-evaluate" for t in dag.values())  # never outside the If
