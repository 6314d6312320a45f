"""Runs one pipeline step: the code every KFP component calls.

A step is a stage applied at one point of the DAG (`clean_revisions` and
`clean_pairs` are both the clean stage). `execute()`:

1. parses the step's config payload (only the RunConfig sections it reads);
2. computes a fingerprint from the step, its config, the fingerprints of its
   inputs (each input artifact carries `_stage.json`) and the cai version;
3. if `<run_root>/<step>/` already holds a complete output with that
   fingerprint, copies it into the output artifact instead of recomputing
   (a rerun with the same run id, or a retried pod, pays for nothing twice);
4. otherwise runs the stage, writes `_stage.json` (fingerprint, metrics,
   details, timing) and publishes the artifact to `<run_root>/<step>/`
   (complete only once its manifest is written, see `storage.copy_dir`);
5. logs the metrics to the KFP Metrics artifact when one is given.

The run root is a local directory or an s3:// prefix.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cai_core
from cai_core import records, storage
from cai_core.config import RunConfig
from cai_core.errors import CaiError
from cai_core.progress import log
from cai_core.stages.base import StageResult

STAGE_FILE = "_stage.json"
MANIFEST = "_MANIFEST.json"


@dataclass(frozen=True)
class Step:
    sections: tuple[str, ...]  # RunConfig sections the step reads; the first is the stage's own
    call: Callable[[dict, dict[str, Path], Path, dict], StageResult]
    # the sections this config really uses, when fewer than `sections` (so unused ones do not change the
    # step's inputs, its fingerprint or its KFP cache key); None: all of them
    used: Callable[[RunConfig], tuple[str, ...]] | None = None


def _prepare(c, i, o, p):
    from cai_core.stages import prepare
    return prepare.run(c["section"], o)


def _policy(c, path: str):
    """The policy model for generation: transformers in process, or vLLM servers (model.backend)."""
    from cai_core.llm.vllm_server import load_policy_model
    return load_policy_model(path, c["model"])


def _teacher(c, p):
    """The run's teacher (endpoint or in-process policy), journaling its requests under `<run_root>/journal/<step>`."""
    from cai_core.llm import load_teacher
    return load_teacher(c["teacher"], c["model"], journal=p.get("_journal"))


def _closing(llm, work):
    try:
        return work(llm)
    finally:
        getattr(llm, "close", lambda: None)()


def _revise(c, i, o, p):
    from cai_core.stages import revise
    return _closing(_policy(c, c["model"].name_or_path),
                    lambda llm: revise.run(c["section"], i["prompts"] / "prompts.jsonl", o, llm=llm))


def _clean(fields: tuple[str, ...], sft_field: str | None):
    def call(c, i, o, p):
        from cai_core.stages import clean
        rows = i["rows"] / _main_file(i["rows"])
        if c["section"].variant in clean.LLM_VARIANTS:
            result = _closing(_teacher(c, p), lambda llm: clean.run(c["section"], rows, o, fields, llm=llm))
        else:
            result = clean.run(c["section"], rows, o, fields)
        if sft_field:
            rows = clean.to_sft_rows(records.read_jsonl(result.outputs["rows"]), sft_field)
            result.outputs["sft"] = o / "sft.jsonl"
            result.metrics["sft_rows"] = records.write_jsonl(result.outputs["sft"], rows)
        return result
    return call


def _clean_sections(cfg: RunConfig) -> tuple[str, ...]:
    """The teacher matters to the clean steps only for the variants that call it."""
    from cai_core.stages.clean import LLM_VARIANTS
    return ("clean", "teacher", "model") if cfg.clean.variant in LLM_VARIANTS else ("clean",)


def _main_file(artifact: Path) -> str:
    """The data file of an upstream artifact (the one JSONL a step consumes)."""
    for name in ("revisions.jsonl", "pairs.jsonl"):
        if (artifact / name).exists():
            return name
    raise CaiError(f"{artifact}: no revisions.jsonl or pairs.jsonl in the input artifact")


def _sft(c, i, o, p):
    from cai_core.train_commands import run_training_step
    return run_training_step("sft", c, i["data"] / "sft.jsonl", c["model"].name_or_path, o, p["_run_root"])


def _pairs(c, i, o, p):
    from cai_core.stages import pairs
    return _closing(_policy(c, str(i["model"] / "model")),
                    lambda llm: pairs.run(c["section"], i["prompts"] / "prompts.jsonl", o, llm=llm))


def _discover(c, i, o, p):
    from cai_core.stages import discover
    cfg = c["section"]
    return _closing(_teacher(c, p), lambda llm: discover.run(cfg, discover.resolve_source(cfg, o), o, llm=llm))


def _judge(c, i, o, p):
    from cai_core.errors import ConfigError
    from cai_core.stages import judge
    cfg = c["section"]
    if "constitution" in i:  # the discover step's output (judge.constitution: discover)
        cfg = cfg.replace(constitution=str(i["constitution"] / "constitution.yaml"))
    elif cfg.constitution == "discover":
        raise ConfigError("judge.constitution: 'discover' needs the discover step's output; run the pipeline, "
                          "or run `cai discover` and set judge.constitution to the YAML it wrote")
    return _closing(_teacher(c, p), lambda llm: judge.run(cfg, i["pairs"] / "cleaned.jsonl", o, llm=llm))


def _dpo(c, i, o, p):
    from cai_core.train_commands import run_training_step
    return run_training_step("dpo", c, i["preferences"] / "train.jsonl", str(i["model"] / "model"), o,
                             p["_run_root"])


def _gate(c, i, o, p):
    from cai_core.stages import gate
    return gate.call(c, i, o, p)


def _evaluate(c, i, o, p):
    from cai_core.stages import evaluate
    return evaluate.call(c, i, o, p)


def _report(c, i, o, p):
    from cai_core.stages import report
    stages = {}
    for step in STEPS:  # every completed step of the run, not only the report's inputs
        path = storage.join(p["_run_root"], step, STAGE_FILE)
        if step != "report" and storage.exists(path):
            stages[step] = json.loads(storage.read_text(path))
    result = report.run(c["section"], i, o, stages=stages)
    front = [o / "report.html", o / "report.md", o / "metrics.json", *sorted((o / "plots").glob("*.png"))]
    for path in front:  # the run's front page, beside the step folders (report.md links plots/)
        storage.write_bytes(storage.join(p["_run_root"], str(path.relative_to(o))), path.read_bytes())
    return result


def _compare(c, i, o, p):
    from cai_core.stages import compare
    result = compare.run(c["section"], json.loads(p["roster"]), o)
    for name in ("ablation.html", "ablation.md", "ablation.json"):  # beside the member folders
        storage.write_bytes(storage.join(p["_run_root"], name), (o / name).read_bytes())
    return result


STEPS: dict[str, Step] = {
    "prepare_prompts": Step(("prompts",), _prepare),
    "prepare_eval": Step(("eval_prompts",), _prepare),
    "revise": Step(("revise", "model"), _revise),
    "clean_revisions": Step(("clean", "teacher", "model"), _clean(("final",), sft_field="final"), _clean_sections),
    "sft": Step(("sft", "model", "train"), _sft),
    "pairs": Step(("pairs", "model"), _pairs),
    "clean_pairs": Step(("clean", "teacher", "model"), _clean(("response_a", "response_b"), sft_field=None),
                        _clean_sections),
    "discover": Step(("discover", "teacher", "model"), _discover),
    "judge": Step(("judge", "teacher", "model"), _judge),
    "dpo": Step(("dpo", "train"), _dpo),
    "gate": Step(("gate", "model"), _gate),
    "evaluate": Step(("evaluate", "model", "teacher"), _evaluate),
    "report": Step(("report",), _report),
    "compare": Step(("ablation",), _compare),
}


def payload(cfg: RunConfig, step: str) -> str:
    """The JSON config a step's component receives: only the sections it reads."""
    sections = STEPS[step].used(cfg) if STEPS[step].used else STEPS[step].sections
    return json.dumps({name: getattr(cfg, name).to_dict() for name in sections}, sort_keys=True)


def parse_payload(step: str, text: str) -> dict[str, Any]:
    types = RunConfig.field_types()
    data = json.loads(text)
    sections = STEPS[step].sections
    parsed = {name: types[name].from_dict(data.get(name, {}), path=name) for name in sections}
    parsed["section"] = parsed[sections[0]]
    return parsed


def input_fingerprint(path: Path) -> str:
    stage_file = path / STAGE_FILE
    if stage_file.exists():
        return records.read_json(stage_file)["fingerprint"]
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
        digest.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def _source_fingerprint(step: str, cfgs: dict) -> str:
    """Content of a prepare/discover step's local source file, so an edited input file is not reused."""
    if not step.startswith("prepare") and step != "discover":
        return ""
    from cai_core.stages.prepare import resolve_source
    source = cfgs["section"].source
    if not source:
        return ""
    if storage.is_remote(source):
        return source
    path = resolve_source(source, Path("."))
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def fingerprint(step: str, config_text: str, inputs: dict[str, Path], params: dict, cfgs: dict) -> str:
    parts = [step, json.loads(config_text), {k: input_fingerprint(v) for k, v in sorted(inputs.items())},
             params, cai_core.__version__, _source_fingerprint(step, cfgs)]
    return records.row_id(*parts)


def _reuse(published: str, fp: str, out_dir: Path) -> dict | None:
    if not storage.exists(storage.join(published, MANIFEST)):
        return None
    try:
        stage = json.loads(storage.read_text(storage.join(published, STAGE_FILE)))
    except CaiError:
        return None
    if stage.get("fingerprint") != fp:
        return None
    storage.copy_dir(published, str(out_dir))
    return stage


def _log_kfp(kfp_metrics, metrics: dict) -> None:
    if kfp_metrics is None:
        return
    for key, value in sorted(StageResult(metrics=metrics).finite_metrics().items()):
        kfp_metrics.log_metric(key, value)


def execute(step: str, config: str, inputs: dict[str, str], out_dir: str, run_root: str,
            kfp_metrics=None, params: dict | None = None) -> dict:
    """Run (or reuse) one step; return its `_stage.json` content."""
    params = params or {}
    out = Path(out_dir)
    in_paths = {k: Path(v) for k, v in inputs.items()}
    try:
        cfgs = parse_payload(step, config)
        fp = fingerprint(step, config, in_paths, params, cfgs)
        published = storage.join(run_root, step)
        reused = _reuse(published, fp, out)
        if reused is not None:
            log(f"{step}: reused the completed output at {published} (fingerprint {fp})")
            _log_kfp(kfp_metrics, reused["metrics"])
            return reused
        log(f"{step}: started")
        out.mkdir(parents=True, exist_ok=True)
        started = time.time()
        result = STEPS[step].call(cfgs, in_paths, out, {**params, "_run_root": run_root,
                                                                  "_journal": storage.join(run_root, "journal", step)})
        stage = {"step": step, "fingerprint": fp, "cai_version": cai_core.__version__,
                 "metrics": result.finite_metrics(), "details": result.details,
                 "outputs": {k: str(Path(v).relative_to(out)) for k, v in result.outputs.items()},
                 "started": started, "seconds": round(time.time() - started, 3)}
        records.write_json(out / STAGE_FILE, stage)
        storage.copy_dir(str(out), published)
        log(f"{step}: done in {stage['seconds']:.1f}s; " +
            ", ".join(f"{k}={v:.4g}" for k, v in list(stage["metrics"].items())[:8]))
        _log_kfp(kfp_metrics, stage["metrics"])
        return stage
    except CaiError as exc:
        log(f"ERROR in {step}: {exc}")
        raise
