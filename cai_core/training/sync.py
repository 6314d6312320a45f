"""Training's files on S3: the inputs a node downloads, the checkpoints every node uploads and resumes from,
and the final result rank 0 publishes and a pipeline step collects (see the package docstring for the layout)."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from cai_core import storage
from cai_core.errors import CaiError, InputError
from cai_core.runtime.artifacts import MODEL_DIR, MODEL_REF
from cai_core.stages.base import StageResult
from cai_core.training.distributed import Dist, barrier

COMPLETE = "_COMPLETE.json"
TRAIN_LOG_COPY = "cai_train_log.jsonl"
RESULT = "result.json"


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
        download_checked(storage.join(parent, rel), meta, dest / rel[len(sub) + 1:])
    return dest


def download_checked(uri: str, meta: dict, target: Path) -> None:
    """One file of a manifest, checked against its entry (size, sha256)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    storage.download_file(uri, str(target))
    if target.stat().st_size != meta["size"] or storage.file_sha256(target) != meta["sha256"]:
        raise CaiError(f"{uri}: downloaded copy does not match the manifest")


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
            barrier()  # every rank has written its shard
            if self.dist.local_rank == 0 and local.is_dir():
                log_file = self.work_out / "train_log.jsonl"
                if self.dist.rank == 0 and log_file.exists():
                    shutil.copyfile(log_file, local / TRAIN_LOG_COPY)
                storage.upload_dir(str(local), storage.join(base, f"node-{self.dist.node}"))
                if self.dist.node != 0:  # the trainer rotates checkpoints on rank 0's node only
                    for old in self.ckpt_dir.glob("checkpoint-*"):
                        if old != local:
                            shutil.rmtree(old, ignore_errors=True)
            barrier()
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


def work_dir(out_uri: str) -> Path:
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


def collect(out_uri: str, out_dir: Path, model_by_reference: bool = False) -> StageResult:
    """<out>/final into `out_dir`; the StageResult the job wrote.

    `model_by_reference`: the weights (final/model/) stay where the job wrote them and `out_dir` gets
    model.json in their place (cai_core.runtime.model_ref); every other file is downloaded and checked."""
    final = storage.join(out_uri, "final")
    try:
        if not model_by_reference:
            storage.download_dir(final, str(out_dir))
        else:
            _collect_by_reference(final, Path(out_dir))
    except CaiError as exc:
        raise CaiError(f"the training job succeeded but its output is missing or incomplete: {exc}") from None
    data = json.loads((out_dir / RESULT).read_text())
    outputs = {k: out_dir / v for k, v in data["outputs"].items()}
    if model_by_reference and "model" in outputs:
        outputs["model"] = out_dir / MODEL_REF
    return StageResult(outputs=outputs, metrics=data["metrics"], details=data.get("details", {}))


def _collect_by_reference(final: str, out_dir: Path) -> None:
    from cai_core.runtime import model_ref

    files = storage.read_manifest(final)
    weights = {rel[len(MODEL_DIR) + 1:]: meta for rel, meta in files.items() if rel.startswith(MODEL_DIR + "/")}
    if not weights:
        raise CaiError(f"{final}: the manifest lists no {MODEL_DIR}/ files")
    out_dir.mkdir(parents=True, exist_ok=True)
    for rel, meta in sorted(files.items()):
        if rel.startswith(MODEL_DIR + "/"):
            continue
        download_checked(storage.join(final, rel), meta, out_dir / rel)
    model_ref.write(out_dir, storage.join(final, MODEL_DIR), weights, storage.join(final, storage.MANIFEST_NAME))
