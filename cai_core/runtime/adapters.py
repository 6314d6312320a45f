"""How the engine calls each step's stage: one adapter per step of `steps.STEPS`.

An adapter turns a `StepContext` (the step's config sections, its input
artifacts, its output directory and its run) into the stage's own arguments:
the data file it reads, the models it talks to (loaded here and closed after),
and what it publishes beside the step folders. The stages are imported inside
the adapters, so a step loads only its own stage.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from cai_core import records, storage
from cai_core.errors import CaiError, ConfigError
from cai_core.llm.base import opened
from cai_core.runtime import artifacts, model_ref
from cai_core.runtime.steps import STEP_NAMES, Step, round_name, round_names
from cai_core.stages.base import StageResult


@dataclass(frozen=True)
class StepContext:
    """What a step's adapter receives from the engine."""

    step: Step
    #: Every config section of `step.sections`, parsed (the payload may leave narrowed ones out: defaults).
    sections: Mapping[str, Any]
    #: Input artifact name -> local directory.
    inputs: Mapping[str, Path]
    #: The output artifact's local directory.
    out_dir: Path
    #: Where the run's steps are published (a local directory or an s3:// prefix).
    run_root: str
    #: Storage prefix of the step's teacher request journal (`<run_root>/journal/<step>`).
    journal: str
    #: The component's extra parameters (models, roster, ...).
    params: Mapping[str, Any]
    #: The step's name in this DAG when it is not `step.name`: a preference round's `dpo_r2` (its folder, its
    #: PyTorchJob and its metrics.json entry).
    round_name: str = ""
    #: The engine's fingerprint of this step (config, inputs, version): a training job's work location.
    fingerprint: str = ""

    @property
    def name(self) -> str:
        return self.round_name or self.step.name

    @property
    def section(self) -> Any:
        """The stage's own config section."""
        return self.sections[self.step.section]


Adapter = Callable[[StepContext], StageResult]


def _policy(ctx: StepContext, path: str):
    """The policy model for generation: transformers in process, or vLLM servers (model.backend, the vllm section)."""
    from cai_core.llm.vllm_server import load_policy_model
    return load_policy_model(path, ctx.sections["model"], ctx.sections["vllm"])


def _teacher(ctx: StepContext):
    """The run's teacher (endpoint or in-process policy), journaling its requests under `<run_root>/journal/<step>`."""
    from cai_core.llm import load_teacher
    return load_teacher(ctx.sections["teacher"], ctx.sections["model"], journal=ctx.journal)


def _models_under_test(ctx: StepContext) -> dict[str, str]:
    """base (the configured model), sft and dpo (the trained models of those steps): name -> path."""
    return {"base": ctx.sections["model"].name_or_path, "sft": model_ref.location(ctx.inputs["sft"]),
            "dpo": model_ref.location(ctx.inputs["dpo"])}


def _prepare(ctx: StepContext) -> StageResult:
    """prepare_eval also reads the training prompts' section, for the train/eval overlap check."""
    from cai_core.stages import prepare
    checks = getattr(ctx.section, "checks_overlap", False)
    return prepare.run(ctx.section, ctx.out_dir, train=ctx.sections["prompts"] if checks else None)


def _revise(ctx: StepContext) -> StageResult:
    from cai_core.stages import revise
    with opened(_policy(ctx, ctx.sections["model"].name_or_path)) as llm:
        return revise.run(ctx.section, ctx.inputs["prompts"] / artifacts.PROMPTS, ctx.out_dir, llm=llm)


def _clean(fields: tuple[str, ...], sft_field: str | None) -> Adapter:
    def call(ctx: StepContext) -> StageResult:
        from cai_core.stages import clean
        rows, out = ctx.inputs["rows"] / _main_file(ctx.inputs["rows"]), ctx.out_dir
        if ctx.section.calls_teacher:
            with opened(_teacher(ctx)) as llm:
                result = clean.run(ctx.section, rows, out, fields, llm=llm)
        else:
            result = clean.run(ctx.section, rows, out, fields)
        if sft_field:
            sft_rows = clean.to_sft_rows(records.read_jsonl(result.outputs["rows"]), sft_field)
            result.outputs["sft"] = out / artifacts.SFT_ROWS
            result.metrics["sft_rows"] = records.write_jsonl(result.outputs["sft"], sft_rows)
        return result
    return call


def _main_file(artifact: Path) -> str:
    """The data file of an upstream artifact (the one JSONL a step consumes)."""
    for name in (artifacts.REVISIONS, artifacts.PAIRS):
        if (artifact / name).exists():
            return name
    raise CaiError(f"{artifact}: no {artifacts.REVISIONS} or {artifacts.PAIRS} in the input artifact")


def _sft(ctx: StepContext) -> StageResult:
    """sft.helpful_data: helpful rows are mixed into the cleaned CAI rows first (counts in the metrics)."""
    import tempfile

    from cai_core.training.launch import run_training_step
    data, cfg = ctx.inputs["data"] / artifacts.SFT_ROWS, ctx.sections["sft"]
    if not cfg.helpful_data:
        return run_training_step("sft", dict(ctx.sections), data, ctx.sections["model"].name_or_path, ctx.out_dir,
                                 ctx.run_root, fingerprint=ctx.fingerprint)
    from cai_core.data.helpful import mix_into
    with tempfile.TemporaryDirectory(prefix="cai-sft-mix-") as tmp:
        mixed = Path(tmp) / artifacts.SFT_ROWS
        counts = mix_into(data, cfg.helpful_data, cfg.helpful_ratio, mixed)
        result = run_training_step("sft", dict(ctx.sections), mixed, ctx.sections["model"].name_or_path,
                                   ctx.out_dir, ctx.run_root, fingerprint=ctx.fingerprint)
    result.metrics.update(counts)
    return result


def _pairs(ctx: StepContext) -> StageResult:
    from cai_core.stages import pairs
    with opened(_policy(ctx, model_ref.location(ctx.inputs["model"]))) as llm:
        return pairs.run(ctx.section, ctx.inputs["prompts"] / artifacts.PROMPTS, ctx.out_dir, llm=llm)


def _discover(ctx: StepContext) -> StageResult:
    from cai_core.stages import discover
    cfg = ctx.section
    with opened(_teacher(ctx)) as llm:
        return discover.run(cfg, discover.resolve_source(cfg, ctx.out_dir), ctx.out_dir, llm=llm)


def _judge(ctx: StepContext) -> StageResult:
    from cai_core.stages import judge
    cfg = ctx.section
    if "constitution" in ctx.inputs:  # the discover step's output (judge.constitution: discover)
        cfg = cfg.replace(constitution=str(ctx.inputs["constitution"] / artifacts.CONSTITUTION))
    elif cfg.constitution == "discover":
        raise ConfigError("judge.constitution: 'discover' needs the discover step's output; run the pipeline, "
                          "or run `cai discover` and set judge.constitution to the YAML it wrote")
    with opened(_teacher(ctx)) as llm:
        return judge.run(cfg, ctx.inputs["pairs"] / artifacts.CLEANED, ctx.out_dir, llm=llm)


def _dpo(ctx: StepContext) -> StageResult:
    from cai_core.training.launch import run_training_step
    return run_training_step("dpo", dict(ctx.sections), ctx.inputs["preferences"] / artifacts.PREFERENCES,
                             model_ref.location(ctx.inputs["model"]), ctx.out_dir, ctx.run_root,
                             step=ctx.name, fingerprint=ctx.fingerprint)


def _gate(ctx: StepContext) -> StageResult:
    """The models of gate.models answer the probes (base: model.name_or_path)."""
    from cai_core.eval.answers import policy_loader
    from cai_core.stages import gate
    cfg = ctx.section
    models = {k: v for k, v in _models_under_test(ctx).items() if k in cfg.models}
    return gate.run(cfg, ctx.inputs["prompts"] / artifacts.PROMPTS, models, ctx.out_dir,
                    load_model=policy_loader(ctx.sections["model"], ctx.sections["vllm"]))


def _evaluate(ctx: StepContext) -> StageResult:
    """Param models (comma-separated names, default base,sft,dpo; base: model.name_or_path).

    The judge is the run's teacher (load_teacher: an endpoint, else the base model in process).
    """
    from cai_core.eval.answers import policy_loader
    from cai_core.stages import evaluate
    names = [n.strip() for n in str(ctx.params.get("models", "base,sft,dpo")).split(",") if n.strip()]
    paths = _models_under_test(ctx)
    models = {n: paths[n] for n in names if n in paths}
    with opened(_teacher(ctx)) as judge:
        return evaluate.run(ctx.section, ctx.inputs["prompts"] / artifacts.PROMPTS, models, ctx.out_dir,
                            load_model=policy_loader(ctx.sections["model"], ctx.sections["vllm"]), judge=judge)


def _report(ctx: StepContext) -> StageResult:
    from cai_core.stages import report
    rounds = int(ctx.params.get("rounds", 1))
    stages, round_logs = {}, {}
    later_rounds = [name for k in range(2, rounds + 1) for name in round_names(k)]
    for step in (*STEP_NAMES, *later_rounds):  # every completed step of the run, not only the report's inputs
        path = storage.join(ctx.run_root, step, artifacts.STAGE_FILE)
        if step != ctx.step.name and storage.exists(path):
            stages[step] = json.loads(storage.read_text(path))
    for k in range(1, rounds + 1):
        log_path = storage.join(ctx.run_root, round_name("dpo", k), artifacts.TRAIN_LOG)
        if rounds > 1 and storage.exists(log_path):
            round_logs[k] = [json.loads(line) for line in storage.read_text(log_path).splitlines() if line.strip()]
    result = report.run(ctx.section, ctx.inputs, ctx.out_dir, stages=stages, rounds=rounds, round_logs=round_logs)
    out = ctx.out_dir
    front = [out / artifacts.REPORT_HTML, out / artifacts.REPORT_MD, out / artifacts.METRICS,
             *sorted((out / artifacts.PLOTS_DIR).glob("*.png"))]
    for path in front:  # the run's front page, beside the step folders (report.md links plots/)
        storage.write_bytes(storage.join(ctx.run_root, str(path.relative_to(out))), path.read_bytes())
    return result


def _compare(ctx: StepContext) -> StageResult:
    from cai_core.stages import compare
    result = compare.run(ctx.section, json.loads(ctx.params["roster"]), ctx.out_dir)
    for name in (artifacts.ABLATION_HTML, artifacts.ABLATION_MD, artifacts.ABLATION_JSON):  # beside the members
        storage.write_bytes(storage.join(ctx.run_root, name), (ctx.out_dir / name).read_bytes())
    return result


#: The adapter of every step (tests/runtime/test_runtime.py checks that each step of `steps.STEPS` has one).
ADAPTERS: Mapping[str, Adapter] = {
    "prepare_prompts": _prepare,
    "prepare_eval": _prepare,
    "revise": _revise,
    "clean_revisions": _clean(("final",), sft_field="final"),
    "sft": _sft,
    "pairs": _pairs,
    "clean_pairs": _clean(("response_a", "response_b"), sft_field=None),
    "discover": _discover,
    "judge": _judge,
    "dpo": _dpo,
    "gate": _gate,
    "evaluate": _evaluate,
    "report": _report,
    "compare": _compare,
}
