import json
import math

import pytest

from cai_core.errors import StageError
from cai_core.stages import compare


def member(tmp_path, variant, seed, tail):
    root = tmp_path / f"{variant}-{seed}"
    root.mkdir()
    (root / "metrics.json").write_text(json.dumps({
        "evaluate": {"dpo.tail_loop_rate": tail, "dpo.rep_2": 0.1, "base.rep_2": 0.5},
        "judge": {"kept": 10 + seed, "status_ok": 3}}))
    return {"variant": variant, "seed": seed, "run_root": str(root)}


def test_mean_and_t_interval():
    mean, low, high = compare.mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and math.isclose(high - mean, 4.303 * 1.0 / math.sqrt(3), rel_tol=1e-6)
    assert compare.mean_ci([5.0]) == (5.0, 5.0, 5.0)


def test_table_per_variant_with_selected_metrics(tmp_path):
    members = [member(tmp_path, "none", 0, 0.6), member(tmp_path, "none", 1, 0.8), member(tmp_path, "rule", 0, 0.1)]
    out = tmp_path / "out"
    out.mkdir()
    result = compare.run(compare.CompareConfig(metrics=("evaluate.dpo.*", "judge.kept")), members, out)
    table = json.loads((out / "ablation.json").read_text())
    assert set(table["none"]) == {"evaluate.dpo.tail_loop_rate", "evaluate.dpo.rep_2", "judge.kept"}
    assert math.isclose(table["none"]["evaluate.dpo.tail_loop_rate"]["mean"], 0.7)
    assert table["none"]["judge.kept"]["n"] == 2 and table["rule"]["judge.kept"]["n"] == 1
    assert result.metrics["variants"] == 2
    md = (out / "ablation.md").read_text()
    assert "| evaluate.dpo.tail_loop_rate | 0.7 [" in md and "0.1 |" in md


def test_missing_member_is_a_clear_error(tmp_path):
    with pytest.raises(StageError, match="ablation member llm/seed 3: no metrics.json"):
        compare.run(compare.CompareConfig(), [{"variant": "llm", "seed": 3, "run_root": str(tmp_path)}], tmp_path)


def test_ablation_members_differ_only_in_variant_and_seeds():
    from cai_core.config.loading import load_run_config
    from cai_pipelines.ablation import members

    cfg = load_run_config(None, ["ablation.variants=[none, rule]", "ablation.seeds=[0, 7]"])
    items = members(cfg, "/runs/x")
    assert [(m["variant"], m["seed"], m["run_root"]) for m in items] == [
        ("none", 0, "/runs/x/none-seed0"), ("none", 7, "/runs/x/none-seed7"),
        ("rule", 0, "/runs/x/rule-seed0"), ("rule", 7, "/runs/x/rule-seed7")]
    seven = items[1]
    assert json.loads(seven["revise_config"])["revise"]["seed"] == 7
    assert json.loads(seven["sft_config"])["sft"]["seed"] == 7
    assert json.loads(seven["clean_revisions_config"])["clean"]["variant"] == "none"
    assert json.loads(items[3]["clean_revisions_config"])["clean"]["variant"] == "rule"
    assert items[0]["evaluate_config"] != seven["evaluate_config"]
