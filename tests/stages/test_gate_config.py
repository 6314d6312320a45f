"""The gate's configuration and its run over the models: the documented defaults are the ones a run uses, the
config accepts exactly its documented ranges, and a run probes every model it is given, whichever are missing."""
from __future__ import annotations

import pytest

from cai_core import records
from cai_core.errors import ConfigError
from cai_core.stages import gate
from cai_core.stages.gate import CHECKS, GateConfig, check, probe_metrics

HEALTHY = lambda p: f"Here is a short answer about {p}. It covers the main point and stops."  # noqa: E731
LOOPING = lambda p: "I hope this helps! I hope this helps! I hope this helps! I hope this helps! I hope this helps!"  # noqa: E731


class Recording:
    """An in-process model that records what the gate asks of it."""

    remote = False

    def __init__(self, reply):
        self.reply, self.name, self.calls, self.closed = reply, "m", [], False

    def chat(self, conversations, sampling):
        self.calls.append((conversations, sampling))
        return [self.reply(c[-1]["content"]) for c in conversations]

    def close(self):
        self.closed = True


def _prompts(tmp_path, n):
    path = tmp_path / "prompts.jsonl"
    records.write_jsonl(path, [{"id": f"e{i}", "prompt": f"question {i}", "category": "helpful"} for i in range(n)])
    return path


def _run(tmp_path, cfg, replies, given=None):
    """gate.run with one Recording model per name of `replies`; `given`: the names passed to the run."""
    loaded = {}

    def load(path):
        loaded[path] = Recording(replies[path])
        return loaded[path]

    models = {name: name for name in (given or replies)}
    result = gate.run(cfg, _prompts(tmp_path, 20), models, tmp_path / "out", load_model=load)
    return result, loaded


def test_the_documented_defaults():
    cfg = GateConfig()
    assert (cfg.mode, cfg.models, cfg.candidate) == ("fail", ("base", "sft", "dpo"), "dpo")
    assert (cfg.probes, cfg.max_new_tokens, cfg.batch_size, cfg.gallery) == (16, 128, 16, 4)
    assert {name: getattr(cfg, name) for _, name, _ in CHECKS} == {
        "max_rep_2": 0.5, "max_rep_3": 0.4, "max_rep_4": 0.35, "max_tail_loop_rate": 0.5, "min_distinct_2": 0.1,
        "max_empty_rate": 0.25}
    assert cfg.min_distinct_2_vs_base == 0.5


def test_a_default_run_probes_16_prompts_greedily_in_batches_of_16_and_keeps_4_loops(tmp_path):
    result, loaded = _run(tmp_path, GateConfig(), {"base": HEALTHY, "sft": HEALTHY, "dpo": LOOPING})
    assert result.details["probes"] == 16 and result.metrics["probes"] == 16.0
    for name, model in loaded.items():
        assert [len(conversations) for conversations, _ in model.calls] == [16], name
        sampling = [s for _, batch in model.calls for s in batch]
        assert {(s.temperature, s.max_new_tokens) for s in sampling} == {(0.0, 128)}, name
        assert model.closed
    assert len(result.details["gallery"]) == 4 and {g["model"] for g in result.details["gallery"]} == {"dpo"}


def test_the_probes_are_sent_in_batches_of_batch_size(tmp_path):
    _, loaded = _run(tmp_path, GateConfig(probes=20, batch_size=8), {"dpo": HEALTHY}, )
    assert [len(c) for c, _ in loaded["dpo"].calls] == [8, 8, 4]


def test_every_default_check_is_on():
    """With the shipped thresholds each check can fail a model: none is off by default."""
    cfg = GateConfig()
    for metric, name, kind in CHECKS:
        worst = {"rep_2": 0.0, "rep_3": 0.0, "rep_4": 0.0, "tail_loop_rate": 0.0, "distinct_2": 0.9,
                 "empty_rate": 0.0}
        worst[metric] = 0.0 if kind == "min" else 0.99
        assert [r.split()[0] for r in check(cfg, worst)] == [metric], name
    assert check(cfg, {"distinct_2": 0.3}, {"distinct_2": 0.9})  # under half the base model's variety


def test_probe_files_and_the_gallery_name_the_gate_set(tmp_path):
    result, _ = _run(tmp_path, GateConfig(probes=6), {"base": HEALTHY, "sft": HEALTHY, "dpo": LOOPING})
    for name in ("base", "sft", "dpo"):
        rows = records.read_jsonl(tmp_path / "out" / f"probes_{name}.jsonl")
        assert len(rows) == 6 and {r["set"] for r in rows} == {"gate"} and {r["model"] for r in rows} == {name}
    assert result.details["gallery"] and {g["set"] for g in result.details["gallery"]} == {"gate"}


@pytest.mark.parametrize("given", [("sft", "dpo"), ("base", "dpo"), ("dpo",)])
def test_a_model_that_was_not_given_is_skipped_and_the_others_are_still_probed(tmp_path, given):
    replies = {"base": HEALTHY, "sft": HEALTHY, "dpo": LOOPING}
    result, loaded = _run(tmp_path, GateConfig(probes=4), replies, given=given)
    assert sorted(loaded) == sorted(given)
    assert sorted(result.details["per_model"]) == sorted(given)
    assert result.details["verdict"] == "fail" and sorted(k for k in result.metrics if k.endswith(".pass")) == \
        sorted(f"{m}.pass" for m in given)


def test_probe_metrics_empty_rate():
    assert probe_metrics(["", "An answer.", "  ", "Another answer here."])["empty_rate"] == 0.5
    assert probe_metrics(["An answer.", "", "Two.", "Three."])["empty_rate"] == 0.25
    assert probe_metrics([])["empty_rate"] == 0.0


@pytest.mark.parametrize("field,ok,bad", [
    ("probes", 1, 0), ("max_new_tokens", 1, 0), ("batch_size", 1, 0), ("gallery", 0, -1),
    ("min_distinct_2", 1.0, 1.01), ("max_rep_3", 1.0, 1.01), ("min_distinct_2_vs_base", 1.0, 1.01),
    ("min_distinct_2_vs_base", 0.0, -0.01), ("min_distinct_2", 0.0, -0.01)])
def test_the_config_accepts_exactly_its_documented_range(field, ok, bad):
    assert getattr(GateConfig(**{field: ok}), field) == ok
    with pytest.raises(ConfigError, match=field):
        GateConfig(**{field: bad})


@pytest.mark.parametrize("field,values", [("probes", (2, 16, 500)), ("max_new_tokens", (2, 128)),
                                          ("batch_size", (2, 64)), ("gallery", (1, 4, 10))])
def test_larger_values_are_accepted(field, values):
    for value in values:
        assert getattr(GateConfig(**{field: value}), field) == value


def test_each_model_at_most_once():
    with pytest.raises(ConfigError, match="models"):
        GateConfig(models=("base", "dpo", "dpo"))
    with pytest.raises(ConfigError, match="models"):
        GateConfig(models=("sft", "sft"), candidate="sft")
    assert GateConfig(models=("sft", "dpo")).models == ("sft", "dpo")
