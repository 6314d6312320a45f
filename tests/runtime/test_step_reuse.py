"""Step reuse over a chain of steps: what changes upstream reruns everything after it, and only a complete
published output is ever reused.

The chain is prepare_prompts -> revise -> clean_revisions, run through `runtime.execute` the way the KFP
components call it (each step's input artifact is the upstream step's output directory, `_stage.json`
included). prepare and clean run their real stages; revise's adapter is replaced by a deterministic stand-in
(no model) that still reads its input artifact, so a stale reuse shows as stale data downstream.
"""
from __future__ import annotations

import json
from collections import Counter

import pytest

from cai_core import records
from cai_core.config.run import RunConfig
from cai_core.runtime import adapters, artifacts
from cai_core.runtime.engine import execute, payload
from cai_core.stages.base import StageResult

LOOPING = "Drink water before the walk. Drink water before the walk. Drink water before the walk."


def _fake_revise(ctx) -> StageResult:
    """A stand-in for the revise stage: final = the prompt's answer, looping for the 'loop' prompts."""
    rows = records.read_jsonl(ctx.inputs["prompts"] / artifacts.PROMPTS)
    out = ctx.out_dir / artifacts.REVISIONS
    records.write_jsonl(out, [{"id": r["id"], "prompt": r["prompt"], "response": "first",
                               "final": LOOPING if "loop" in r["prompt"] else f"An answer to: {r['prompt']}",
                               "revisions": [], "status": "ok"} for r in rows])
    return StageResult(outputs={"revisions": out}, metrics={"rows": len(rows)})


@pytest.fixture
def chain(tmp_path, monkeypatch):
    """run(cfg) -> {step: stage record}; `ran` counts the adapter calls (the steps really computed)."""
    ran: Counter = Counter()

    def counting(step, adapter):
        def call(ctx):
            ran[step] += 1
            return adapter(ctx)
        return call

    for step, adapter in (("prepare_prompts", adapters.ADAPTERS["prepare_prompts"]), ("revise", _fake_revise),
                          ("clean_revisions", adapters.ADAPTERS["clean_revisions"])):
        monkeypatch.setitem(adapters.ADAPTERS, step, counting(step, adapter))
    source = tmp_path / "prompts.jsonl"
    records.write_jsonl(source, [{"prompt": "How do I plan a walk?"}, {"prompt": "A loop please"}])
    root = str(tmp_path / "run")
    attempt = Counter()

    def run(cfg: RunConfig) -> dict[str, dict]:
        attempt["n"] += 1
        work = tmp_path / f"attempt{attempt['n']}"  # every attempt gets fresh artifact dirs, as KFP gives
        out = {}
        out["prepare_prompts"] = execute("prepare_prompts", payload(cfg, "prepare_prompts"), {},
                                         str(work / "prompts"), root)
        out["revise"] = execute("revise", payload(cfg, "revise"), {"prompts": str(work / "prompts")},
                                str(work / "revise"), root)
        out["clean_revisions"] = execute("clean_revisions", payload(cfg, "clean_revisions"),
                                         {"rows": str(work / "revise")}, str(work / "clean"), root)
        out["sft_rows"] = records.read_jsonl(work / "clean" / artifacts.SFT_ROWS)
        return out

    base = RunConfig()
    cfg = base.replace(prompts=base.prompts.replace(source=str(source)), clean=base.clean.replace(variant="rule"))
    return run, ran, cfg, source, tmp_path / "run"


STEPS = ("prepare_prompts", "revise", "clean_revisions")


def test_nothing_changed_reuses_every_step(chain):
    run, ran, cfg, _, _ = chain
    first = run(cfg)
    assert ran == Counter(dict.fromkeys(STEPS, 1))
    again = run(cfg)
    assert ran == Counter(dict.fromkeys(STEPS, 1)), "an unchanged chain must be reused, not recomputed"
    assert [again[s]["fingerprint"] for s in STEPS] == [first[s]["fingerprint"] for s in STEPS]
    assert again["sft_rows"] == first["sft_rows"]


def test_an_edited_input_file_reruns_every_step_after_it(chain):
    run, ran, cfg, source, _ = chain
    first = run(cfg)
    records.write_jsonl(source, [{"prompt": "How do I plan a walk?"}, {"prompt": "How do I pack a bag?"}])
    second = run(cfg)
    assert ran == Counter(dict.fromkeys(STEPS, 2)), f"every step after the edited input must rerun, ran {ran}"
    for step in STEPS:
        assert second[step]["fingerprint"] != first[step]["fingerprint"], step
    # the data that reaches SFT is the new data, not the stale rows of the first run
    assert sorted(r["prompt"] for r in second["sft_rows"]) == ["How do I pack a bag?", "How do I plan a walk?"]
    assert [r["response"] for r in second["sft_rows"] if "pack" in r["prompt"]] == ["An answer to: How do I pack a bag?"]


def test_an_upstream_config_change_reruns_every_step_after_it(chain):
    run, ran, cfg, _, _ = chain
    run(cfg)
    # prompts.max_prompts=1 changes only prepare_prompts' own config; revise and clean read no part of it
    narrowed = cfg.replace(prompts=cfg.prompts.replace(max_prompts=1))
    assert payload(narrowed, "revise") == payload(cfg, "revise")
    assert payload(narrowed, "clean_revisions") == payload(cfg, "clean_revisions")
    second = run(narrowed)
    assert ran == Counter(dict.fromkeys(STEPS, 2)), f"every step after the changed one must rerun, ran {ran}"
    assert [r["prompt"] for r in second["sft_rows"]] == ["How do I plan a walk?"]


def test_a_downstream_config_change_reruns_only_that_step(chain):
    run, ran, cfg, _, _ = chain
    first = run(cfg)
    second = run(cfg.replace(clean=cfg.clean.replace(variant="none")))
    assert ran == Counter({"prepare_prompts": 1, "revise": 1, "clean_revisions": 2})
    assert second["revise"]["fingerprint"] == first["revise"]["fingerprint"]
    assert [r["response"] for r in second["sft_rows"] if "loop" in r["prompt"]] == [LOOPING]  # variant none
    assert [r["response"] for r in first["sft_rows"] if "loop" in r["prompt"]] == ["Drink water before the walk."]


def test_an_input_artifact_without_a_stage_record_is_fingerprinted_by_content(tmp_path):
    """An input directory with no _stage.json (a user's own file): its content decides reuse."""
    art = tmp_path / "rows"
    art.mkdir()
    records.write_jsonl(art / artifacts.REVISIONS, [{"id": "1", "prompt": "q", "final": "Fine. Fine. Fine. Fine."}])
    cfg = RunConfig()
    cfg = cfg.replace(clean=cfg.clean.replace(variant="rule"))
    root = str(tmp_path / "run")

    def clean(out):
        stage = execute("clean_revisions", payload(cfg, "clean_revisions"), {"rows": str(art)}, str(tmp_path / out),
                        root)
        return stage, records.read_jsonl(tmp_path / out / artifacts.SFT_ROWS)

    first, rows1 = clean("a")
    records.write_jsonl(art / artifacts.REVISIONS, [{"id": "1", "prompt": "q", "final": "Other words here."}])
    second, rows2 = clean("b")
    assert second["fingerprint"] != first["fingerprint"]
    assert [r["response"] for r in rows2] == ["Other words here."], "a changed input file must not be reused"


def test_a_half_published_output_without_a_manifest_is_recomputed(chain):
    run, ran, cfg, _, root = chain
    first = run(cfg)
    published = root / "clean_revisions"
    assert (published / artifacts.MANIFEST_NAME).exists()
    # A pod died while publishing: _stage.json (same fingerprint) is there, a data file is cut short, and the
    # manifest, which is written last, is not.
    (published / artifacts.MANIFEST_NAME).unlink()
    sft = published / artifacts.SFT_ROWS
    sft.write_text(sft.read_text()[:10])
    assert json.loads((published / artifacts.STAGE_FILE).read_text())["fingerprint"] == \
        first["clean_revisions"]["fingerprint"]
    second = run(cfg)
    assert ran["clean_revisions"] == 2, "an output without its manifest is incomplete and must be recomputed"
    assert ran["prepare_prompts"] == ran["revise"] == 1
    assert second["sft_rows"] == first["sft_rows"]
    assert (published / artifacts.MANIFEST_NAME).exists()
    assert records.read_jsonl(sft) == first["sft_rows"]
