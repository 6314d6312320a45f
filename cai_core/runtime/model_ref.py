"""A trained model passed by reference: a training step's artifact says where the weights are.

A training job (train.launcher pytorchjob or trainjob) writes the weights once, to
``<run_root>/_train/<step>/<fingerprint>/final/model/`` (covered by the manifest of ``final/``). The step's
artifact, which KFP copies into its pipeline root and the engine publishes to ``<run_root>/<step>/``, holds
``model.json`` in place of a ``model/`` directory: the weights' URI, the manifest that covers them, and their
file count and size. So the weights are never copied into the pipeline root, never republished under the step,
and never downloaded by the 1-CPU launcher pods; they are read where they are used: a DPO job reads them from
S3, a vLLM (or transformers) generation pod stages them to its own disk (cai_core.llm.vllm_stage).

A model trained in the step's own process (train.launcher local) stays a ``model/`` directory in the artifact;
`location` gives either.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cai_core import storage
from cai_core.errors import InputError
from cai_core.runtime.artifacts import MANIFEST_NAME, MODEL_DIR, MODEL_REF


def write(out_dir: Path, uri: str, files: dict[str, dict[str, Any]], manifest: str) -> Path:
    """`out_dir/model.json` for the weights at `uri` (`files`: their manifest entries, relative to `uri`)."""
    ref = {"uri": uri.rstrip("/"), "manifest": manifest, "files": len(files),
           "bytes": sum(int(meta["size"]) for meta in files.values())}
    path = Path(out_dir) / MODEL_REF
    path.write_text(json.dumps(ref, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read(artifact: str | Path) -> dict[str, Any] | None:
    """The reference in a step's artifact directory (local, or a published step on S3), or None when it holds
    no model.json."""
    path = storage.join(str(artifact), MODEL_REF)
    if not storage.exists(path):
        return None
    try:
        ref = json.loads(storage.read_text(path))
    except ValueError as exc:
        raise InputError(f"not a model reference: {exc}", path=path) from None
    if not isinstance(ref, dict) or not isinstance(ref.get("uri"), str) or not ref["uri"]:
        raise InputError("not a model reference (no 'uri')", path=path)
    return ref


def location(artifact: Path) -> str:
    """Where the model of a training step's artifact is: its ``model/`` directory, else the URI it refers to."""
    local = Path(artifact) / MODEL_DIR
    if local.is_dir():
        return str(local)
    ref = read(artifact)
    if ref is None:
        raise InputError(f"the artifact holds no trained model (neither {MODEL_DIR}/ nor {MODEL_REF})",
                         path=str(artifact))
    return ref["uri"]


def manifest_of(ref: dict[str, Any]) -> str:
    """The manifest that says the referenced weights are complete (``<final>/_MANIFEST.json``)."""
    return ref.get("manifest") or ref["uri"].rsplit("/", 1)[0] + "/" + MANIFEST_NAME
