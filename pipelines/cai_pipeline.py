"""The CAI DAG: prepare -> revise -> clean -> sft -> pairs -> clean -> judge -> dpo -> gate -> evaluate -> report.

The collapse gate decides with `dsl.If`/`dsl.Else`: when the DPO model passes (or is only
flagged, `gate.mode: flag`) it is evaluated and the report presents it; when it fails,
nothing is evaluated or promoted and the report (display name "report (not promoted)")
says which thresholds it broke.

`build_pipeline(cfg)` returns the KFP pipeline whose parameter defaults are the
per-step config payloads of `cfg`, so the same function serves `cai run`
(kfp.local) and `cai compile` (cluster YAML). Each step receives only the
config sections it reads, so KFP caching reruns only what changed.
"""
# No `from __future__ import annotations` here: KFP reads the pipeline's parameter types at runtime.
from typing import Callable

from kfp import dsl

from cai_components.clean import clean
from cai_components.discover import discover
from cai_components.dpo import dpo
from cai_components.evaluate import evaluate
from cai_components.gate import gate
from cai_components.judge import judge
from cai_components.pairs import pairs
from cai_components.prepare import prepare
from cai_components.report import report
from cai_components.revise import revise
from cai_components.sft import sft
from cai_core.config.run import RunConfig
from cai_core import storage
from cai_core.runtime.engine import payload
from cai_core.runtime.run_root import RUN_ID_FIELD
from cai_core.runtime.steps import STEP_NAMES

PIPELINE_NAME = "cai"


def _no_platform(task, step: str):
    return task


def default_run_root(cfg: RunConfig) -> str:
    """`<output_dir>/{run_id}`: each run of the compiled package fills in its own KFP run id at run time."""
    return storage.join(cfg.output_dir, RUN_ID_FIELD)


def build_pipeline(cfg: RunConfig, run_root: str = "", platform: Callable = _no_platform):
    """The pipeline for `cfg`. `platform(task, step)` applies where-it-runs settings to each
    task (Kubernetes resources, node selectors, secrets, retries); locally it does nothing.

    `run_root` (a pipeline parameter) defaults to `<output_dir>/{run_id}`: every component also gets
    KFP's run id (`dsl.PIPELINE_JOB_ID_PLACEHOLDER`, resolved per run) and puts it in place of `{run_id}`
    (cai_core.runtime.engine.resolve_run_root), so the package holds no run id of its own. A run root
    without `{run_id}` (`cai submit --run-id`, `cai run`) names its run by its last path segment."""
    p = {step: payload(cfg, step) for step in STEP_NAMES}  # clean_pairs shares clean_revisions' payload
    run_root = run_root or default_run_root(cfg)

    use_discover = cfg.judge.constitution == "discover"

    @dsl.pipeline(name=PIPELINE_NAME, description="Constitutional-AI post-training that does not collapse.")
    def cai_pipeline(
        run_root: str = run_root,
        prompts_config: str = p["prepare_prompts"],
        eval_prompts_config: str = p["prepare_eval"],
        revise_config: str = p["revise"],
        clean_config: str = p["clean_revisions"],
        sft_config: str = p["sft"],
        pairs_config: str = p["pairs"],
        discover_config: str = p["discover"],
        judge_config: str = p["judge"],
        dpo_config: str = p["dpo"],
        gate_config: str = p["gate"],
        evaluate_config: str = p["evaluate"],
        report_config: str = p["report"],
    ) -> str:
        run = dict(run_root=run_root, kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        prompts = platform(prepare(step="prepare_prompts", config=prompts_config, **run)
                           .set_display_name("prompts"), "prepare_prompts")
        eval_prompts = platform(prepare(step="prepare_eval", config=eval_prompts_config, **run)
                                .set_display_name("eval prompts"), "prepare_eval")
        revisions = platform(revise(prompts=prompts.outputs["prompts"], config=revise_config, **run), "revise")
        cleaned_revisions = platform(clean(step="clean_revisions", rows=revisions.outputs["revisions"],
                                           config=clean_config, **run)
                                     .set_display_name("clean revisions"), "clean_revisions")
        sft_task = platform(sft(data=cleaned_revisions.outputs["cleaned"], config=sft_config, **run), "sft")
        pair_task = platform(pairs(prompts=prompts.outputs["prompts"], model=sft_task.outputs["model"],
                                   config=pairs_config, **run), "pairs")
        cleaned_pairs = platform(clean(step="clean_pairs", rows=pair_task.outputs["pairs_out"], config=clean_config,
                                       **run).set_display_name("clean pairs"), "clean_pairs")
        if use_discover:  # learn the judge's constitution from discover.source first
            found = platform(discover(config=discover_config, **run), "discover")
            judged = platform(judge(pairs=cleaned_pairs.outputs["cleaned"], constitution=found.outputs["constitution"],
                                    config=judge_config, **run), "judge")
        else:
            judged = platform(judge(pairs=cleaned_pairs.outputs["cleaned"], config=judge_config, **run),
                              "judge")
        dpo_task = platform(dpo(preferences=judged.outputs["preferences"], sft_model=sft_task.outputs["model"],
                                config=dpo_config, **run), "dpo")
        gate_task = platform(gate(prompts=eval_prompts.outputs["prompts"], sft_model=sft_task.outputs["model"],
                                  dpo_model=dpo_task.outputs["model"], config=gate_config,
                                  **run).set_display_name("collapse gate"), "gate")
        report_inputs = dict(clean_revisions=cleaned_revisions.outputs["cleaned"], sft=sft_task.outputs["model"],
                             clean_pairs=cleaned_pairs.outputs["cleaned"], judge=judged.outputs["preferences"],
                             dpo=dpo_task.outputs["model"], gate=gate_task.outputs["result"], config=report_config,
                             **run)
        with dsl.If(gate_task.outputs["verdict"] != "fail", name="gate-passed"):
            evaluated = platform(evaluate(prompts=eval_prompts.outputs["prompts"], sft_model=sft_task.outputs["model"],
                                          dpo_model=dpo_task.outputs["model"],
                                          config=evaluate_config, **run), "evaluate")
            platform(report(evaluate=evaluated.outputs["results"], **report_inputs), "report")
        with dsl.Else(name="gate-failed"):
            platform(report(**report_inputs).set_display_name("report (not promoted)"), "report")
        # The pipeline's output (available once every step is done): the gate verdict. The
        # ablation collects it from each member run.
        return gate_task.outputs["verdict"]

    return cai_pipeline
