"""A run's identity on a cluster: the run root names the run, filled in at run time.

A compiled package is run many times (the UI, `kfp run create`, recurring runs), so it names no run:
its `run_root` parameter defaults to `<output_dir>/{run_id}` and each component receives KFP's run id
(`dsl.PIPELINE_JOB_ID_PLACEHOLDER`, resolved by KFP per run), which `resolve_run_root` puts in place of
`{run_id}`. A run root without `{run_id}` (`cai submit --run-id`, `cai run`) names its run itself: its
last path segment (`run_id_of`), which is also the PyTorchJobs' `cai/run-id` label.

A leaf (cai_core.errors only), so the engine, the training launcher and the pipeline read it alike.
"""
from __future__ import annotations

from cai_core.errors import StageError

#: Where a run root names its run: replaced at run time by the KFP run's id (see `resolve_run_root`).
RUN_ID_FIELD = "{run_id}"


def resolve_run_root(run_root: str, kfp_run_id: str = "") -> str:
    """`run_root` with `{run_id}` replaced by this KFP run's id; a run root without it names its run itself
    (its last path segment: `cai submit --run-id`, `cai run`)."""
    if RUN_ID_FIELD not in run_root:
        return run_root
    if not kfp_run_id or "{{" in kfp_run_id:
        raise StageError(f"run_root {run_root!r} names its run by {RUN_ID_FIELD}, but the component got no KFP run "
                         f"id ({kfp_run_id!r}); pass the run root of the run (e.g. <output_dir>/<run id>)")
    return run_root.replace(RUN_ID_FIELD, kfp_run_id)


def run_id_of(run_root: str) -> str:
    """The run id a resolved run root names: its last path segment."""
    return run_root.rstrip("/").rsplit("/", 1)[-1]
