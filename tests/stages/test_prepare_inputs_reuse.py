"""Issue 18, continued: reuse never serves stale data, every mix reaches the report, and the cluster side.

* A prepare step reruns when the data behind an unchanged source string changes: a saved dataset rewritten in
  place, a new commit of an hf: dataset, an s3:// object rewritten under the same URI; unchanged data is reused.
* `prompts.mix` given as `--set` YAML runs as a step; the report shows the counts per source of every mix
  (training and evaluation prompts, SFT's helpful data).
* On the cluster the steps that read data sets get HF_TOKEN and are never served from KFP's cache.
* The Hub's errors (split, config, revision, network) are one line each.
"""
from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import yaml

datasets = pytest.importorskip("datasets")

from cai_core import records, storage  # noqa: E402
from cai_core.config.loading import load_cluster_run_config, load_run_config  # noqa: E402
from cai_core.data import inputs  # noqa: E402
from cai_core.runtime import engine  # noqa: E402
from cai_core.stages import report  # noqa: E402


def _save_hh(path: Path, topics: list[str]) -> None:
    if path.exists():
        shutil.rmtree(path)
    datasets.Dataset.from_dict({"transcript": [f"\n\nHuman: How do I {t}?\n\nAssistant: Like this." for t in topics]}
                               ).save_to_disk(str(path))


def _prepare(cfg, out: Path, root: Path) -> dict:
    return engine.execute("prepare_prompts", engine.payload(cfg, "prepare_prompts"), {}, str(out), str(root))


def _prompts(stage_out: Path) -> list[str]:
    return [r["prompt"] for r in records.read_jsonl(stage_out / "prompts.jsonl")]


def test_a_saved_dataset_rewritten_in_place_reruns_prepare(tmp_path):
    src, root = tmp_path / "hh", tmp_path / "run"
    _save_hh(src, ["bake bread", "fix a bike"])
    cfg = load_run_config(overrides=[f"prompts.source={src}", "prompts.format=hh"])
    first = _prepare(cfg, tmp_path / "a", root)
    again = _prepare(cfg, tmp_path / "b", root)
    assert again["fingerprint"] == first["fingerprint"] and again["started"] == first["started"]  # reused
    _save_hh(src, ["bake bread", "fix a bike", "plant a tree"])  # same path, same config, new content
    third = _prepare(cfg, tmp_path / "c", root)
    assert third["fingerprint"] != first["fingerprint"] and third["metrics"]["rows_out"] == 3
    assert _prompts(tmp_path / "c")[-1] == "How do I plant a tree?"
    assert _prompts(root / "prepare_prompts") == _prompts(tmp_path / "c")  # the published output is the new one


def test_a_new_commit_of_an_hf_dataset_reruns_prepare(tmp_path, monkeypatch):
    hub = {"sha": "1" * 40, "rows": ["first question?"]}

    def load_dataset(path, split=None, streaming=False, **kwargs):
        assert streaming and path == "Anthropic/hh-rlhf"
        return iter([{"transcript": f"\n\nHuman: {q}\n\nAssistant: ok"} for q in hub["rows"]])

    class FakeApi:
        def dataset_info(self, repo_id, revision=None, timeout=None):
            assert repo_id == "Anthropic/hh-rlhf" and timeout  # bounded: no hang without a network
            return types.SimpleNamespace(sha=hub["sha"])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    src = "hf:Anthropic/hh-rlhf@train?data_dir=red-team-attempts"
    assert inputs.fingerprint(src) == f"{src}#{'1' * 40}"
    cfg = load_run_config(overrides=[f"prompts.source={src}", "prompts.format=hh"])
    root = tmp_path / "run"
    first = _prepare(cfg, tmp_path / "a", root)
    assert _prepare(cfg, tmp_path / "b", root)["started"] == first["started"]  # same commit: reused
    hub.update(sha="2" * 40, rows=["first question?", "second question?"])  # main moved on
    third = _prepare(cfg, tmp_path / "c", root)
    assert third["fingerprint"] != first["fingerprint"] and _prompts(tmp_path / "c")[-1] == "second question?"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline: no call, the revision as given
    assert inputs.fingerprint(src + "&revision=v1").endswith("#v1:offline")


@pytest.mark.s3
def test_an_s3_object_rewritten_under_the_same_uri_reruns_prepare(tmp_path, s3_bucket):
    uri = f"s3://{s3_bucket}/prompts/red_team.jsonl"
    storage.write_text(uri, json.dumps({"prompt": "one?"}) + "\n")
    cfg = load_run_config(overrides=[f"prompts.source={uri}"])
    root = tmp_path / "run"
    first = _prepare(cfg, tmp_path / "a", root)
    assert _prepare(cfg, tmp_path / "b", root)["started"] == first["started"]
    storage.write_text(uri, json.dumps({"prompt": "one?"}) + "\n" + json.dumps({"prompt": "two?"}) + "\n")
    third = _prepare(cfg, tmp_path / "c", root)
    assert third["fingerprint"] != first["fingerprint"] and _prompts(tmp_path / "c") == ["one?", "two?"]
    assert inputs.fingerprint(f"s3://{s3_bucket}/missing.jsonl").endswith("#unresolved")  # opening reports it


def test_a_mix_given_on_the_command_line_runs_and_every_mix_is_in_the_report(tmp_path):
    red = tmp_path / "red"
    _save_hh(red, [f"pick lock {i}" for i in range(9)])
    helpful = tmp_path / "helpful.parquet"
    datasets.Dataset.from_dict({"prompt": [f"How do I bake bread {i}?" for i in range(5)]}).to_parquet(str(helpful))
    mix = [{"source": str(red), "weight": 3, "format": "hh", "category": "red_team", "name": "red_team"},
           {"source": str(helpful), "weight": 1, "category": "helpful", "name": "helpful"}]
    cfg = load_run_config(overrides=[f"prompts.mix={json.dumps(mix)}", "prompts.max_prompts=8"])
    stage = _prepare(cfg, tmp_path / "a", tmp_path / "run")
    m = stage["metrics"]
    assert (m["mix.red_team.rows"], m["mix.helpful.rows"], m["rows_out"]) == (6, 2, 8)
    cats = [r["category"] for r in records.read_jsonl(tmp_path / "a" / "prompts.jsonl")]
    assert cats.count("red_team") == 6 and cats[:4].count("helpful") == 1
    assert stage["details"]["formats"][str(helpful)]["format"] == "plain"  # auto said what it chose

    ev = {"metrics": {"mix.curated.rows": 3, "mix.curated.target": 4, "mix.curated.short": 1, "mix.benign.rows": 2,
                      "overlap_checked": 5, "overlap_exact": 1, "overlap_near": 0, "overlap_rate": 0.2,
                      "dropped_train_overlap": 1}}
    sft = {"metrics": {"cai_rows": 6, "helpful_rows": 2, "helpful_target": 2, "helpful_short": 0}}
    out = report.run(report.ReportConfig(), {}, tmp_path / "report",
                     stages={"prepare_prompts": stage, "prepare_eval": ev, "sft": sft, "revise": {}})
    text = out.outputs["markdown"].read_text()
    assert "Training prompts mixed from helpful: 2, red_team: 6." in text  # sources by name
    assert "Evaluation prompts mixed from benign: 2, curated: 3 (curated 1 short of its target)." in text
    assert "SFT data mixed from cai: 6, helpful (sft.helpful_data): 2." in text
    assert "Train/eval overlap: 1 of 5 evaluation prompts (rate 0.200; 1 exact, 0 near)" in text


def _tasks(docs: list[dict]) -> dict[str, tuple[dict, dict]]:
    """step -> (task, kubernetes executor config), for the root DAG's tasks."""
    spec, platform = docs
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    out = {}
    for task in spec["root"]["dag"]["tasks"].values():
        executor = spec["components"][task["componentRef"]["name"]].get("executorLabel")
        if executor is not None:
            out[k8s[executor]["podMetadata"]["labels"]["cai/stage"]] = (task, k8s[executor])
    return out


def test_the_pods_that_read_data_sets_get_hf_token_and_no_kfp_cache(tmp_path):
    from cai_pipelines.cluster import compile_pipeline

    # discover listed nowhere in no_cache_steps, prepare_eval taken out of it: neither is served from the cache
    cfg = load_cluster_run_config(None, ["judge.constitution=discover", "discover.source=hf:org/prefs@train",
                                         "prompts.source=hf:Anthropic/hh-rlhf@train?data_dir=red-team-attempts",
                                         "sft.helpful_data=hf:HuggingFaceH4/ultrachat_200k@train_sft",
                                         "cluster.no_cache_steps=[prepare_prompts]"])
    out = tmp_path / "pipeline.yaml"
    compile_pipeline(cfg, out)
    tasks = _tasks(list(yaml.safe_load_all(out.read_text())))
    for step in ("prepare_prompts", "prepare_eval", "discover", "sft"):
        task, k8s = tasks[step]
        env = {m["envVar"]: (s["secretName"], m["secretKey"]) for s in k8s.get("secretAsEnv", [])
               for m in s["keyToEnv"]}
        assert env.get("HF_TOKEN") == (cfg.cluster.secrets.hf_token.secret, cfg.cluster.secrets.hf_token.key), step
        cached = bool(task.get("cachingOptions", {}).get("enableCache", False))
        assert cached == (step == "sft"), step  # sft's cache key holds its input artifact from prepare
    assert bool(tasks["judge"][0].get("cachingOptions", {}).get("enableCache", False))


@pytest.mark.parametrize("exc, says", [
    (ValueError('Bad split: train_pref. Available splits: [\'train_prefs\', \'test_prefs\']'), "unknown split"),
    (ValueError("Config name is missing. Please pick one among the available configs: ['a', 'b']"),
     "unknown or missing config name, set ?name=<config>"),
    (type("RevisionNotFoundError", (Exception,), {})("Revision Not Found for url ..."), "unknown revision"),
    (ConnectionError("Couldn't reach 'org/set' on the Hub (ConnectionError)"), "cannot reach the Hugging Face Hub"),
    (type("OfflineModeIsEnabled", (ConnectionError,), {})("Offline mode is enabled."), "HF_HUB_OFFLINE=1 is set"),
])
def test_hub_errors_are_one_clear_line(exc, says):
    message = inputs.hub_message(exc)
    assert says in message and "\n" not in message
