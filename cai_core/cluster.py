"""Where the pipeline runs on a cluster: images, GPUs, node placement, secrets.

Data only: `pipelines/` turns it into KFP/Kubernetes settings. `cai run`
(kfp.local) ignores it.
"""
from __future__ import annotations

from dataclasses import dataclass

from cai_core.configbase import ConfigBase


@dataclass(frozen=True)
class ClusterConfig(ConfigBase):
    #: Container registry holding the cai images (cai-core, cai-trainer, cai-vllm).
    registry: str = "ghcr.io/cai-project"
    #: Image tag; empty = the cai package version.
    tag: str = ""
