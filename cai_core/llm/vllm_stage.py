"""Staging an ``s3://`` model on local disk before `vllm serve` reads it (air-gapped clusters: no hub).

`stage_model(uri, stage_dir)` downloads the model directory to ``<stage_dir>/<name>-<hash of uri>`` through
`cai_core.storage` (boto3's transfer manager: multipart, parallel) and returns the local path:

* a directory with its own ``_MANIFEST.json`` (written by `storage.upload_dir` / `copy_dir`) is downloaded
  with `storage.download_dir`, every file checked against the manifest;
* a directory inside a published step (``<run>/sft/model``: the manifest is ``<run>/sft/_MANIFEST.json``)
  downloads the files that manifest lists under it, each checked (size and sha256);
* a plain prefix (a model copied there with ``aws s3 sync``: no manifest) downloads every object under it.

A progress line (files, bytes, rate) is logged every `progress_s` seconds while the download runs, measured
on the local disk, so it covers all three ways. `unstage` removes the copy (the servers stop with it).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from pathlib import Path

from cai_core import storage
from cai_core.errors import CaiError
from cai_core.progress import log


def staged_path(uri: str, stage_dir: str) -> Path:
    """Where `uri` is staged: ``<stage_dir>/<last part of the uri>-<12 hex of its sha256>``."""
    name = uri.rstrip("/").rsplit("/", 1)[-1] or "model"
    return Path(stage_dir) / f"{name}-{hashlib.sha256(uri.encode()).hexdigest()[:12]}"


def _disk_usage(root: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            try:
                size += os.path.getsize(os.path.join(dirpath, name))
                files += 1
            except OSError:  # a part file renamed under us
                pass
    return files, size


def _plan(uri: str) -> tuple[str, dict[str, dict] | None]:
    """('own', manifest) | ('parent', files under it, relative to it) | ('plain', None)."""
    try:
        return "own", storage.read_manifest(uri)
    except storage.NotFoundError:
        pass
    except CaiError as exc:
        if "no _MANIFEST" not in str(exc) and "not a complete directory" not in str(exc):
            raise
    parent, _, sub = uri.rstrip("/").rpartition("/")
    if parent and parent not in ("s3:", "s3:/"):
        try:
            files = storage.read_manifest(parent)
        except CaiError:
            files = None
        if files:
            wanted = {rel[len(sub) + 1:]: meta for rel, meta in files.items() if rel.startswith(sub + "/")}
            if wanted:
                return "parent", wanted
    return "plain", None


def stage_model(uri: str, stage_dir: str, progress_s: float = 10.0) -> Path:
    """A verified local copy of the model directory at `uri` (s3://); its path."""
    dest = staged_path(uri, stage_dir)
    how, files = _plan(uri)
    total = sum(int(m.get("size", 0)) for m in files.values()) if files else 0
    if dest.exists():
        shutil.rmtree(dest)  # a copy left by an earlier, interrupted start: never trusted
    dest.parent.mkdir(parents=True, exist_ok=True)
    where = f"{uri} -> {dest}"
    log(f"vllm: staging {where}" + (f" ({len(files)} files, {total / 1e9:.2f} GB)" if files else ""))
    done = threading.Event()
    t0 = time.monotonic()

    def report() -> None:
        while not done.wait(progress_s):
            n, size = _disk_usage(dest.parent)  # download_dir fills a staging folder beside dest
            rate = size / max(1e-9, time.monotonic() - t0) / 1e6
            of = f" of {total / 1e9:.2f}" if total else ""
            log(f"vllm: staging {uri}: {size / 1e9:.2f}{of} GB, {n} files, {rate:.0f} MB/s")

    thread = threading.Thread(target=report, daemon=True, name="vllm-stage-progress")
    thread.start()
    try:
        if how == "own":
            storage.download_dir(uri, str(dest))
            (dest / storage.MANIFEST_NAME).unlink(missing_ok=True)
        elif how == "parent":
            parent = uri.rstrip("/").rpartition("/")[0]
            sub = uri.rstrip("/").rpartition("/")[2]
            for rel, meta in sorted(files.items()):  # type: ignore[union-attr]
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                storage.download_file(storage.join(parent, sub, rel), str(target))
                if target.stat().st_size != meta["size"] or storage.file_sha256(target) != meta["sha256"]:
                    raise CaiError(f"{storage.join(uri, rel)}: the staged copy does not match the manifest of "
                                   f"{parent}")
        else:
            prefix = uri.rstrip("/") + "/"
            objects = [u for u in storage.list_files(prefix) if u.startswith(prefix)]
            if not objects:
                raise CaiError(f"vllm: model {uri}: no objects under it (expected a model directory: config.json, "
                               "weights, tokenizer)")
            for obj in objects:
                target = dest / obj[len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                storage.download_file(obj, str(target))
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    finally:
        done.set()
        thread.join(5)
    n, size = _disk_usage(dest)
    seconds = time.monotonic() - t0
    log(f"vllm: staged {uri} in {seconds:.1f}s: {n} files, {size / 1e9:.2f} GB, "
        f"{size / max(1e-9, seconds) / 1e6:.0f} MB/s, at {dest}")
    return dest


def unstage(path: Path) -> None:
    """Remove a staged copy (the disk is the pod's: an emptyDir the size of the model)."""
    shutil.rmtree(path, ignore_errors=True)
