"""`cai run --ablation`: the whole pipeline per cleaning variant and seed through kfp.local, then one comparison."""
from __future__ import annotations

import json
import os

import pytest

from tests.e2e.test_local_run import SMALL, cai

pytestmark = pytest.mark.slow


@pytest.mark.timeout(1200)
def test_ablation_runs_every_member_and_compares(tmp_path, tmp_path_factory):
    env = dict(os.environ, CAI_CACHE_DIR=str(tmp_path_factory.getbasetemp() / "cai-cache"))
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    # Two members (each a whole pipeline run); the 95% interval arithmetic is tested in test_compare.py.
    small = [s for s in SMALL if not s.startswith(("prompts.", "evaluate.mt_bench", "evaluate.red_team"))] + [
        "prompts.max_prompts=6", "eval_prompts.max_prompts=3", "evaluate.mt_bench_questions=1",
        "evaluate.red_team_max=2", "ablation.variants=[none, rule]", "ablation.seeds=[3]"]
    args = ["run", "--ablation", "--run-id", "abl", "--output-dir", str(tmp_path)]
    for item in small:
        args += ["--set", item]
    out = cai(*args, env=env).stdout
    root = tmp_path / "abl"
    assert str(root / "ablation.html") in out
    for member in ("none-seed3", "rule-seed3"):
        metrics = json.loads((root / member / "metrics.json").read_text())
        assert metrics["prepare_prompts"]["rows_out"] == 6
    # the members share the seed (same revisions) and differ in cleaning only
    revisions = {m: (root / m / "revise" / "revisions.jsonl").read_text() for m in ("none-seed3", "rule-seed3")}
    assert revisions["none-seed3"] == revisions["rule-seed3"]
    assert json.loads((root / "none-seed3" / "metrics.json").read_text())["clean_revisions"]["changed"] == 0
    table = json.loads((root / "ablation.json").read_text())
    assert set(table) == {"none", "rule"}
    tail = table["rule"]["evaluate.dpo.tail_loop_rate"]
    assert tail["n"] == 1 and tail["ci_low"] == tail["mean"] == tail["ci_high"]
    md = (root / "ablation.md").read_text()
    assert "| metric | none | rule |" in md
