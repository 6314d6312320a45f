"""Runs one pipeline step: the code every KFP component calls.

A step (`steps.STEPS`) is a stage applied at one point of the DAG
(`clean_revisions` and `clean_pairs` are both the clean stage). `execute()`:

1. parses the step's config payload (only the RunConfig sections it reads);
2. computes a fingerprint from the step, its config, the fingerprints of its
   inputs (each input artifact carries `_stage.json`) and the cai version;
3. if `<run_root>/<step>/` already holds a complete output with that
   fingerprint, copies it into the output artifact instead of recomputing
   (a rerun with the same run id, or a retried pod, pays for nothing twice); a trained model's output
   refers to weights its job wrote (`model_ref`), and is reused only while those weights are complete;
4. otherwise runs the stage (through its adapter), writes `_stage.json` (fingerprint, metrics,
   details, timing) and publishes the artifact to `<run_root>/<step>/`
   (complete only once its manifest is written, see `storage.copy_dir`);
5. logs the metrics to the KFP Metrics artifact when one is given.

The run root is a local directory or an s3:// prefix. On a cluster it is a pipeline parameter whose
default, `<output_dir>/{run_id}`, names the run only at run time: each component also receives KFP's
run id (`dsl.PIPELINE_JOB_ID_PLACEHOLDER`), and `resolve_run_root` puts it in place of `{run_id}`, so
one compiled package run twice (UI, `kfp run create`, a recurring run) makes two runs.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import cai_core
from cai_core import records, storage
from cai_core.config.run import RunConfig
from cai_core.errors import CaiError, StageError
from cai_core.progress import log
from cai_core.runtime.adapters import ADAPTERS, StepContext
from cai_core.runtime import model_ref
from cai_core.runtime.artifacts import MANIFEST_NAME, MODEL_REF, STAGE_FILE
from cai_core.runtime.run_root import resolve_run_root
from cai_core.runtime.steps import DAG_FIELDS, step_of
from cai_core.stages.base import StageResult


def payload(cfg: RunConfig, step: str) -> str:
    """The JSON config a step's component receives: only the sections it reads, less the DAG's own fields."""
    def section(name: str) -> dict:
        data = getattr(cfg, name).to_dict()
        return {k: v for k, v in data.items() if k not in DAG_FIELDS.get(name, ())}
    return json.dumps({name: section(name) for name in step_of(step).used(cfg)}, sort_keys=True)


def parse_payload(step: str, text: str) -> dict[str, Any]:
    """Every section of the step, from its payload (a section the payload leaves out takes its defaults)."""
    types = RunConfig.field_types()
    data = json.loads(text)
    return {name: types[name].from_dict(data.get(name, {}), path=name) for name in step_of(step).sections}


def check_inputs(step: str, inputs: dict[str, Path]) -> None:
    """The input artifacts a component passes must be those its step declares."""
    declared = step_of(step)
    known = declared.inputs + declared.optional_inputs
    problems = [f"no input artifact '{name}'" for name in declared.inputs if name not in inputs]
    problems += [f"unknown input artifact '{name}'" for name in inputs if name not in known]
    if problems:
        raise StageError(f"{step}: {'; '.join(problems)} (the step takes {', '.join(known) or 'none'})")


def input_fingerprint(path: Path) -> str:
    stage_file = path / STAGE_FILE
    if stage_file.exists():
        return records.read_json(stage_file)["fingerprint"]
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
        digest.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def _source_fingerprint(step: str, sections: dict) -> str:
    """What a prepare/discover step's sources hold now (file content, a saved dataset's fingerprints, the Hub
    revision's commit), so an edited input is not reused; prepare_eval's overlap check adds the training prompts'."""
    stage, own = step_of(step).stage, sections[step_of(step).section]
    if stage in ("discover", "sft"):
        from cai_core.data.inputs import fingerprint as data_fingerprint
        return data_fingerprint(own.source if stage == "discover" else own.helpful_data)
    if stage != "prepare":
        return ""
    from cai_core.stages.prepare import source_fingerprints
    parts = source_fingerprints(own)
    if getattr(own, "checks_overlap", False) and "prompts" in sections:
        parts += source_fingerprints(sections["prompts"])
    return "|".join(parts)


def fingerprint(step: str, config_text: str, inputs: dict[str, Path], params: dict, sections: dict) -> str:
    parts = [step, json.loads(config_text), {k: input_fingerprint(v) for k, v in sorted(inputs.items())},
             params, cai_core.__version__, _source_fingerprint(step, sections)]
    return records.row_id(*parts)


def _reuse(published: str, fp: str, out_dir: Path) -> dict | None:
    if not storage.exists(storage.join(published, MANIFEST_NAME)):
        return None
    try:
        stage = json.loads(storage.read_text(storage.join(published, STAGE_FILE)))
    except CaiError:
        return None
    if stage.get("fingerprint") != fp:
        return None
    if MODEL_REF in stage.get("outputs", {}).values():  # the weights live where the job wrote them: still there?
        try:
            ref = model_ref.read(published)
        except CaiError:
            return None
        if ref is None or not storage.exists(model_ref.manifest_of(ref)):
            log(f"{published}: the weights its {MODEL_REF} names are gone ({ref['uri']}); training again")
            return None
    storage.copy_dir(published, str(out_dir))
    return stage


def _log_kfp(kfp_metrics, metrics: dict) -> None:
    if kfp_metrics is None:
        return
    for key, value in sorted(StageResult(metrics=metrics).finite_metrics().items()):
        kfp_metrics.log_metric(key, value)


def execute(step: str, config: str, inputs: dict[str, str], out_dir: str, run_root: str,
            kfp_metrics=None, params: dict | None = None, kfp_run_id: str = "") -> dict:
    """Run (or reuse) one step; return its `_stage.json` content. `kfp_run_id` fills `{run_id}` in run_root."""
    params = params or {}
    run_root = resolve_run_root(run_root, kfp_run_id)
    out = Path(out_dir)
    in_paths = {k: Path(v) for k, v in inputs.items()}
    try:
        try:
            step_of(step)
        except KeyError:
            raise StageError(f"unknown step {step!r}") from None
        check_inputs(step, in_paths)
        sections = parse_payload(step, config)
        fp = fingerprint(step, config, in_paths, params, sections)
        published = storage.join(run_root, step)
        reused = _reuse(published, fp, out)
        if reused is not None:
            log(f"{step}: reused the completed output at {published} (fingerprint {fp})")
            _log_kfp(kfp_metrics, reused["metrics"])
            return reused
        log(f"{step}: started")
        out.mkdir(parents=True, exist_ok=True)
        started = time.time()
        context = StepContext(step=step_of(step), round_name=step, sections=sections, inputs=in_paths, out_dir=out,
                              run_root=run_root, journal=storage.join(run_root, "journal", step), params=params,
                              fingerprint=fp)
        result = ADAPTERS[context.step.name](context)
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
