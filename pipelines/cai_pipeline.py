"""The CAI DAG: prepare -> revise -> clean -> sft -> pairs -> clean -> judge -> dpo -> gate -> evaluate -> report.

The collapse gate decides with `dsl.If`/`dsl.Else`: when the DPO model passes (or is only
flagged, `gate.mode: flag`) it is evaluated and the report presents it; when it fails,
nothing is evaluated or promoted and the report (display name "report (not promoted)")
says which thresholds it broke.

`dpo.iterations: N` repeats the preference round (pairs -> clean -> judge -> dpo -> gate) N times, unrolled
when the pipeline is built: round k's steps are `pairs_r<k>` ... `gate_r<k>` (cai_core.runtime.steps), its pairs
are sampled from round k-1's DPO model, which is also its DPO starting point and reference, and it runs only
inside the `dsl.If` of round k-1's passing gate. A failed round ends the loop: its `dsl.Else` evaluates and
reports the last round that passed (round 1 failing: nothing is promoted, as above).

`build_pipeline(cfg)` returns the KFP pipeline whose parameter defaults are the
per-step config payloads of `cfg`, so the same function serves `cai run`
(kfp.local) and `cai compile` (cluster YAML). Each step receives only the
config sections it reads, so a changed section reruns only the steps that read it (and
those after them). That skipping is cai's own (cai_core.runtime.engine: fingerprints at
the run root), not KFP's cache: the steps that read data sets are never KFP-cached, and
KFP's cache key holds the input artifacts' names, new in every run downstream of them.
"""
# No `from __future__ import annotations` here: KFP reads the pipeline's parameter types at runtime.
from typing import Any, Callable, NamedTuple

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
from cai_core.runtime.steps import STEP_NAMES, round_name

PIPELINE_NAME = "cai"


class _Round(NamedTuple):
    """The tasks of one preference round that later steps read."""

    number: int
    cleaned: Any
    judged: Any
    dpo: Any
    gate: Any


def _no_platform(task, step: str):
    return task


def default_run_root(cfg: RunConfig) -> str:
    """`<output_dir>/{run_id}`: each run of the compiled package fills in its own KFP run id at run time."""
    return storage.join(cfg.output_dir, RUN_ID_FIELD)


def build_pipeline(cfg: RunConfig, run_root: str = "", platform: Callable = _no_platform, pipeline_root: str = ""):
    """The pipeline for `cfg`. `platform(task, step)` applies where-it-runs settings to each
    task (Kubernetes resources, node selectors, secrets, retries); locally it does nothing.

    `run_root` (a pipeline parameter) defaults to `<output_dir>/{run_id}`: every component also gets
    KFP's run id (`dsl.PIPELINE_JOB_ID_PLACEHOLDER`, resolved per run) and puts it in place of `{run_id}`
    (cai_core.runtime.engine.resolve_run_root), so the package holds no run id of its own. A run root
    without `{run_id}` (`cai submit --run-id`, `cai run`) names its run by its last path segment.

    `pipeline_root` (cluster.pipeline_root, for `cai compile`): where KFP keeps this pipeline's artifacts;
    empty = the backend's default. The artifacts are small: a trained model passes as a reference to the weights
    its job wrote (cai_core.runtime.model_ref), never as the weights."""
    p = {step: payload(cfg, step) for step in STEP_NAMES}  # clean_pairs shares clean_revisions' payload
    run_root = run_root or default_run_root(cfg)

    use_discover = cfg.judge.constitution == "discover"
    rounds = cfg.dpo.iterations

    @dsl.pipeline(name=PIPELINE_NAME, description="Constitutional-AI post-training that does not collapse.",
                  pipeline_root=pipeline_root or None)
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
        found = platform(discover(config=discover_config, **run), "discover") if use_discover else None
        configs = dict(pairs=pairs_config, clean=clean_config, judge=judge_config, dpo=dpo_config, gate=gate_config)

        def preference_round(k: int, start_model) -> _Round:
            """pairs -> clean -> judge -> dpo -> gate of round k, from (and against) `start_model`."""
            def on(task, step: str):  # a later round's steps are named and shown with their round
                if k > 1:
                    task.set_display_name(f"{step.replace('_', ' ')} (round {k})")
                return platform(task, step)
            pair_task = on(pairs(step=round_name("pairs", k), prompts=prompts.outputs["prompts"], model=start_model,
                                 config=configs["pairs"], **run), "pairs")
            cleaned = on(clean(step=round_name("clean_pairs", k), rows=pair_task.outputs["pairs_out"],
                               config=configs["clean"], **run).set_display_name("clean pairs"), "clean_pairs")
            constitution = {"constitution": found.outputs["constitution"]} if found is not None else {}
            judged = on(judge(step=round_name("judge", k), pairs=cleaned.outputs["cleaned"], config=configs["judge"],
                              **constitution, **run), "judge")
            dpo_task = on(dpo(step=round_name("dpo", k), preferences=judged.outputs["preferences"],
                              sft_model=start_model, config=configs["dpo"], **run), "dpo")
            gate_task = on(gate(step=round_name("gate", k), prompts=eval_prompts.outputs["prompts"],
                                sft_model=sft_task.outputs["model"], dpo_model=dpo_task.outputs["model"],
                                config=configs["gate"], **run).set_display_name("collapse gate"), "gate")
            return _Round(k, cleaned, judged, dpo_task, gate_task)

        def report_on(promoted: _Round, evaluated: bool):
            """The report of the run whose candidate is `promoted`'s DPO model; evaluated first when it passed."""
            inputs = dict(clean_revisions=cleaned_revisions.outputs["cleaned"], sft=sft_task.outputs["model"],
                          clean_pairs=promoted.cleaned.outputs["cleaned"], judge=promoted.judged.outputs["preferences"],
                          dpo=promoted.dpo.outputs["model"], gate=promoted.gate.outputs["result"],
                          config=report_config, rounds=rounds, **run)
            if not evaluated:
                return platform(report(**inputs).set_display_name("report (not promoted)"), "report")
            evaluated_task = platform(evaluate(prompts=eval_prompts.outputs["prompts"],
                                               sft_model=sft_task.outputs["model"],
                                               dpo_model=promoted.dpo.outputs["model"], config=evaluate_config,
                                               **run), "evaluate")
            return platform(report(evaluate=evaluated_task.outputs["results"], **inputs), "report")

        def rounds_from(k: int, start_model, last_passed: "_Round | None") -> _Round:
            """Round k; when its gate passes, the next round (or, after the last, evaluate and report on it);
            when it fails, evaluate and report on the last round that passed (none: the report says so)."""
            this = preference_round(k, start_model)
            suffix = "" if k == 1 else f"-round-{k}"
            with dsl.If(this.gate.outputs["verdict"] != "fail", name=f"gate-passed{suffix}"):
                if k < rounds:
                    rounds_from(k + 1, this.dpo.outputs["model"], this)
                else:
                    report_on(this, evaluated=True)
            with dsl.Else(name=f"gate-failed{suffix}"):
                if last_passed is None:
                    report_on(this, evaluated=False)
                else:
                    report_on(last_passed, evaluated=True)
            return this

        first = rounds_from(1, sft_task.outputs["model"], None)
        # The pipeline's output (available once every step is done): the first round's gate verdict. The
        # ablation collects it from each member run.
        return first.gate.outputs["verdict"]

    return cai_pipeline
