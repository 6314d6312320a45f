"""The whole pipeline through kfp.local, as a user runs it: `cai run`, then the same run id again."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from cai_core import records

pytestmark = pytest.mark.slow

SMALL = ["prompts.max_prompts=10", "eval_prompts.max_prompts=4", "revise.max_new_tokens=24",
         "pairs.max_new_tokens=24", "evaluate.max_new_tokens=32", "sft.max_steps=4", "dpo.max_steps=4",
         "judge.test_fraction=0.2",
         # the evaluation harness and the collapse gate on a few items each (flag: always evaluate)
         "evaluate.mt_bench_questions=2", "evaluate.red_team_max=4", "evaluate.benign_max=2", "gate.probes=4",
         "gate.max_new_tokens=32", "gate.mode=flag"]
STEPS = ["prepare_prompts", "prepare_eval", "revise", "clean_revisions", "sft", "pairs", "clean_pairs",
         "judge", "dpo", "gate", "evaluate", "report"]


def cai(*args, env, check=True):
    proc = subprocess.run([sys.executable, "-m", "cai_core.cli", *args], capture_output=True, text=True, env=env,
                          timeout=900)
    if check and proc.returncode:
        raise AssertionError(f"cai {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    env = dict(os.environ, CAI_CACHE_DIR=str(tmp_path_factory.getbasetemp() / "cai-cache"))
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    return env


@pytest.fixture(scope="module")
def run(tmp_path_factory, env):
    out = tmp_path_factory.mktemp("runs")
    args = ["run", "--run-id", "e2e", "--output-dir", str(out)]
    for item in SMALL:
        args += ["--set", item]
    first = cai(*args, env=env)
    second = cai(*args, env=env)
    return out / "e2e", first, second


def test_every_step_published(run):
    run_dir, first, _ = run
    for step in STEPS:
        stage = records.read_json(run_dir / step / "_stage.json")
        assert (run_dir / step / "_MANIFEST.json").exists(), step
        assert all(math.isfinite(v) for v in stage["metrics"].values()), step
    assert "report:" in first.stdout and str(run_dir / "report.html") in first.stdout
    assert "[cai] judge: done" in first.stdout  # progress lines reach the terminal


def test_artifacts_rows_and_fields(run):
    run_dir = run[0]
    prompts = records.read_jsonl(run_dir / "prepare_prompts" / "prompts.jsonl", records.PROMPT)
    assert len(prompts) == 10
    revisions = records.read_jsonl(run_dir / "revise" / "revisions.jsonl", records.REVISION)
    assert [r["id"] for r in revisions] == [p["id"] for p in prompts]
    cleaned = records.read_jsonl(run_dir / "clean_revisions" / "cleaned.jsonl")
    assert all("final_cleaned" in r and "reasons" in r["final_cleanup"] for r in cleaned)
    pairs = records.read_jsonl(run_dir / "clean_pairs" / "cleaned.jsonl", records.PAIR)
    assert len(pairs) == 10 and all("response_a_cleaned" in r and "response_b_cleaned" in r for r in pairs)
    verdicts = records.read_jsonl(run_dir / "judge" / "verdicts.jsonl")
    train = records.read_jsonl(run_dir / "judge" / "train.jsonl", records.PREFERENCE, allow_empty=True)
    test = records.read_jsonl(run_dir / "judge" / "test.jsonl", records.PREFERENCE, allow_empty=True)
    judge_metrics = records.read_json(run_dir / "judge" / "_stage.json")["metrics"]
    assert len(verdicts) == 10 and len(train) + len(test) == judge_metrics["kept"] > 0
    assert sum(judge_metrics[k] for k in judge_metrics if k.startswith("status_")) == 10
    for name in ("base", "sft", "dpo"):
        answers = records.read_jsonl(run_dir / "evaluate" / f"answers_{name}.jsonl", records.ANSWER)
        assert len(answers) == 4


def test_trained_models_load_and_generate(run):
    from cai_core.llm.base import Sampling
    from cai_core.llm.transformers_backend import TransformersChatModel

    for step in ("sft", "dpo"):
        model = TransformersChatModel(str(run[0] / step / "model"))
        text = model.chat([[{"role": "user", "content": "How do I boil an egg?"}]],
                          [Sampling(temperature=0.0, max_new_tokens=12)])[0]
        assert isinstance(text, str) and text.strip(), step
        log = records.read_jsonl(run[0] / step / "train_log.jsonl")
        assert log and all(math.isfinite(r["loss"]) for r in log if "loss" in r)


def test_report_and_metrics(run):
    run_dir = run[0]
    html = (run_dir / "report.html").read_text()
    md = (run_dir / "report.md").read_text()
    for section in ("Evaluation", "Data cleaning", "Judge", "Training curves", "Examples"):
        assert f"<h2>{section}</h2>" in html and f"## {section}" in md
    assert html.count("data:image/png;base64,") >= 4  # SFT and DPO curves
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(STEPS) - {"report"} <= set(metrics)
    for model in ("base", "sft", "dpo"):
        for key in ("rep_2", "rep_3", "rep_4", "distinct_1", "distinct_2", "tail_loop_rate"):
            value = metrics["evaluate"][f"{model}.{key}"]
            assert math.isfinite(value) and 0 <= value <= 1
        row = metrics["models"][model]
        for key in ("mt_bench_t1", "mt_bench_t2", "mt_bench_avg"):  # the tiny judge, read through logprobs
            assert 1 <= row[key] <= 10, (model, key)
        for key in ("asr", "over_refusal"):
            assert 0 <= row[f"{key}_ci_low"] <= row[key] <= row[f"{key}_ci_high"] <= 1, (model, key)
        assert row["gate"] in ("pass", "fail") and row["evaluated"] is True
        assert metrics["gate"][f"{model}.pass"] in (0.0, 1.0)
    verdict = metrics["verdict"]
    assert verdict["gate"] in ("pass", "flag") and verdict["promoted"] is (verdict["gate"] == "pass")
    assert "<h2>Collapse gate</h2>" in html and "MT-Bench avg" in html and "ASR [95% CI]" in html
    assert len(records.read_jsonl(run_dir / "evaluate" / "mt_bench_dpo.jsonl")) == 2
    assert len(records.read_jsonl(run_dir / "evaluate" / "red_team_dpo.jsonl")) == 4


def test_rerun_reuses_every_step(run):
    run_dir, first, second = run
    verdict = next(line for line in (run_dir / "report.md").read_text().splitlines() if line.startswith("Verdict:"))
    assert f"\n{verdict}\n" in first.stdout and f"\n{verdict}\n" in second.stdout  # the terminal says it too
    for step in STEPS:
        assert f"[cai] {step}: reused" in second.stdout, step
        assert f"[cai] {step}: started" in first.stdout, step


def test_changed_late_setting_reruns_only_what_depends_on_it(run, env):
    run_dir = run[0]
    args = ["run", "--run-id", "e2e", "--output-dir", str(run_dir.parent)]
    for item in SMALL + ["report.title=changed"]:
        args += ["--set", item]
    out = cai(*args, env=env).stdout
    assert "[cai] report: started" in out and "[cai] dpo: reused" in out
    assert "changed" in (run_dir / "report.html").read_text()


@pytest.mark.parametrize("content, message", [
    (None, "file not found"),
    (b"", "no rows"),
    (b'{"prompt": "ok"}\nnot json\n', ":2: not valid JSON"),
    (b'{"text": "no prompt field"}\n', ":1: field 'prompt': missing"),
    (b'{"prompt": 42}\n', ":1: field 'prompt': expected a string"),
    (b'{"prompt": "\xff"}\n', ":1: not valid UTF-8"),
    (b'{"prompt": "ok"}\n{"prompt": "' + b"x" * (10 * 1024 * 1024) + b'"}\n', ":2: line is 10.5 MB"),
])
def test_bad_prompts_fail_cleanly_before_anything_runs(tmp_path, env, content, message):
    src = tmp_path / "prompts.jsonl"
    if content is not None:
        src.write_bytes(content)
    proc = cai("run", "--output-dir", str(tmp_path / "runs"), "--set", f"prompts.source={src}", env=env, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and str(src) in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "runs").exists()


def test_bad_config_key_fails_cleanly(tmp_path, env):
    proc = cai("run", "--output-dir", str(tmp_path), "--set", "revise.roundz=2", env=env, check=False)
    assert proc.returncode == 2 and "revise.roundz: unknown config key" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_failed_gate_blocks_evaluation_and_the_report_says_why(run, env):
    """Same run, an impossible gate threshold: everything up to DPO is reused, the gate fails,
    the If/Else takes the other branch: no evaluation, a report that names the failed check."""
    run_dir = run[0]
    args = ["run", "--run-id", "e2e", "--output-dir", str(run_dir.parent)]
    for item in SMALL + ["gate.mode=fail", "gate.min_distinct_2=1.0"]:
        args += ["--set", item]
    out = cai(*args, env=env)
    text = out.stdout + out.stderr
    assert "[cai] dpo: reused" in text and "[cai] gate: started" in text and "[cai] report: started" in text
    assert "[cai] evaluate: started" not in text and "[cai] evaluate: reused" not in text
    verdict = next(line for line in out.stdout.splitlines() if line.startswith("Verdict:"))
    assert verdict.startswith("Verdict: NOT PROMOTED. The dpo model broke collapse thresholds (") and "min_distinct_2 1" in verdict
    html = (run_dir / "report.html").read_text()
    assert "FAILED: the dpo model was NOT promoted" in html and "min_distinct_2 1" in html
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["verdict"] == {"gate": "fail", "promoted": False, "candidate": "dpo",
                                  "reasons": metrics["verdict"]["reasons"]} and metrics["verdict"]["reasons"]
    assert "evaluate" not in metrics and metrics["models"]["dpo"]["gate"] == "fail"
