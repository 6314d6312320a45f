"""`cai run --set dpo.iterations=2` through kfp.local: two preference rounds, reused per round, gated between.

1. one round, then the same run id with two: round 1's steps (and everything before) are reused, round 2's run,
   sampling from and training against round 1's DPO model; metrics.json and the report show both rounds;
2. then a round 1 that fails the gate (gate.mode fail, distinct-2 of at least 0.99 demanded) ends the loop: round 2
   does not run and nothing is promoted.
"""
from __future__ import annotations

import json
import os

import pytest

from tests.e2e.test_local_run import SMALL, cai

ROUND_TWO = ("pairs_r2", "clean_pairs_r2", "judge_r2", "dpo_r2", "gate_r2")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    env = dict(os.environ, CAI_CACHE_DIR=str(tmp_path_factory.getbasetemp() / "cai-cache"))
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    return env


def _run(out, run_id, env, *sets):
    args = ["run", "--run-id", run_id, "--output-dir", str(out)]
    for item in (*SMALL, *sets):
        args += ["--set", item]
    return cai(*args, env=env)


@pytest.fixture(scope="module")
def two_rounds(env, tmp_path_factory):
    out = tmp_path_factory.mktemp("rounds")
    first = _run(out, "rounds", env)
    second = _run(out, "rounds", env, "dpo.iterations=2")
    return out / "rounds", first, second


def test_raising_iterations_reuses_round_one_and_runs_round_two(two_rounds):
    run_dir, first, second = two_rounds
    assert not any(f"{step}: started" in first.stdout for step in ROUND_TWO)
    for step in ("sft", "pairs", "clean_pairs", "judge", "dpo", "gate"):
        assert f"{step}: reused the completed output" in second.stdout, step
    for step in ROUND_TWO:
        assert f"{step}: started" in second.stdout and (run_dir / step / "_stage.json").exists(), step
    stage = json.loads((run_dir / "dpo_r2" / "_stage.json").read_text())
    assert "/dpo/" in stage["details"]["model"]  # round 2 starts from (and is referenced to) round 1's model
    pairs = json.loads((run_dir / "pairs_r2" / "_stage.json").read_text())
    assert pairs["metrics"]["status_ok"] > 0


def test_metrics_and_report_show_both_rounds(two_rounds):
    run_dir, _, _ = two_rounds
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for step in ("pairs", "judge", "dpo", "gate", "pairs_r2", "judge_r2", "dpo_r2", "gate_r2"):
        assert metrics[step], step
    assert metrics["dpo_r2"]["steps"] == 4
    report = (run_dir / "report.md").read_text()
    assert "Preference rounds: 2 of 2 ran" in report and "## Preference rounds" in report
    assert (run_dir / "plots" / "rounds_collapse.png").exists() and (run_dir / "plots" / "rounds_margins.png").exists()


def test_a_round_that_fails_the_gate_ends_the_loop(two_rounds, env):
    """The same run id again, now with a gate round 1 cannot pass: everything up to dpo is reused, round 1's gate
    fails, round 2 does not run (its folders from the run before are not taken for this run's) and nothing is
    evaluated or promoted."""
    run_dir, _, _ = two_rounds
    proc = _run(run_dir.parent, "rounds", env, "dpo.iterations=2", "gate.mode=fail", "gate.min_distinct_2=0.99")
    assert "dpo: reused the completed output" in proc.stdout and "gate: started" in proc.stdout
    for step in (*ROUND_TWO, "evaluate"):
        assert f"{step}: started" not in proc.stdout and f"{step}: reused" not in proc.stdout, step
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["verdict"]["promoted"] is False and "gate_r2" not in metrics and "evaluate" not in metrics
    report = (run_dir / "report.md").read_text()
    assert "Preference rounds: 1 of 2 ran (round 1: fail)" in report and "No round passed" in report
    assert "Verdict: NOT PROMOTED" in proc.stdout
