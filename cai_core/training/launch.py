"""Where one training stage runs: in this process (one rank of many under torchrun), or as a PyTorchJob or a
Kubeflow Trainer v2 TrainJob (train.launcher) that this process creates and watches; and a pipeline step's training (`run_training_step`)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from cai_core import storage
from cai_core.errors import CaiError, ConfigError
from cai_core.stages.base import StageResult
from cai_core.training.distributed import Dist, barrier, init_process_group
from cai_core.training.sync import (checkpoint_sync, collect, fetch_file, fetch_model, publish_final,
                                    restore_checkpoint, work_dir)

TERMINATION_LOG = "/dev/termination-log"


def stage_module(stage: str):
    if stage == "sft":
        from cai_core.stages import sft
        return sft
    if stage == "dpo":
        from cai_core.stages import dpo
        return dpo
    raise ConfigError(f"unknown training stage {stage!r} (sft or dpo)")


# ----------------------------------------------------------------------------- config


def launcher_config(cfg: Any):
    """The run config's ``train`` section (its defaults when the RunConfig has none)."""
    from cai_core.k8s.config import LauncherConfig

    section = getattr(cfg, "train", None)
    return section if isinstance(section, LauncherConfig) else LauncherConfig()


def cluster_config(cfg: Any = None):
    """The cluster settings: env CAI_CLUSTER_CONFIG (JSON, set on launcher pods by the pipeline), else cfg.cluster."""
    from cai_core.config.cluster import ClusterConfig

    text = os.environ.get("CAI_CLUSTER_CONFIG")
    if text:
        try:
            return ClusterConfig.from_json(text)
        except (ValueError, ConfigError) as exc:
            raise ConfigError(f"env CAI_CLUSTER_CONFIG: {exc}") from None
    section = getattr(cfg, "cluster", None)
    return section if isinstance(section, ClusterConfig) else ClusterConfig()


def default_targets(cfg: Any, stage: str, model: str | None, out: str | None,
                    run_id: str | None) -> tuple[str, str, str]:
    """(model, out, run id) of `cai train`: the given ones, else model.name_or_path,
    <output_dir>/<run id>/_train/<stage> and run_id of the config (else 'manual')."""
    run_id = run_id or cfg.run_id or "manual"
    return model or cfg.model.name_or_path, out or storage.join(cfg.output_dir, run_id, "_train", stage), run_id


# ----------------------------------------------------------------------------- training here


def train_local(stage: str, section: Any, data_uri: str, model: str, out_uri: str) -> StageResult:
    """Train in this process (one rank of many under torchrun); see the package doc for remote URIs."""
    module = stage_module(stage)
    remote = storage.is_remote(out_uri) or storage.is_remote(data_uri) or storage.is_remote(model)
    if not remote:
        return module.run(section, Path(data_uri), model, Path(out_uri))
    dist = Dist.from_env()
    remote_out = storage.is_remote(out_uri)
    work = work_dir(out_uri)
    work_in, work_out = work / "in", (work / "out" if remote_out else Path(out_uri))
    ckpt_dir = work_out / "checkpoints"
    init_process_group(dist)
    paths = {}
    error: CaiError | None = None
    if dist.local_rank == 0:
        try:
            shutil.rmtree(work, ignore_errors=True)
            work_in.mkdir(parents=True)
            paths["data"] = str(fetch_file(data_uri, work_in))
            paths["model"] = fetch_model(model, work_in / "model")
            if remote_out and getattr(section, "resume", True):
                step = restore_checkpoint(out_uri, ckpt_dir, work_out, dist)
                if step is not None and dist.rank == 0:
                    print(f"[cai train] resuming from checkpoint-{step} of {out_uri}", flush=True)
            (work / "paths.json").write_text(json.dumps(paths))
        except CaiError as exc:
            error = exc
            work.mkdir(parents=True, exist_ok=True)
            (work / "paths.json").write_text(json.dumps({"error": str(exc)}))
    barrier()
    if error is not None:
        raise error
    paths = json.loads((work / "paths.json").read_text())
    if "error" in paths:
        raise CaiError(f"local rank 0 could not fetch the inputs: {paths['error']}")
    callbacks = []
    if remote_out:
        callbacks.append(checkpoint_sync(out_uri, ckpt_dir, work_out, dist, getattr(section, "save_total_limit", 2)))
    result = module.run(section, Path(paths["data"]), paths["model"], work_out, callbacks)
    if remote_out and dist.rank == 0:
        rel = publish_final(work_out, out_uri, result, stage)
        result.outputs = {k: storage.join(out_uri, "final", v) for k, v in rel.items()}
    barrier()
    return result


def summary(stage: str, result: StageResult) -> str:
    """What `cai train --launcher local` prints on rank 0 (JSON: stage, outputs, metrics, details)."""
    return json.dumps({"stage": stage, "outputs": {k: str(v) for k, v in result.outputs.items()},
                       "metrics": result.finite_metrics(), "details": result.details},
                      indent=1, sort_keys=True, default=str)


def write_termination_message(message: str) -> None:
    """Kubernetes shows /dev/termination-log as the container's termination message (the launcher reports it)."""
    if os.path.exists(TERMINATION_LOG) and os.access(TERMINATION_LOG, os.W_OK):
        try:
            with open(TERMINATION_LOG, "w", encoding="utf-8") as fh:
                fh.write(message[-4000:])
        except OSError:
            pass


# ----------------------------------------------------------------------------- the PyTorchJob


def _pod_namespace() -> str | None:
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def owner_from_env() -> dict[str, str] | None:
    """The launcher's owner reference: CAI_OWNER_{API_VERSION,KIND,NAME,UID} (e.g. the Argo Workflow), else the
    launcher pod (CAI_POD_NAME, CAI_POD_UID, set by pipelines/cluster.py); None when neither is known."""
    env = os.environ
    if env.get("CAI_OWNER_NAME") and env.get("CAI_OWNER_UID") and env.get("CAI_OWNER_KIND"):
        return {"apiVersion": env.get("CAI_OWNER_API_VERSION", "argoproj.io/v1alpha1"), "kind": env["CAI_OWNER_KIND"],
                "name": env["CAI_OWNER_NAME"], "uid": env["CAI_OWNER_UID"]}
    if env.get("CAI_POD_NAME") and env.get("CAI_POD_UID"):
        return {"apiVersion": "v1", "kind": "Pod", "name": env["CAI_POD_NAME"], "uid": env["CAI_POD_UID"]}
    return None


def job_spec(stage: str, section: Any, lc: Any, cluster: Any, *, run_id: str, data_uri: str, model_uri: str,
             out_uri: str, step: str = ""):
    """The JobSpec of a stage's PyTorchJob or TrainJob from the train (lc) and cluster sections."""
    from cai_core import deepspeed_configs
    from cai_core.k8s.pytorchjob import SECRET_ENV, JobSpec

    for what, uri in (("--data", data_uri), ("--out", out_uri)):
        if not storage.is_remote(uri):
            raise ConfigError(f"train.launcher {lc.launcher}: {what} {uri} is a local path, which the job's pods cannot "
                              "read; use an s3:// URI (or an s3:// output_dir for a pipeline run)")
    if os.path.exists(model_uri) or model_uri.startswith(("/", "./", "../", "~")):
        raise ConfigError(f"train.launcher {lc.launcher}: --model {model_uri} is a local path; use a hub id, an "
                          "embedded model (tiny, smollm2-135m) or an s3:// directory")
    shipped = dict(section.to_dict())
    shipped["deepspeed"] = deepspeed_configs.inline(section.deepspeed)  # a file of this machine travels as JSON
    namespace = lc.namespace or _pod_namespace() or cluster.namespace
    secrets = lc.secrets if lc.secrets is not None else cluster.secrets
    secret_env = {env: (ref.secret, ref.key) for field_name, env in SECRET_ENV.items()
                  if (ref := getattr(secrets, field_name)) is not None}
    owner = owner_from_env()
    if owner and owner["kind"] == "Pod" and _pod_namespace() not in (None, namespace):
        owner = None  # an owner must live in the job's namespace
    return JobSpec(
        stage=stage, step=step if step != stage else "", run_id=run_id, namespace=namespace,
        image=lc.image or os.environ.get("CAI_TRAINER_IMAGE") or cluster.image("trainer"),
        data_uri=data_uri, model_uri=model_uri, out_uri=out_uri, config={stage: shipped},
        nodes=lc.nodes, gpus_per_node=lc.gpus_per_node, gpu_resource=cluster.gpu_resource,
        node_selector=dict(lc.node_selector if lc.node_selector is not None else cluster.node_selector),
        tolerations=tuple(lc.tolerations if lc.tolerations is not None else cluster.tolerations),
        shm_size=lc.shm_size or cluster.shm_size, scratch_size=lc.scratch_size, cpu=lc.cpu, memory=lc.memory,
        secret_env=secret_env, env={**cluster.env, **lc.env},
        service_account=lc.service_account or cluster.service_account,
        image_pull_policy=cluster.image_pull_policy, image_pull_secrets=tuple(cluster.image_pull_secrets),
        restarts=lc.restarts, ttl_after_finished_s=lc.ttl_after_finished_s, owner=owner,
        pod_annotations=dict(lc.pod_annotations), pod_labels=dict(lc.pod_labels), priority_class=lc.priority_class,
        kueue_queue=lc.kueue_queue, extra_resources={k: str(v) for k, v in lc.extra_resources.items()},
        runtime=getattr(lc, "runtime", "torch-distributed"),
        runtime_kind=getattr(lc, "runtime_kind", "ClusterTrainingRuntime"),
    )


def build_manifest(spec, launcher: str) -> dict[str, Any]:
    """The job manifest of `spec` for train.launcher `launcher` (pytorchjob or trainjob)."""
    if launcher == "trainjob":
        from cai_core.k8s.trainjob import build_trainjob

        return build_trainjob(spec)
    if launcher == "pytorchjob":
        from cai_core.k8s.pytorchjob import build_job

        return build_job(spec)
    raise ConfigError(f"train.launcher: {launcher!r} does not launch a job (pytorchjob or trainjob)")


def launch(spec, lc, api_client=None, emit=None, which: str | None = None):
    """Create (or re-attach to) the job of `which` (default train.launcher) and wait for it; returns the Launcher
    (its events) and the manifest on success."""
    from cai_core.k8s.launcher import Launcher, api_client_from_environment, kind_of

    manifest = build_manifest(spec, which or lc.launcher)
    launcher = Launcher(api_client or api_client_from_environment(), spec.namespace,
                        poll_interval_s=lc.poll_interval_s, timeout_s=lc.timeout_s, stream_logs=lc.stream_logs,
                        emit=emit, kind=kind_of(manifest))
    launcher.run(manifest)
    return launcher, manifest


# ----------------------------------------------------------------------------- a pipeline step


def run_training_step(stage: str, cfgs: dict[str, Any], data: Path, model: str, out_dir: Path, run_root: str,
                      emit=None, api_client=None, step: str = "", fingerprint: str = "") -> StageResult:
    """A pipeline step's training (the runtime's sft and dpo steps): in process, or through a PyTorchJob/TrainJob.

    `model`: for sft the configured name ('tiny', a hub id, a local directory, an s3:// directory); for dpo
    where the SFT step's model is (cai_core.runtime.model_ref.location: the s3:// weights a job wrote, or a
    local directory). With a job launcher the data file is uploaded to <work>/input/, a local model directory
    is uploaded there too (an s3:// one is read where it is), and the job writes the weights once, to
    <work>/final/model: `out_dir` gets the job's log, config and metrics and a model.json that refers to the
    weights (they are never downloaded here). `step`: the pipeline step when it is not the stage (a preference
    round's `dpo_r2`), which gets its own work location and job. `fingerprint` (the engine's, of this step):
    the work location is <run_root>/_train/<step>/<fingerprint>, so the weights one reference names are never
    overwritten by a rerun of another config, and a changed config never resumes the old config's checkpoints.
    """
    from cai_core.k8s.config import LauncherConfig

    lc = cfgs.get("train") or LauncherConfig()
    section = cfgs[stage]
    if lc.launcher == "local":
        import tempfile

        from cai_core.models.registry import resolve_model

        if storage.is_remote(model):  # weights a job wrote (a model.json reference): trained from a local copy
            with tempfile.TemporaryDirectory(prefix="cai-start-model-") as tmp:
                return stage_module(stage).run(section, Path(data), fetch_model(model, Path(tmp) / "model"),
                                               Path(out_dir))
        return stage_module(stage).run(section, Path(data), resolve_model(model), Path(out_dir))
    step = step or stage
    work = storage.join(lc.work_uri, step) if lc.work_uri and step != stage else (
        lc.work_uri or storage.join(run_root, "_train", step))
    if fingerprint:
        work = storage.join(work, fingerprint)
    if not storage.is_remote(work):
        raise ConfigError(f"train.launcher {lc.launcher}: the job's work location {work} is local; set output_dir "
                          "(or train.work_uri) to an s3:// prefix")
    data_uri = storage.join(work, "input", Path(data).name)
    storage.upload_file(str(data), data_uri)
    model_uri = model
    if not storage.is_remote(model) and os.path.isdir(model):
        model_uri = storage.join(work, "input", "model")
        storage.upload_dir(model, model_uri)
    from cai_core.runtime import model_ref
    from cai_core.runtime.run_root import run_id_of

    run_id = os.environ.get("CAI_RUN_ID") or run_id_of(run_root)  # run_root is resolved (engine.resolve_run_root)
    spec = job_spec(stage, section, lc, cluster_config(cfgs), run_id=run_id, data_uri=data_uri,
                    model_uri=model_uri, out_uri=work, step=step)
    launcher, manifest = launch(spec, lc, api_client=api_client, emit=emit)
    result = collect(work, Path(out_dir), model_by_reference=True)
    result.details.update({lc.launcher: manifest["metadata"]["name"]}, namespace=spec.namespace,
                          launcher_events=launcher.events, model_uri=model_ref.location(Path(out_dir)))
    return result
