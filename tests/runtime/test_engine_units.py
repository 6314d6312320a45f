"""runtime.engine's parts one at a time: input fingerprints, source fingerprints, reuse of a published output,
the `_stage.json` record (timing, outputs), params and KFP metrics."""
from __future__ import annotations

import json

import pytest

import cai_core
from cai_core import records
from cai_core.config.run import RunConfig
from cai_core.errors import StageError
from cai_core.runtime import adapters, artifacts, engine
from cai_core.runtime.engine import execute, input_fingerprint, parse_payload, payload
from cai_core.stages.base import StageResult


# --- input_fingerprint ---------------------------------------------------------------------------------------

def test_an_input_with_a_stage_file_is_known_by_its_recorded_fingerprint(tmp_path):
    records.write_json(tmp_path / artifacts.STAGE_FILE, {"fingerprint": "abc123"})
    (tmp_path / "rows.jsonl").write_text("anything")
    assert input_fingerprint(tmp_path) == "abc123"


def test_a_directory_fingerprint_covers_every_file_path_and_content(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "x").mkdir(parents=True)
    (b / "y").mkdir(parents=True)
    (a / "x" / "f.txt").write_text("same")
    (b / "y" / "f.txt").write_text("same")  # same name and bytes, another sub-directory
    fa = input_fingerprint(a)
    assert len(fa) == 16 and all(c in "0123456789abcdef" for c in fa)
    assert fa != input_fingerprint(b)
    assert input_fingerprint(a) == fa  # deterministic
    (a / "x" / "f.txt").write_text("other")
    assert input_fingerprint(a) != fa


def test_a_single_file_input_is_fingerprinted_by_its_name_and_bytes(tmp_path):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    one.write_text("rows")
    two.write_text("rows")
    assert input_fingerprint(one) != input_fingerprint(two)  # the file name counts
    (tmp_path / "d").mkdir()
    copy = tmp_path / "d" / "one.jsonl"
    copy.write_text("rows")
    assert input_fingerprint(copy) == input_fingerprint(one)  # not the folder it sits in
    assert len(input_fingerprint(one)) == 16


# --- _source_fingerprint -------------------------------------------------------------------------------------

@pytest.fixture
def marked(monkeypatch):
    """Source fingerprints that name what they were asked about."""
    from cai_core.data import inputs
    from cai_core.stages import prepare
    monkeypatch.setattr(inputs, "fingerprint", lambda source, *a: f"data:{source}")
    monkeypatch.setattr(prepare, "source_fingerprints", lambda cfg: [f"src:{s}" for s in cfg.sources()])


def _sections(step: str, cfg: RunConfig) -> dict:
    return parse_payload(step, payload(cfg, step))


def test_discover_is_fingerprinted_by_its_source_and_sft_by_its_helpful_data(marked):
    base = RunConfig()
    cfg = base.replace(discover=base.discover.replace(source="disc.jsonl"),
                       sft=base.sft.replace(helpful_data="helpful.jsonl"))
    assert engine._source_fingerprint("discover", _sections("discover", cfg)) == "data:disc.jsonl"
    assert engine._source_fingerprint("sft", _sections("sft", cfg)) == "data:helpful.jsonl"


def test_prepare_steps_join_their_sources_and_eval_adds_the_training_prompts_when_checking_overlap(marked):
    base = RunConfig()
    cfg = base.replace(prompts=base.prompts.replace(source="train.jsonl"),
                       eval_prompts=base.eval_prompts.replace(source="eval.jsonl", overlap="drop"))
    assert engine._source_fingerprint("prepare_prompts", _sections("prepare_prompts", cfg)) == "src:train.jsonl"
    assert engine._source_fingerprint("prepare_eval", _sections("prepare_eval", cfg)) == \
        "src:eval.jsonl|src:train.jsonl"
    off = cfg.replace(eval_prompts=cfg.eval_prompts.replace(overlap="off"))
    assert engine._source_fingerprint("prepare_eval", _sections("prepare_eval", off)) == "src:eval.jsonl"


def test_steps_that_read_no_source_have_an_empty_source_fingerprint(marked):
    cfg = RunConfig()
    for step in ("revise", "clean_revisions", "judge", "dpo", "report"):
        assert engine._source_fingerprint(step, _sections(step, cfg)) == "", step


# --- execute: the stage record, reuse, params, KFP metrics -----------------------------------------------------

def _fake_revise(ctx) -> StageResult:
    rows = records.read_jsonl(ctx.inputs["prompts"] / artifacts.PROMPTS)
    out = ctx.out_dir / artifacts.REVISIONS
    records.write_jsonl(out, [{"id": r["id"], "final": f"{r['prompt']}!{ctx.params.get('tag', '')}"} for r in rows])
    ran.append(dict(ctx.params))
    metrics = {f"m{n}": float(n) for n in range(3)}
    metrics["bad"] = float("nan")
    return StageResult(outputs={"revisions": out}, metrics=metrics, details={"note": "hi"})


ran: list[dict] = []


@pytest.fixture
def revise(tmp_path, monkeypatch):
    ran.clear()
    monkeypatch.setitem(adapters.ADAPTERS, "revise", _fake_revise)
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    records.write_jsonl(prompts / artifacts.PROMPTS, [{"id": "1", "prompt": "p"}])
    cfg = RunConfig()
    counter = iter(range(100))

    def run(params=None, **kw):
        out = tmp_path / f"out{next(counter)}"
        args = {} if params is None else {"params": params}
        return execute("revise", payload(cfg, "revise"), {"prompts": str(prompts)}, str(out),
                       str(tmp_path / "run"), **args, **kw), out
    return run


class _Clock:
    def __init__(self, *values):
        self.values = list(values)

    def time(self):
        return self.values.pop(0)


def test_the_stage_record_holds_the_fingerprint_finite_metrics_relative_outputs_and_timing(revise, monkeypatch,
                                                                                          tmp_path):
    monkeypatch.setattr(engine, "time", _Clock(1000.0, 1002.5))
    stage, out = revise()
    assert stage["step"] == "revise" and stage["cai_version"] == cai_core.__version__
    assert stage["started"] == 1000.0 and stage["seconds"] == 2.5
    assert stage["metrics"] == {"m0": 0.0, "m1": 1.0, "m2": 2.0}  # NaN left out
    assert stage["details"] == {"note": "hi"} and stage["outputs"] == {"revisions": artifacts.REVISIONS}
    assert json.loads((out / artifacts.STAGE_FILE).read_text()) == stage
    published = tmp_path / "run" / "revise"
    assert json.loads((published / artifacts.STAGE_FILE).read_text()) == stage
    assert (published / artifacts.REVISIONS).read_text() == (out / artifacts.REVISIONS).read_text()


def test_no_params_and_empty_params_are_the_same_step_and_other_params_are_not(revise):
    first, _ = revise()
    again, _ = revise(params={})
    assert again["fingerprint"] == first["fingerprint"] and len(ran) == 1
    tagged, out = revise(params={"tag": "t"})
    assert tagged["fingerprint"] != first["fingerprint"] and ran == [{}, {"tag": "t"}]
    assert records.read_jsonl(out / artifacts.REVISIONS)[0]["final"] == "p!t"


class _Metrics:
    def __init__(self):
        self.logged = []

    def log_metric(self, key, value):
        self.logged.append((key, value))


def test_kfp_metrics_get_the_finite_metrics_sorted_when_run_and_when_reused(revise):
    fresh, reused = _Metrics(), _Metrics()
    revise(kfp_metrics=fresh)
    revise(kfp_metrics=reused)
    assert len(ran) == 1
    assert fresh.logged == reused.logged == [("m0", 0.0), ("m1", 1.0), ("m2", 2.0)]
    engine._log_kfp(None, {"a": 1.0})  # no artifact: nothing to do, no error


def test_a_published_output_is_reused_only_when_complete_readable_and_of_the_same_fingerprint(revise, tmp_path):
    first, _ = revise()
    published = tmp_path / "run" / "revise"
    stage_file = published / artifacts.STAGE_FILE
    reused, out = revise()
    assert len(ran) == 1 and reused == first and (out / artifacts.REVISIONS).exists()

    record = json.loads(stage_file.read_text())
    records.write_json(stage_file, {**record, "fingerprint": "stale"})
    assert engine._reuse(str(published), first["fingerprint"], tmp_path / "x") is None
    revise()
    assert len(ran) == 2  # a stale fingerprint reruns

    (published / artifacts.MANIFEST_NAME).unlink()
    assert engine._reuse(str(published), first["fingerprint"], tmp_path / "y") is None
    assert not (tmp_path / "y").exists()
    revise()
    assert len(ran) == 3  # an incomplete output (no manifest) reruns


def test_a_published_output_without_a_readable_stage_file_is_not_reused(revise, tmp_path):
    first, _ = revise()
    published = tmp_path / "run" / "revise"
    (published / artifacts.STAGE_FILE).unlink()
    assert (published / artifacts.MANIFEST_NAME).exists()
    assert engine._reuse(str(published), first["fingerprint"], tmp_path / "z") is None
    again, _ = revise()
    assert len(ran) == 2 and again["fingerprint"] == first["fingerprint"]


def test_unknown_steps_and_missing_inputs_fail_clearly(tmp_path, capfd):
    with pytest.raises(StageError, match="unknown step 'nope'"):
        execute("nope", "{}", {}, str(tmp_path / "o"), str(tmp_path / "run"))
    assert "ERROR in nope: unknown step 'nope'" in capfd.readouterr().err
    with pytest.raises(StageError, match=r"compare: unknown input artifact 'x' \(the step takes none\)"):
        execute("compare", payload(RunConfig(), "compare"), {"x": str(tmp_path)}, str(tmp_path / "o"),
                str(tmp_path / "run"))
    with pytest.raises(StageError, match=r"judge: no input artifact 'pairs' \(the step takes pairs, constitution\)"):
        engine.check_inputs("judge", {})
    engine.check_inputs("judge", {"pairs": tmp_path, "constitution": tmp_path})  # optional input accepted


def test_the_payload_leaves_out_dag_fields_and_parsing_fills_defaults():
    cfg = RunConfig()
    assert "iterations" not in json.loads(payload(cfg, "dpo"))["dpo"]
    sections = parse_payload("dpo", "{}")
    assert set(sections) == {"dpo", "train"} and sections["dpo"] == cfg.dpo


def test_a_published_model_reference_is_reused_only_while_its_weights_are_complete(tmp_path, capfd):
    """A training step's output that refers to weights elsewhere (model.json) is reused only while the manifest
    covering those weights exists; otherwise the step trains again (and says why)."""
    from cai_core import storage
    from cai_core.runtime import model_ref

    weights = tmp_path / "_train" / "sft" / "fp" / "final"
    (weights / artifacts.MODEL_DIR).mkdir(parents=True)
    (weights / artifacts.MODEL_DIR / "config.json").write_text("{}")
    storage.upload_dir(str(weights), str(tmp_path / "store" / "final"))  # local storage: a manifest written last
    final = tmp_path / "store" / "final"
    out = tmp_path / "out"
    out.mkdir()
    model_ref.write(out, str(final / artifacts.MODEL_DIR), {"config.json": {"size": 2}},
                    str(final / artifacts.MANIFEST_NAME))
    records.write_json(out / artifacts.STAGE_FILE, {"step": "sft", "fingerprint": "fp1",
                                                    "outputs": {"model": artifacts.MODEL_REF}, "metrics": {}})
    published = tmp_path / "run" / "sft"
    storage.copy_dir(str(out), str(published))

    reused = engine._reuse(str(published), "fp1", tmp_path / "a")
    assert reused is not None and model_ref.location(tmp_path / "a") == str(final / artifacts.MODEL_DIR)
    (final / artifacts.MANIFEST_NAME).unlink()  # the weights are no longer complete
    assert engine._reuse(str(published), "fp1", tmp_path / "b") is None
    assert not (tmp_path / "b").exists()  # nothing half-copied into the output
    assert "the weights its model.json names are gone" in capfd.readouterr().err
