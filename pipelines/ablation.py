"""The cleaning ablation: the whole pipeline once per (variant, seed), then one comparison.

Each member is the main DAG used as a component inside `dsl.ParallelFor`,
with its own run root `<run_root>/<variant>-seed<seed>` and per-step configs
that differ only in `clean.variant` and the stage seeds. `dsl.Collected`
gathers the members' run roots for the compare step (mean and 95% CI).
"""
# No `from __future__ import annotations` here: KFP reads the pipeline's parameter types at runtime.
import json
from typing import Callable, List

from kfp import dsl

from cai_components.compare import compare
from cai_core import storage
from cai_core.config.run import RunConfig
from cai_core.runtime.engine import payload
from cai_pipelines.cai_pipeline import _no_platform, build_pipeline

SEEDED = ("revise", "pairs", "judge", "sft", "dpo", "evaluate")


def member_config(cfg: RunConfig, variant: str, seed: int) -> RunConfig:
    changes = {name: getattr(cfg, name).replace(seed=seed) for name in SEEDED}
    return cfg.replace(clean=cfg.clean.replace(variant=variant), **changes)


def members(cfg: RunConfig, run_root: str) -> list[dict]:
    out = []
    for variant in cfg.ablation.variants:
        for seed in cfg.ablation.seeds:
            member = member_config(cfg, variant, seed)
            out.append({"variant": variant, "seed": seed,
                        "run_root": storage.join(run_root, f"{variant}-seed{seed}"),
                        **{f"{step}_config": payload(member, step)
                           for step in ("revise", "clean_revisions", "sft", "pairs", "judge", "dpo", "evaluate")}})
    return out


def build_ablation(cfg: RunConfig, run_root: str = "", platform: Callable = _no_platform):
    inner = build_pipeline(cfg, platform=platform)
    items = members(cfg, run_root)
    roster = json.dumps([{k: m[k] for k in ("variant", "seed", "run_root")} for m in items])

    @dsl.pipeline(name="cai-ablation", description="Cleaning ablation: none / rule / llm / hybrid x seeds.")
    def cai_ablation(run_root: str = run_root, members: List[dict] = items, roster: str = roster,
                     compare_config: str = payload(cfg, "compare")):
        with dsl.ParallelFor(members, parallelism=1) as member:
            run = inner(run_root=member.run_root, revise_config=member.revise_config,
                        clean_config=member.clean_revisions_config, sft_config=member.sft_config,
                        pairs_config=member.pairs_config, judge_config=member.judge_config,
                        dpo_config=member.dpo_config, evaluate_config=member.evaluate_config)
        platform(compare(verdicts=dsl.Collected(run.output), roster=roster, config=compare_config,
                         run_root=run_root, kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER), "compare")

    return cai_ablation
