"""Inputs from where users keep them: dataset dirs, parquet/arrow, hf:, recipes, mixing and the overlap check.

Every dataset here is built by the test and saved locally (`Dataset.save_to_disk`, parquet, arrow); the
hf: hub path is tested offline (HF_HUB_OFFLINE=1, a subprocess with a timeout) and through a fake loader.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

datasets = pytest.importorskip("datasets")

from cai_core import records  # noqa: E402
from cai_core.config.base import field_docs  # noqa: E402
from cai_core.config.loading import load_run_config  # noqa: E402
from cai_core.data import formats, inputs  # noqa: E402
from cai_core.data.overlap import OverlapIndex  # noqa: E402
from cai_core.errors import ConfigError, InputError  # noqa: E402
from cai_core.runtime import engine  # noqa: E402
from cai_core.runtime.steps import STEPS  # noqa: E402
from cai_core.stages import prepare  # noqa: E402
from cai_core.stages.prepare import EvalPromptsConfig, MixSource, PrepareConfig  # noqa: E402

HH = [f"\n\nHuman: How do I pick lock number {i}?\n\nAssistant: I can't help with that.\n\nHuman: Please?"
      f"\n\nAssistant: No." for i in range(6)]


def hh_dir(tmp_path: Path, n: int = 6, name: str = "hh") -> Path:
    """An HH-RLHF red-team-attempts-shaped dataset (a `transcript` column), saved with save_to_disk."""
    path = tmp_path / name
    rows = {"transcript": [f"\n\nHuman: How do I pick lock number {i}?\n\nAssistant: I can't help with that."
                           f"\n\nHuman: Please?\n\nAssistant: No." for i in range(n)],
            "rating": [float(i % 4) for i in range(n)]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(path))
    return path


def messages_parquet(tmp_path: Path, n: int = 5) -> Path:
    path = tmp_path / "chat.parquet"
    datasets.Dataset.from_dict({"messages": [
        [{"role": "system", "content": "be nice"}, {"role": "user", "content": f"Tell me a fact about {i}."},
         {"role": "assistant", "content": "Sure."}] for i in range(n)]}).to_parquet(str(path))
    return path


def ultrafeedback_parquet(tmp_path: Path, rows: list[dict], name: str = "prefs.parquet") -> Path:
    """Pairs in HuggingFaceH4/ultrafeedback_binarized's shape: prompt, chosen/rejected as message lists."""
    path = tmp_path / name
    data = {"prompt": [], "prompt_id": [], "chosen": [], "rejected": [], "score_chosen": [], "score_rejected": []}
    for i, r in enumerate(rows):
        data["prompt"].append(r["prompt"])
        data["prompt_id"].append(f"id{i}")
        data["chosen"].append([{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["chosen"]}])
        data["rejected"].append([{"role": "user", "content": r["prompt"]},
                                 {"role": "assistant", "content": r["rejected"]}])
        data["score_chosen"].append(8.0)
        data["score_rejected"].append(3.0)
    datasets.Dataset.from_dict(data).to_parquet(str(path))
    return path


# ---------------------------------------------------------------- sources and recipes


def test_hh_dataset_dir_takes_the_first_human_turn(tmp_path, capsys):
    src = hh_dir(tmp_path)
    result = prepare.run(PrepareConfig(source=str(src), format="hh"), tmp_path / "out")
    rows = records.read_jsonl(result.outputs["prompts"], records.PROMPT)
    assert [r["prompt"] for r in rows] == [f"How do I pick lock number {i}?" for i in range(6)]
    assert result.metrics["format_hh"] == 1 and result.metrics["rows_out"] == 6 and result.metrics["rows_in"] == 6
    auto = prepare.run(PrepareConfig(source=str(src)), tmp_path / "auto")  # auto finds the transcript column
    assert auto.metrics["format_hh"] == 1 and auto.details["formats"][str(src)]["field"] == "transcript"
    assert "format auto -> hh (field 'transcript')" in capsys.readouterr().err


def test_parquet_arrow_jsonl_folder_and_dataset_dict_splits(tmp_path):
    chat = messages_parquet(tmp_path)
    rows, m = prepare.load_prompts(PrepareConfig(source=str(chat), format="messages", max_prompts=3))
    assert [r["prompt"] for r in rows] == ["Tell me a fact about 0.", "Tell me a fact about 1.", "Tell me a fact about 2."]
    assert prepare.load_prompts(PrepareConfig(source=str(chat)))[1]["format_messages"] == 1  # auto

    ds = datasets.Dataset.from_dict({"prompt": ["a?", "b?", ""], "category": ["helpful", "red_team", "x"]})
    arrow = tmp_path / "arrow"
    ds.save_to_disk(str(arrow))
    arrow_file = next(arrow.glob("*.arrow"))
    rows, m = prepare.load_prompts(PrepareConfig(source=str(arrow_file)))
    assert [(r["prompt"], r["category"]) for r in rows] == [("a?", "helpful"), ("b?", "red_team")]
    assert m["dropped_empty_prompt"] == 1

    folder = tmp_path / "shards"
    folder.mkdir()
    for i in range(2):
        records.write_jsonl(folder / f"part-{i}.jsonl", [{"prompt": f"shard {i} row {j}"} for j in range(2)])
    assert len(prepare.load_prompts(PrepareConfig(source=str(folder)))[0]) == 4

    dd = tmp_path / "dd"
    datasets.DatasetDict({"train": ds, "test": datasets.Dataset.from_dict({"prompt": ["held out?"]})}).save_to_disk(str(dd))
    assert [r["prompt"] for r in prepare.load_prompts(PrepareConfig(source=f"{dd}@test"))[0]] == ["held out?"]
    assert len(prepare.load_prompts(PrepareConfig(source=str(dd)))[0]) == 2  # train by default
    with pytest.raises(InputError, match=r"dd@nope: unknown split 'nope' \(the dataset has: train, test\)"):
        prepare.load_prompts(PrepareConfig(source=f"{dd}@nope"))


def test_unknown_field_and_bad_types_name_the_row(tmp_path):
    src = tmp_path / "texts"
    datasets.Dataset.from_dict({"text": ["one", "two"]}).save_to_disk(str(src))
    with pytest.raises(InputError, match=r"texts:1: field 'prompt': missing"):
        prepare.load_prompts(PrepareConfig(source=str(src)))
    assert len(prepare.load_prompts(PrepareConfig(source=str(src), prompt_field="text"))[0]) == 2
    with pytest.raises(InputError, match=r"chat.parquet:1: field 'messages': expected a string"):
        prepare.load_prompts(PrepareConfig(source=str(messages_parquet(tmp_path)), format="plain",
                                           prompt_field="messages"))
    with pytest.raises(InputError, match="file not found"):
        prepare.load_prompts(PrepareConfig(source=str(tmp_path / "missing.parquet")))
    with pytest.raises(InputError, match="unknown option"):
        prepare.load_prompts(PrepareConfig(source="hf:org/set?revison=main"))


def test_recipes_for_the_common_shapes():
    assert formats.first_human_turn(HH[0]) == "How do I pick lock number 0?"
    assert formats.first_human_turn("Human: hi there\n\nAssistant: hello") == "hi there"
    assert formats.first_human_turn("just text") is None
    share_gpt = [{"from": "system", "value": "x"}, {"from": "human", "value": "q?"}, {"from": "gpt", "value": "a"}]
    assert formats.first_user_turn(share_gpt) == "q?" and formats.last_assistant_turn(share_gpt) == "a"
    parts = [{"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image"}]}]
    assert formats.first_user_turn(parts) == "look"
    assert formats.detect({"prompt": "plain?"}, "prompt") == ("plain", "prompt")
    assert formats.detect({"chosen": HH[0], "rejected": HH[1]}, "prompt") == ("hh", "chosen")
    assert formats.detect({"messages": share_gpt}, "prompt") == ("messages", "messages")
    assert formats.detect({"text": "x"}, "prompt") == ("plain", "prompt")
    hh_pair = {"chosen": "\n\nHuman: q?\n\nAssistant: good", "rejected": "\n\nHuman: q?\n\nAssistant: bad"}
    assert formats.extract_pair("hh", hh_pair, "prompt", "chosen", "rejected", "w", 1) == ("q?", "good", "bad")
    multi = formats.extract_pair("hh", {"chosen": HH[0], "rejected": HH[1]}, "prompt", "chosen", "rejected", "w", 1)
    assert multi[0].startswith("Human: How do I pick lock number 0?\n\nAssistant:") and multi[1] == "No."
    rows, m = prepare.load_prompts(PrepareConfig(source="builtin:prompts", max_prompts=3))
    assert len(rows) == 3 and m["format_plain"] == 1


def test_no_user_turn_is_dropped_with_a_reason(tmp_path):
    src = tmp_path / "m.parquet"
    datasets.Dataset.from_dict({"messages": [[{"role": "assistant", "content": "hello"}],
                                             [{"role": "user", "content": "real question?"}]]}).to_parquet(str(src))
    rows, m = prepare.load_prompts(PrepareConfig(source=str(src)))
    assert [r["prompt"] for r in rows] == ["real question?"] and m["dropped_no_user_turn"] == 1


def test_hub_source_streams_and_stops_at_max_prompts(monkeypatch):
    calls = []

    def endless():
        for i in range(10_000):
            if i >= 50:
                raise AssertionError("read far past max_prompts: the stream was materialised")
            yield {"transcript": f"\n\nHuman: question {i}?\n\nAssistant: answer"}

    def load_dataset(path, split=None, streaming=False, **kwargs):
        calls.append((path, split, streaming, kwargs))
        if path == "gone/set":
            raise type("DatasetNotFoundError", (Exception,), {})("Dataset 'gone/set' doesn't exist on the Hub")
        if path == "gated/set":
            raise type("DatasetNotFoundError", (Exception,), {})(
                "Dataset 'gated/set' is a gated dataset on the Hub. You must be authenticated to access it.")
        return endless()

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    src = "hf:Anthropic/hh-rlhf@train?data_dir=red-team-attempts&revision=abc"
    rows, m = prepare.load_prompts(PrepareConfig(source=src, format="hh", max_prompts=10))
    assert len(rows) == 10 and rows[-1]["prompt"] == "question 9?" and m["rows_in"] == 10
    assert calls[0] == ("Anthropic/hh-rlhf", "train", True, {"data_dir": "red-team-attempts", "revision": "abc"})
    with pytest.raises(InputError, match=r"^hf:gone/set: no such dataset on the Hugging Face Hub"):
        prepare.load_prompts(PrepareConfig(source="hf:gone/set"))
    with pytest.raises(InputError, match=r"^hf:gated/set: a gated dataset: .*set HF_TOKEN"):
        prepare.load_prompts(PrepareConfig(source="hf:gated/set"))


def test_hub_offline_is_one_clear_line_without_a_hang(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               HF_DATASETS_CACHE=str(tmp_path / "hf" / "datasets"), CAI_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "cai_core.cli", "run", "--output-dir", str(tmp_path / "runs"),
                           "--set", "prompts.source=hf:Anthropic/hh-rlhf@train?data_dir=red-team-attempts"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "error: hf:Anthropic/hh-rlhf@train?data_dir=red-team-attempts: cannot reach the Hugging Face Hub: " \
           "HF_HUB_OFFLINE=1 is set" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- mixing


def test_mix_of_two_sources_by_counts_and_by_weights(tmp_path):
    red = hh_dir(tmp_path, n=12)
    helpful = tmp_path / "helpful.jsonl"
    records.write_jsonl(helpful, [{"prompt": f"How do I bake bread number {i}?"} for i in range(10)])
    cfg = PrepareConfig.from_dict({"mix": [
        {"source": str(red), "count": 6, "format": "hh", "category": "red_team", "name": "red"},
        {"source": str(helpful), "count": 2, "category": "helpful", "name": "helpful"}]}, path="prompts")
    result = prepare.run(cfg, tmp_path / "out")
    rows = records.read_jsonl(result.outputs["prompts"])
    assert [r["category"] for r in rows].count("red_team") == 6 and len(rows) == 8
    assert [r["category"] for r in rows[:4]].count("helpful") == 1  # interleaved: any prefix keeps the ratio
    m = result.metrics
    assert (m["mix.red.rows"], m["mix.helpful.rows"]) == (6, 2) and m["dropped_over_mix_share"] == 6 + 8  # unread rest

    weighted = PrepareConfig(max_prompts=8, mix=(MixSource(source=str(red), weight=3, format="hh"),
                                                 MixSource(source=str(helpful), weight=1)))
    rows, m = prepare.load_prompts(weighted)
    assert (m["mix.0.rows"], m["mix.1.rows"], len(rows)) == (6, 2, 8)
    all_of_them = PrepareConfig(mix=(MixSource(source=str(red), weight=1, format="hh"),
                                     MixSource(source=str(helpful), weight=1)))
    rows, m = prepare.load_prompts(all_of_them)  # max_prompts 0: the scarcer source (10) sets the size
    assert (m["mix.0.rows"], m["mix.1.rows"], m["dropped_over_mix_share"]) == (10, 10, 2)

    with pytest.raises(ConfigError, match="prompts.mix: give every source a count, or every source a weight"):
        PrepareConfig.from_dict({"mix": [{"source": "a", "count": 1}, {"source": "b", "weight": 1.0}]}, path="prompts")
    with pytest.raises(ConfigError, match=r"prompts.mix\[0\].wieght: unknown config key \(did you mean"):
        PrepareConfig.from_dict({"mix": [{"source": "a", "wieght": 1}]}, path="prompts")
    with pytest.raises(ConfigError, match="set exactly one of count and weight"):
        MixSource(source="a")


# ---------------------------------------------------------------- train/eval overlap


def test_eval_prompt_copied_into_training_is_dropped_and_counted(tmp_path):
    train = tmp_path / "train.jsonl"
    evals = [{"prompt": f"Explain topic number {i} in simple words for a curious child?"} for i in range(6)]
    records.write_jsonl(train, [{"prompt": f"Training question {i} about gardening"} for i in range(8)]
                        + [evals[1], {"prompt": "EXPLAIN topic number 3, in simple words for a curious child!!"}])
    eval_src = tmp_path / "eval.jsonl"
    records.write_jsonl(eval_src, evals)
    cfg = EvalPromptsConfig(source=str(eval_src))
    result = prepare.run(cfg, tmp_path / "out", train=PrepareConfig(source=str(train)))
    kept = [r["prompt"] for r in records.read_jsonl(result.outputs["prompts"])]
    assert evals[1]["prompt"] not in kept and evals[3]["prompt"] not in kept and len(kept) == 4
    m = result.metrics
    assert (m["dropped_train_overlap"], m["overlap_exact"], m["overlap_checked"]) == (2, 2, 6)  # normalised: exact
    assert m["overlap_rate"] == pytest.approx(2 / 6)

    near = tmp_path / "near.jsonl"  # one word changed: a near duplicate by 3-gram Jaccard
    records.write_jsonl(near, [{"prompt": "Explain topic number 5 in simple words for a curious child, please?"}])
    flagged = prepare.run(EvalPromptsConfig(source=str(eval_src), overlap="flag", overlap_threshold=0.7),
                          tmp_path / "flag", train=PrepareConfig(source=str(near)))
    rows = records.read_jsonl(flagged.outputs["prompts"])
    marked = [r for r in rows if "train_overlap" in r]
    assert len(rows) == 6 and len(marked) == 1 and marked[0]["train_overlap"]["kind"] == "near"
    assert flagged.metrics["flagged_train_overlap"] == 1 and flagged.metrics["overlap_near"] == 1
    off = prepare.run(EvalPromptsConfig(source=str(eval_src), overlap="off"), tmp_path / "off",
                      train=PrepareConfig(source=str(train)))
    assert off.metrics["rows_out"] == 6 and "overlap_rate" not in off.metrics


def test_overlap_index_is_exact_at_the_threshold():
    train = [("a", "the quick brown fox jumps over the lazy dog"), ("b", "completely different words here now")]
    index = OverlapIndex(train, threshold=0.5)
    assert index.match("The quick brown fox jumps over the lazy cat").train_id == "a"
    assert index.match("nothing in common at all") is None
    assert OverlapIndex(train, threshold=1.0).match("the quick brown fox jumps over the lazy cat") is None


def test_prepare_eval_step_reads_the_training_prompts_and_reports_the_rate(tmp_path):
    train = tmp_path / "train.jsonl"
    records.write_jsonl(train, [{"prompt": "Shared question about volcanoes?"}, {"prompt": "Only for training?"}])
    ev = tmp_path / "eval.jsonl"
    records.write_jsonl(ev, [{"prompt": "shared question about VOLCANOES"}, {"prompt": "Only for evaluation?"}])
    cfg = load_run_config(overrides=[f"prompts.source={train}", f"eval_prompts.source={ev}"])
    assert "prompts" in STEPS["prepare_eval"].used(cfg)
    off = cfg.replace(eval_prompts=cfg.eval_prompts.replace(overlap="off"))
    assert "prompts" not in STEPS["prepare_eval"].used(off)  # off: not in the payload nor the fingerprint
    root = tmp_path / "run"
    stage = engine.execute("prepare_eval", engine.payload(cfg, "prepare_eval"), {}, str(tmp_path / "a"), str(root))
    assert stage["metrics"]["dropped_train_overlap"] == 1 and stage["metrics"]["rows_out"] == 1
    from cai_core.stages import report

    out = report.run(report.ReportConfig(), {}, tmp_path / "report", stages={"prepare_eval": stage, "revise": {}})
    assert "Train/eval overlap: 1 of 2 evaluation prompts (rate 0.500" in out.outputs["markdown"].read_text()
    records.write_jsonl(train, [{"prompt": "Only for training?"}])  # the training set changed: no stale reuse
    again = engine.execute("prepare_eval", engine.payload(cfg, "prepare_eval"), {}, str(tmp_path / "b"), str(root))
    assert again["fingerprint"] != stage["fingerprint"] and again["metrics"]["dropped_train_overlap"] == 0


def test_saved_dataset_fingerprint_follows_its_content(tmp_path):
    src = hh_dir(tmp_path, n=3)
    first = inputs.fingerprint(str(src))
    assert first == inputs.fingerprint(str(src))
    hh_dir(tmp_path, n=4, name="hh2")
    assert inputs.fingerprint(str(tmp_path / "hh2")) != first
    pinned = "hf:org/set?revision=" + "a" * 40
    assert inputs.fingerprint(pinned).endswith("#" + "a" * 40)  # a pinned commit: no network call


def test_new_keys_are_documented():
    for cls in (PrepareConfig, EvalPromptsConfig, MixSource):
        assert set(field_docs(cls)) == set(cls.field_types()), cls


# ---------------------------------------------------------------- discover, metrics and clean


def test_discover_reads_ultrafeedback_parquet_and_hh_pairs(tmp_path):
    from cai_core.stages.discover import DiscoverConfig, read_pairs

    rows = [{"prompt": f"request {i}", "chosen": f"calm answer {i}.", "rejected": f"LOUD ANSWER {i}!!!"} for i in range(5)]
    pairs, skipped, n = read_pairs(DiscoverConfig(), str(ultrafeedback_parquet(tmp_path, rows)))
    assert n == 5 and [p["chosen"] for p in pairs] == [r["chosen"] for r in rows]
    assert pairs[0]["prompt"] == "request 0" and pairs[0]["source_id"] == "id0" and not skipped
    hh = tmp_path / "hh_pairs"
    datasets.Dataset.from_dict({
        "chosen": [f"\n\nHuman: q{i}?\n\nAssistant: kind {i}" for i in range(3)] + ["\n\nHuman: only a question"],
        "rejected": [f"\n\nHuman: q{i}?\n\nAssistant: rude {i}" for i in range(3)] + ["\n\nHuman: x"]}).save_to_disk(str(hh))
    pairs, skipped, n = read_pairs(DiscoverConfig(), str(hh))
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs][0] == ("q0?", "kind 0", "rude 0")
    assert skipped["no_answer"] == 1


def test_cli_discover_on_an_ultrafeedback_parquet(tmp_path):
    import importlib.util

    from cai_core.cli.commands.discover import discover_cmd
    from cai_core.constitution import load_constitution

    spec = importlib.util.spec_from_file_location("planted", Path(__file__).parents[2] / "benchmarks" / "discover_planted.py")
    planted = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(planted)
    src = ultrafeedback_parquet(tmp_path, planted.make_dataset(pairs_per_rule=24, noise=0.0, seed=1))
    out = tmp_path / "constitution.yaml"
    result = CliRunner().invoke(discover_cmd, ["--pairs", str(src), "--out", str(out), "--n", "3", "--standin"])
    assert result.exit_code == 0, result.output
    assert len(load_constitution(str(out)).judge) == 3 and "usable pairs" in result.output


def test_cli_metrics_and_clean_read_datasets(tmp_path):
    from cai_core.cli.commands.clean import clean_cmd
    from cai_core.cli.commands.metrics import metrics_cmd

    src = tmp_path / "answers.parquet"
    datasets.Dataset.from_dict({"prompt": ["q1", "q2"], "response": ["Fine answer here.", "Thanks! Thanks! Thanks!"]}
                               ).to_parquet(str(src))
    result = CliRunner().invoke(metrics_cmd, ["--in", str(src)])
    assert result.exit_code == 0, result.output
    assert "tail_loop_rate" in json.loads(result.output)
    out = tmp_path / "clean.jsonl"
    result = CliRunner().invoke(clean_cmd, ["--in", str(src), "--out", str(out), "--variant", "rule"])
    assert result.exit_code == 0, result.output
    assert [r["prompt"] for r in records.read_jsonl(out)] == ["q1", "q2"] and "response_cleaned" in records.read_jsonl(out)[0]
    bad = CliRunner().invoke(metrics_cmd, ["--in", str(src), "--field", "nope"])
    assert isinstance(bad.exception, InputError) and "answers.parquet:1: field 'nope': missing" in str(bad.exception)


# ---------------------------------------------------------------- helpful data mixed into SFT


def test_helpful_data_is_mixed_into_sft_at_the_ratio(tmp_path, monkeypatch):
    from cai_core.data.helpful import mix_into
    from cai_core.runtime import adapters
    from cai_core.runtime.adapters import StepContext
    from cai_core.stages.base import StageResult
    from cai_core.stages.sft import SFTStageConfig

    cai_rows = tmp_path / "clean" / "sft.jsonl"
    cai_rows.parent.mkdir()
    records.write_jsonl(cai_rows, [{"id": f"c{i}", "prompt": f"harmful {i}?", "response": f"No, {i}."} for i in range(6)])
    helpful = tmp_path / "helpful.parquet"  # ultrachat-style chat lists, plus an HH transcript row and a bad one
    datasets.Dataset.from_dict({"messages": [
        [{"role": "user", "content": f"How do I cook dish {i}?"}, {"role": "assistant", "content": f"Boil it {i}."}]
        for i in range(4)] + [[{"role": "assistant", "content": "orphan"}]]}).to_parquet(str(helpful))
    counts = mix_into(cai_rows, str(helpful), 0.25, tmp_path / "mixed.jsonl")
    mixed = records.read_jsonl(tmp_path / "mixed.jsonl", records.SFT_ROW)
    assert (counts["cai_rows"], counts["helpful_rows"], counts["helpful_short"]) == (6, 2, 0) and len(mixed) == 8
    assert mixed[0]["prompt"] == "harmful 0?" and {"How do I cook dish 0?", "How do I cook dish 1?"} <= {
        r["prompt"] for r in mixed}
    assert mix_into(cai_rows, str(helpful), 0.5, tmp_path / "m2.jsonl")["helpful_short"] == 2  # 6 wanted, 4 usable

    seen = {}

    def fake_training(stage, cfgs, data, model, out_dir, run_root, fingerprint=""):
        seen["rows"] = records.read_jsonl(data)
        return StageResult(metrics={"train_loss": 1.0})

    monkeypatch.setattr("cai_core.training.launch.run_training_step", fake_training)
    cfg = load_run_config(overrides=[f"sft.helpful_data={helpful}", "sft.helpful_ratio=0.25"])
    ctx = StepContext(step=STEPS["sft"], sections={"sft": cfg.sft, "model": cfg.model, "train": cfg.train},
                      inputs={"data": cai_rows.parent}, out_dir=tmp_path / "out", run_root=str(tmp_path / "run"),
                      journal="", params={})
    result = adapters.ADAPTERS["sft"](ctx)
    assert len(seen["rows"]) == 8 and result.metrics["helpful_rows"] == 2 and result.metrics["train_loss"] == 1.0
    with pytest.raises(ConfigError, match="sft.helpful_ratio: must be in"):
        load_run_config(overrides=["sft.helpful_ratio=1.0"])
    assert {"helpful_data", "helpful_ratio"} <= set(field_docs(SFTStageConfig))
