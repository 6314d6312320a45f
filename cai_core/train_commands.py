"""`cai train sft|dpo`: one training stage, in this process or as a Kubeflow PyTorchJob.

    cai train sft --data runs/x/clean_revisions/sft.jsonl --out runs/x/_train/sft
    cai train dpo --data s3://b/run/judge/train.jsonl --model s3://b/run/sft/model \\
        --out s3://b/run/_train/dpo --launcher pytorchjob --config cluster.yaml
    cai train sft --launcher pytorchjob --data s3://... --out s3://... --dry-run   # the manifest, as YAML

Without ``--config`` the built-in default config is used (`load_run_config`);
``--config env:NAME`` reads the config (YAML or JSON) from the environment
variable NAME: that is how a PyTorchJob's pods get theirs.

``--launcher local`` (the default of ``train.launcher``) trains here. It is
also what every pod of a PyTorchJob runs under ``torchrun`` (RANK, WORLD_SIZE,
LOCAL_RANK, ... in the environment): with an ``s3://`` output

* the node's local rank 0 downloads the data, the model (when it is on S3) and
  the latest complete checkpoint into a node-local work directory
  (``CAI_TRAIN_WORKDIR``, the pod's /scratch), the other ranks wait at a barrier;
* after every save each node uploads its part of the checkpoint to
  ``<out>/checkpoints/checkpoint-<step>/node-<k>/`` (a directory with a
  manifest, written last); rank 0 then marks the checkpoint complete
  (``_COMPLETE.json``: step, nodes, world size) and deletes remote checkpoints
  beyond ``save_total_limit``; a restarted pod resumes from the latest complete
  one (node 0's part, which holds the model, trainer state and DeepSpeed's
  shared files, plus its own node's part);
* rank 0 uploads the result to ``<out>/final/`` (model/, train_log.jsonl,
  <stage>_config.json, result.json), manifest last.

``--launcher pytorchjob`` builds the job (cai_core/k8s/pytorchjob.py) from the
``train`` and ``cluster`` sections, creates it and watches it
(cai_core/k8s/launcher.py). `run_training_step` is the same for a pipeline
step (cai_core/runtime.py): it uploads the step's input data next to the
job's output, points the job at the model (the published SFT step for dpo),
and downloads ``<out>/final`` into the step's output directory.
"""
from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from cai_core import storage
from cai_core.errors import CaiError, ConfigError, InputError
from cai_core.stages.base import StageResult

STAGES = ("sft", "dpo")
COMPLETE = "_COMPLETE.json"
TRAIN_LOG_COPY = "cai_train_log.jsonl"
RESULT = "result.json"
TERMINATION_LOG = "/dev/termination-log"


def _stage_module(stage: str):
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
    from cai_core.cluster import ClusterConfig

    text = os.environ.get("CAI_CLUSTER_CONFIG")
    if text:
        try:
            return ClusterConfig.from_json(text)
        except (ValueError, ConfigError) as exc:
            raise ConfigError(f"env CAI_CLUSTER_CONFIG: {exc}") from None
    section = getattr(cfg, "cluster", None)
    return section if isinstance(section, ClusterConfig) else ClusterConfig()


def load_config(config: str | None, overrides: tuple[str, ...] | list[str] = ()):
    """`load_run_config`, also from ``env:NAME`` (the variable holds YAML or JSON)."""
    from cai_core.config import load_run_config

    if config and config.startswith("env:"):
        name = config[4:]
        text = os.environ.get(name)
        if text is None:
            raise InputError(f"--config {config}: environment variable {name} is not set")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(text, encoding="utf-8")
            try:
                return load_run_config(path, list(overrides))
            except CaiError as exc:
                raise type(exc)(str(exc).replace(str(path), f"env {name}")) from None
    return load_run_config(config, list(overrides))


# ----------------------------------------------------------------------------- ranks


@dataclass(frozen=True)
class Dist:
    """This process's place among the ranks (torchrun's environment; rank 0 of 1 without it)."""

    rank: int = 0
    local_rank: int = 0
    world: int = 1
    local_world: int = 1
    node: int = 0

    @classmethod
    def from_env(cls) -> "Dist":
        env = os.environ
        world = int(env.get("WORLD_SIZE", "1"))
        local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
        rank = int(env.get("RANK", "0"))
        node = int(env.get("GROUP_RANK", str(rank // max(local_world, 1))))
        return cls(rank, int(env.get("LOCAL_RANK", "0")), world, local_world, node)

    @property
    def nodes(self) -> int:
        return max(1, self.world // max(self.local_world, 1))


def _init_process_group(dist: Dist) -> None:
    """Start the process group early (the downloads need a barrier); the trainer then reuses it."""
    if dist.world <= 1:
        return
    import torch
    import torch.distributed as td

    if td.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(dist.local_rank)
    td.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=_dt.timedelta(hours=2))


def _barrier() -> None:
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.barrier()


# ----------------------------------------------------------------------------- storage helpers


def fetch_file(uri: str, dest_dir: Path) -> Path:
    """A local copy of one data file (a local path is used where it is)."""
    if not storage.is_remote(uri):
        path = Path(uri)
        if not path.exists():
            raise InputError("data file not found", path=str(path))
        return path
    dest = dest_dir / uri.rstrip("/").rsplit("/", 1)[-1]
    storage.download_file(uri, str(dest))
    return dest


def fetch_dir(uri: str, dest: Path) -> Path:
    """A verified local copy of a directory on S3: its own manifest, or the part of a parent's manifest under it.

    (A pipeline step is published with one manifest at its root: ``<run>/sft/_MANIFEST.json`` covers
    ``<run>/sft/model/...``.)
    """
    try:
        storage.download_dir(uri, str(dest))
        return dest
    except storage.NotFoundError:
        raise
    except CaiError as exc:
        if "no _MANIFEST" not in str(exc) and "not a complete directory" not in str(exc):
            raise
    parent, sub = uri.rstrip("/").rsplit("/", 1)
    try:
        files = storage.read_manifest(parent)
    except CaiError:
        raise InputError(f"{uri}: no complete directory there (no {storage.MANIFEST_NAME} in it or in {parent})")
    wanted = {rel: meta for rel, meta in files.items() if rel.startswith(sub + "/")}
    if not wanted:
        raise InputError(f"{uri}: the manifest of {parent} lists no files under {sub}/")
    for rel, meta in sorted(wanted.items()):
        target = dest / rel[len(sub) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        storage.download_file(storage.join(parent, rel), str(target))
        if target.stat().st_size != meta["size"] or _sha256_file(target) != meta["sha256"]:
            raise CaiError(f"{storage.join(parent, rel)}: downloaded copy does not match the manifest")
    return dest


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_model(model: str, dest: Path) -> str:
    """`model` as from_pretrained takes it: an s3:// directory downloaded to `dest`; anything else as is."""
    if storage.is_remote(model):
        return str(fetch_dir(model, dest))
    return model


def remote_checkpoints(out_uri: str) -> list[tuple[int, dict]]:
    """(step, _COMPLETE.json content) of every complete checkpoint under <out>/checkpoints, oldest first."""
    root = storage.join(out_uri, "checkpoints")
    found = []
    for uri in storage.list_files(root):
        if uri.endswith("/" + COMPLETE):
            info = json.loads(storage.read_text(uri))
            found.append((int(info["step"]), info))
    return sorted(found, key=lambda x: x[0])


def restore_checkpoint(out_uri: str, ckpt_dir: Path, work_out: Path, dist: Dist) -> int | None:
    """Download the latest complete checkpoint (node 0's part and this node's) into `ckpt_dir`; its step."""
    found = remote_checkpoints(out_uri)
    if not found:
        return None
    step, info = found[-1]
    if int(info.get("world_size", dist.world)) != dist.world:
        raise CaiError(f"{storage.join(out_uri, 'checkpoints', f'checkpoint-{step}')}: written by "
                       f"{info.get('world_size')} ranks, this job has {dist.world}; run with the same nodes x GPUs "
                       "(DeepSpeed's partitioned state is tied to it) or delete the checkpoints")
    base = storage.join(out_uri, "checkpoints", f"checkpoint-{step}")
    local = ckpt_dir / f"checkpoint-{step}"
    for part in sorted({0, dist.node}):
        storage.download_dir(storage.join(base, f"node-{part}"), str(local))
    (local / storage.MANIFEST_NAME).unlink(missing_ok=True)
    saved_log = local / TRAIN_LOG_COPY
    if saved_log.exists():
        work_out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(saved_log, work_out / "train_log.jsonl")
    return step


@functools.lru_cache(maxsize=None)
def _sync_class():
    from transformers import TrainerCallback

    class CheckpointSync(TrainerCallback):
        """After each save: every node uploads its part of the checkpoint, rank 0 marks it complete and prunes."""

        def __init__(self, out_uri: str, ckpt_dir: Path, work_out: Path, dist: Dist, keep: int):
            self.out_uri, self.ckpt_dir, self.work_out, self.dist, self.keep = out_uri, ckpt_dir, work_out, dist, keep
            self.uploaded: list[int] = []

        def on_save(self, args, state, control, **kwargs):
            step = state.global_step
            local = self.ckpt_dir / f"checkpoint-{step}"
            base = storage.join(self.out_uri, "checkpoints", f"checkpoint-{step}")
            _barrier()  # every rank has written its shard
            if self.dist.local_rank == 0 and local.is_dir():
                log_file = self.work_out / "train_log.jsonl"
                if self.dist.rank == 0 and log_file.exists():
                    shutil.copyfile(log_file, local / TRAIN_LOG_COPY)
                storage.upload_dir(str(local), storage.join(base, f"node-{self.dist.node}"))
                if self.dist.node != 0:  # the trainer rotates checkpoints on rank 0's node only
                    for old in self.ckpt_dir.glob("checkpoint-*"):
                        if old != local:
                            shutil.rmtree(old, ignore_errors=True)
            _barrier()
            if self.dist.rank == 0:
                storage.write_text(storage.join(base, COMPLETE), json.dumps(
                    {"step": step, "nodes": self.dist.nodes, "world_size": self.dist.world}, sort_keys=True))
                for old_step, _ in remote_checkpoints(self.out_uri)[:-self.keep]:
                    storage.delete_prefix(storage.join(self.out_uri, "checkpoints", f"checkpoint-{old_step}"))
                print(f"[cai train] checkpoint-{step} uploaded to {base}", flush=True)
            self.uploaded.append(step)

    return CheckpointSync


def checkpoint_sync(out_uri: str, ckpt_dir: Path, work_out: Path, dist: Dist, keep: int):
    return _sync_class()(out_uri, ckpt_dir, work_out, dist, keep)


def _work_dir(out_uri: str) -> Path:
    """Node-local and the same on every rank of the node (env CAI_TRAIN_WORKDIR, a PyTorchJob's /scratch)."""
    root = os.environ.get("CAI_TRAIN_WORKDIR")
    tag = hashlib.sha256(out_uri.encode()).hexdigest()[:12]
    return Path(root) / tag if root else Path(tempfile.gettempdir()) / f"cai-train-{tag}"


def publish_final(work_out: Path, out_uri: str, result: StageResult, stage: str) -> dict[str, str]:
    """Upload the model, log, config and result.json to <out>/final (manifest last); their relative paths."""
    final = work_out.parent / "final"
    shutil.rmtree(final, ignore_errors=True)
    final.mkdir(parents=True)
    rel: dict[str, str] = {}
    for key, path in result.outputs.items():
        path = Path(path)
        os.replace(path, final / path.name)
        rel[key] = path.name
    config_file = work_out / f"{stage}_config.json"
    if config_file.exists():
        os.replace(config_file, final / config_file.name)
    (final / RESULT).write_text(json.dumps({"outputs": rel, "metrics": result.finite_metrics(),
                                            "details": result.details}, indent=1, sort_keys=True, default=str))
    storage.upload_dir(str(final), storage.join(out_uri, "final"))
    return rel


# ----------------------------------------------------------------------------- training here


def train_local(stage: str, section: Any, data_uri: str, model: str, out_uri: str) -> StageResult:
    """Train in this process (one rank of many under torchrun); see module doc for remote URIs."""
    module = _stage_module(stage)
    remote = storage.is_remote(out_uri) or storage.is_remote(data_uri) or storage.is_remote(model)
    if not remote:
        return module.run(section, Path(data_uri), model, Path(out_uri))
    dist = Dist.from_env()
    remote_out = storage.is_remote(out_uri)
    work = _work_dir(out_uri)
    work_in, work_out = work / "in", (work / "out" if remote_out else Path(out_uri))
    ckpt_dir = work_out / "checkpoints"
    _init_process_group(dist)
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
    _barrier()
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
    _barrier()
    return result


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
             out_uri: str):
    """The JobSpec of a stage's PyTorchJob from the train (lc) and cluster sections."""
    from cai_core import deepspeed_configs
    from cai_core.k8s.pytorchjob import SECRET_ENV, JobSpec

    for what, uri in (("--data", data_uri), ("--out", out_uri)):
        if not storage.is_remote(uri):
            raise ConfigError(f"train.launcher pytorchjob: {what} {uri} is a local path, which the job's pods cannot "
                              "read; use an s3:// URI (or an s3:// output_dir for a pipeline run)")
    if os.path.exists(model_uri) or model_uri.startswith(("/", "./", "../", "~")):
        raise ConfigError(f"train.launcher pytorchjob: --model {model_uri} is a local path; use a hub id, 'tiny' or "
                          "an s3:// directory")
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
        stage=stage, run_id=run_id, namespace=namespace,
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
    )


def launch(spec, lc, api_client=None, emit=None):
    """Create (or re-attach to) the job and wait for it; returns the Launcher (its events) on success."""
    from cai_core.k8s.launcher import Launcher, api_client_from_environment
    from cai_core.k8s.pytorchjob import build_job

    manifest = build_job(spec)
    launcher = Launcher(api_client or api_client_from_environment(), spec.namespace,
                        poll_interval_s=lc.poll_interval_s, timeout_s=lc.timeout_s, stream_logs=lc.stream_logs,
                        emit=emit)
    launcher.run(manifest)
    return launcher, manifest


def collect(out_uri: str, out_dir: Path) -> StageResult:
    """Download <out>/final into `out_dir`; the StageResult the job wrote."""
    final = storage.join(out_uri, "final")
    try:
        storage.download_dir(final, str(out_dir))
    except CaiError as exc:
        raise CaiError(f"the training job succeeded but its output is missing or incomplete: {exc}") from None
    data = json.loads((out_dir / RESULT).read_text())
    return StageResult(outputs={k: out_dir / v for k, v in data["outputs"].items()}, metrics=data["metrics"],
                       details=data.get("details", {}))


def _published_model(run_root: str, local_model_dir: Path) -> str | None:
    """The s3:// copy of an upstream model step, when the published step is the very one we were given."""
    from cai_core.runtime import STAGE_FILE

    stage_file = local_model_dir.parent / STAGE_FILE
    if not stage_file.exists():
        return None
    stage = json.loads(stage_file.read_text())
    step, fp = stage.get("step"), stage.get("fingerprint")
    if not step:
        return None
    published = storage.join(run_root, step)
    try:
        remote = json.loads(storage.read_text(storage.join(published, STAGE_FILE)))
    except CaiError:
        return None
    if remote.get("fingerprint") != fp or not storage.exists(storage.join(published, storage.MANIFEST_NAME)):
        return None
    return storage.join(published, local_model_dir.name)


def run_training_step(stage: str, cfgs: dict[str, Any], data: Path, model: str, out_dir: Path, run_root: str,
                      emit=None, api_client=None) -> StageResult:
    """A pipeline step's training (cai_core/runtime.py): in process, or through a PyTorchJob.

    `model`: for sft the configured name ('tiny', a hub id, a local directory); for dpo the local directory of
    the SFT step's model. With ``train.launcher: pytorchjob`` the data file is uploaded to <work>/input/, a local
    model directory is replaced by its published s3:// copy (or uploaded), and the job's <work>/final is
    downloaded into `out_dir`.
    """
    from cai_core.k8s.config import LauncherConfig

    lc = cfgs.get("train") or LauncherConfig()
    section = cfgs[stage]
    if lc.launcher == "local":
        from cai_core.models.tiny import resolve_model

        return _stage_module(stage).run(section, Path(data), resolve_model(model), Path(out_dir))
    work = lc.work_uri or storage.join(run_root, "_train", stage)
    if not storage.is_remote(work):
        raise ConfigError(f"train.launcher pytorchjob: the job's work location {work} is local; set output_dir "
                          "(or train.work_uri) to an s3:// prefix")
    data_uri = storage.join(work, "input", Path(data).name)
    storage.upload_file(str(data), data_uri)
    model_uri = model
    if os.path.isdir(model):
        model_uri = _published_model(run_root, Path(model)) or storage.join(work, "input", "model")
        if model_uri == storage.join(work, "input", "model"):
            storage.upload_dir(model, model_uri)
    run_id = os.environ.get("CAI_RUN_ID") or run_root.rstrip("/").rsplit("/", 1)[-1]
    spec = job_spec(stage, section, lc, cluster_config(cfgs), run_id=run_id, data_uri=data_uri,
                    model_uri=model_uri, out_uri=work)
    launcher, manifest = launch(spec, lc, api_client=api_client, emit=emit)
    result = collect(work, Path(out_dir))
    result.details.update(pytorchjob=manifest["metadata"]["name"], namespace=spec.namespace,
                          launcher_events=launcher.events)
    return result


# ----------------------------------------------------------------------------- the command


def _write_termination_message(message: str) -> None:
    """Kubernetes shows /dev/termination-log as the container's termination message (the launcher reports it)."""
    if os.path.exists(TERMINATION_LOG) and os.access(TERMINATION_LOG, os.W_OK):
        try:
            with open(TERMINATION_LOG, "w", encoding="utf-8") as fh:
                fh.write(message[-4000:])
        except OSError:
            pass


@click.command("train")
@click.argument("stage", type=click.Choice(STAGES))
@click.option("--config", "config", metavar="FILE|env:NAME",
              help="Run config YAML (default: the built-in config); env:NAME reads it from a variable.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one config value, e.g. --set sft.max_steps=10 (repeatable; the value is read as YAML).")
@click.option("--launcher", type=click.Choice(["local", "pytorchjob"]),
              help="Train here, or as a Kubeflow PyTorchJob (default: train.launcher of the config).")
@click.option("--dry-run", is_flag=True, help="Print the PyTorchJob manifest (YAML) instead of creating it.")
@click.option("--data", "data", metavar="URI", help="Training data: sft rows or dpo pairs (JSONL; path or s3://).")
@click.option("--model", "model", metavar="URI",
              help="Model to train: 'tiny', a hub id, a directory or s3:// (default: model.name_or_path).")
@click.option("--out", "out", metavar="URI",
              help="Output: model/, train_log.jsonl, checkpoints (default: <output_dir>/<run id>/_train/<stage>).")
@click.option("--run-id", help="Run id of the job's name and labels (default: run_id of the config, else 'manual').")
def train_cmd(stage, config, overrides, launcher, dry_run, data, model, out, run_id):
    """Train one stage (sft or dpo) here or as a PyTorchJob on GPU nodes.

    \b
    cai train sft --data rows.jsonl --out out/sft
    cai train dpo --data pairs.jsonl --model out/sft/model --out out/dpo
    cai train sft --launcher pytorchjob --data s3://b/sft.jsonl --out s3://b/sft --dry-run
    """
    try:
        _train(stage, config, overrides, launcher, dry_run, data, model, out, run_id)
    except CaiError as exc:
        _write_termination_message(f"{type(exc).__name__}: {exc}")
        raise


def _train(stage, config, overrides, launcher, dry_run, data, model, out, run_id):
    cfg = load_config(config, overrides)
    lc = launcher_config(cfg)
    which = launcher or lc.launcher
    section = getattr(cfg, stage)
    if not data:
        raise click.UsageError("--data is required (the JSONL of sft rows or dpo pairs)")
    model = model or cfg.model.name_or_path
    run_id = run_id or cfg.run_id or "manual"
    out = out or storage.join(cfg.output_dir, run_id, "_train", stage)
    if which == "local":
        if dry_run:
            raise click.UsageError("--dry-run prints a PyTorchJob manifest: use it with --launcher pytorchjob")
        result = train_local(stage, section, data, model, out)
        if Dist.from_env().rank == 0:
            click.echo(json.dumps({"stage": stage, "outputs": {k: str(v) for k, v in result.outputs.items()},
                                   "metrics": result.finite_metrics(), "details": result.details},
                                  indent=1, sort_keys=True, default=str))
        return
    spec = job_spec(stage, section, lc, cluster_config(cfg), run_id=run_id, data_uri=data, model_uri=model,
                    out_uri=out)
    if dry_run:
        from cai_core.k8s.pytorchjob import build_job, to_yaml

        click.echo(to_yaml(build_job(spec)), nl=False)
        return
    launcher_obj, manifest = launch(spec, lc)
    click.echo(json.dumps({"stage": stage, "pytorchjob": manifest["metadata"]["name"],
                           "namespace": spec.namespace, "model": storage.join(out, "final", "model")}, indent=1))


def main() -> None:
    """`python -m cai_core.train_commands sft ...` (what `cai train` does, without the rest of the CLI)."""
    from cai_core.cli import run_command

    run_command(train_cmd)


if __name__ == "__main__":
    main()
