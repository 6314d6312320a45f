"""runtime.execute: the code every component calls (fingerprinted reuse, teacher wiring, journal)."""
from __future__ import annotations

import json

import pytest

from cai_core import records
from cai_core.config.run import RunConfig
from cai_core.errors import StageError
from cai_core.runtime.adapters import ADAPTERS
from cai_core.runtime.engine import execute, payload
from cai_core.runtime.steps import GENERATION_STEPS, STEP_NAMES, STEPS, TRAINING_STEPS
from cai_core.testing.sim_openai import SimServer
from tests.cleaning.test_llm_clean import LOOPS, _sim_reply, good_cleaner


@pytest.fixture
def revisions(tmp_path):
    art = tmp_path / "revise"
    art.mkdir()
    rows = [{"id": str(n), "prompt": p, "final": t} for n, (p, t, _) in enumerate(LOOPS)]
    rows.append({"id": "x", "prompt": "q", "final": "Hi. Hi. Hi. :)"})
    records.write_jsonl(art / "revisions.jsonl", rows)
    return art


def _clean(cfg: RunConfig, revisions, tmp_path, out: str) -> dict:
    return execute("clean_revisions", payload(cfg, "clean_revisions"), {"rows": str(revisions)},
                   str(tmp_path / out), str(tmp_path / "run"))


def test_rule_clean_step_is_reused_when_nothing_changed(revisions, tmp_path, capfd):
    cfg = RunConfig().replace(clean=RunConfig().clean.replace(variant="rule"))
    first = _clean(cfg, revisions, tmp_path, "a")
    second = _clean(cfg, revisions, tmp_path, "b")
    assert first["fingerprint"] == second["fingerprint"] and "clean_revisions: reused" in capfd.readouterr().err
    assert (tmp_path / "b" / "sft.jsonl").read_text() == (tmp_path / "a" / "sft.jsonl").read_text()
    other = _clean(cfg.replace(clean=cfg.clean.replace(variant="none")), revisions, tmp_path, "c")
    assert other["fingerprint"] != first["fingerprint"] and other["metrics"]["changed"] == 0


def test_hybrid_clean_step_asks_the_teacher_and_journals(revisions, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with SimServer(reply_fn=_sim_reply(good_cleaner)) as sim:
        base = RunConfig()
        cfg = base.replace(clean=base.clean.replace(variant="hybrid"),
                           teacher=base.teacher.replace(base_url=sim.base_url, model="sim-model"))
        stage = _clean(cfg, revisions, tmp_path, "a")
        sent = sim.stats()["requests"]
    assert stage["metrics"]["llm_sent"] == 2 and sent >= 2
    journal = tmp_path / "run" / "journal" / "clean_revisions"
    assert journal.is_dir() and any(journal.rglob("*"))
    sft = {r["id"]: r["response"] for r in records.read_jsonl(tmp_path / "a" / "sft.jsonl")}
    assert [sft[str(n)] for n in range(len(LOOPS))] == [e for _, _, e in LOOPS]
    assert json.loads((tmp_path / "run" / "clean_revisions" / "_stage.json").read_text())["metrics"]["llm_sent"] == 2


def test_the_teacher_is_part_of_a_clean_step_only_when_the_variant_calls_it():
    base = RunConfig()
    other_teacher = base.teacher.replace(model="another-teacher")
    for variant, depends in (("none", False), ("rule", False), ("llm", True), ("hybrid", True)):
        cfg = base.replace(clean=base.clean.replace(variant=variant))
        for step in ("clean_revisions", "clean_pairs"):
            changed = payload(cfg, step) != payload(cfg.replace(teacher=other_teacher), step)
            assert changed == depends, (variant, step)
    assert json.loads(payload(base, "clean_revisions")).keys() == {"clean"}


def test_the_step_registry_is_the_one_list_of_steps():
    from cai_pipelines.cluster import HF_STEPS, MODEL_STEPS, TEACHER_STEPS

    assert STEP_NAMES == ("prepare_prompts", "prepare_eval", "revise", "clean_revisions", "sft", "pairs",
                          "clean_pairs", "discover", "judge", "dpo", "gate", "evaluate", "report", "compare")
    assert GENERATION_STEPS == ("revise", "pairs", "gate", "evaluate") and TRAINING_STEPS == ("sft", "dpo")
    assert TEACHER_STEPS == ("clean_revisions", "clean_pairs", "discover", "judge", "evaluate")
    assert MODEL_STEPS == ("revise", "sft", "pairs", "dpo", "gate", "evaluate")
    assert HF_STEPS == ("prepare_prompts", "prepare_eval", "revise", "sft", "pairs", "discover", "dpo", "gate",
                        "evaluate")  # hf: data sets are read with HF_TOKEN too
    assert set(ADAPTERS) == set(STEP_NAMES)
    for step in STEPS.values():
        assert step.section in RunConfig.field_types() and set(step.sections) <= set(RunConfig.field_types())
        assert step.needs_teacher == ("teacher" in step.used(RunConfig().replace(
            clean=RunConfig().clean.replace(variant="llm")))), step.name


def test_a_component_must_pass_the_inputs_its_step_declares(revisions, tmp_path):
    cfg = RunConfig()
    with pytest.raises(StageError, match="clean_revisions: no input artifact 'rows'; unknown input artifact 'pairs'"):
        execute("clean_revisions", payload(cfg, "clean_revisions"), {"pairs": str(revisions)},
                str(tmp_path / "a"), str(tmp_path / "run"))

