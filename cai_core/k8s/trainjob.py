"""The trainer.kubeflow.org/v1alpha1 TrainJob (Kubeflow Trainer v2) of one training step.

`build_trainjob(spec)` returns the manifest as a plain dict, from the same `JobSpec` as the PyTorchJob
(pytorchjob.py: the name, labels, env, resources and spec hash are shared), written against the v2.3 API
(tests/data/crds/trainer-v2, vendored from kubeflow/trainer v2.3.0):

* ``spec.runtimeRef``: the runtime (``train.runtime``, default ``torch-distributed``, kind
  ``train.runtime_kind``, default ``ClusterTrainingRuntime``; ``TrainingRuntime`` for one in the namespace);
* ``spec.trainer``: ``image``, ``command``/``args`` (the same ``torchrun ... cai train <stage> --launcher
  local``; the torch plugin sets PET_NNODES / PET_NPROC_PER_NODE / PET_NODE_RANK / PET_MASTER_ADDR / PET_MASTER_PORT),
  ``env`` (config, run id, scratch paths, plain env, Secrets), ``numNodes``, ``numProcPerNode`` and
  ``resourcesPerNode`` (GPUs, CPU, memory, train.extra_resources);
* ``spec.runtimePatches`` (one, manager ``cai.io/launcher``): the JobSet's labels; on the ``node``
  replicatedJob's pods their labels and annotations (``train.pod_labels``, ``train.pod_annotations``),
  ``serviceAccountName``, ``nodeSelector``, ``tolerations``, ``imagePullSecrets``, the /dev/shm and /scratch
  volumes, and on the ``node`` container their ``volumeMounts``;
* ``metadata``: cai's labels (plus Kueue's ``kueue.x-k8s.io/queue-name``), the ``cai/spec-hash`` and
  ``cai/max-restarts`` annotations, an ownerReference when known.

What v1alpha1 has no field for is left to the runtime: the image pull policy, ``priorityClassName``, restart
and TTL policies (a JobSet's failurePolicy / the runtime's ttl). The trainer's pods are JobSet pods
``<job>-node-0-<i>-<suffix>``; the launcher finds rank 0 by label (`MASTER_SELECTOR`).
"""
from __future__ import annotations

from typing import Any

from cai_core.errors import ConfigError
from cai_core.k8s.pytorchjob import (ANNOTATION_MAX_RESTARTS, ANNOTATION_SPEC, SCRATCH, JobSpec, command, job_labels,
                                     job_name, labels, owner_references, pod_env, resources, spec_hash)

GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
API_VERSION = f"{GROUP}/{VERSION}"
RUNTIME_KINDS = ("ClusterTrainingRuntime", "TrainingRuntime")
#: The replicatedJob and container of the torch-distributed runtime that runs the trainer.
NODE = "node"
CONTAINER = "node"
PATCH_MANAGER = "cai.io/launcher"


def master_selector(name: str) -> str:
    """Label selector of a TrainJob's rank-0 pod: JobSet ``<name>``, replicatedJob ``node``, job 0, index 0."""
    return (f"jobset.sigs.k8s.io/jobset-name={name},jobset.sigs.k8s.io/replicatedjob-name={NODE},"
            "jobset.sigs.k8s.io/job-index=0,batch.kubernetes.io/job-completion-index=0")


def _pod_spec_patch(spec: JobSpec) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}},
                    {"name": "scratch", "emptyDir": ({"sizeLimit": spec.scratch_size} if spec.scratch_size else {})}],
        "containers": [{"name": CONTAINER, "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"},
                                                            {"name": "scratch", "mountPath": SCRATCH}]}],
    }
    if spec.service_account:
        pod["serviceAccountName"] = spec.service_account
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [{k: v for k, v in (("key", t.key or None), ("operator", t.operator),
                                                 ("value", t.value or None), ("effect", t.effect or None),
                                                 ("tolerationSeconds", t.toleration_seconds)) if v is not None}
                              for t in spec.tolerations]
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in spec.image_pull_secrets]
    return pod


def build_trainjob(spec: JobSpec) -> dict[str, Any]:
    """The TrainJob manifest as a plain dict (see module doc)."""
    from kubernetes import client as k

    if spec.nodes < 1 or spec.gpus_per_node < 1:
        raise ConfigError(f"train: nodes and gpus_per_node must be at least 1, got {spec.nodes} x {spec.gpus_per_node}")
    if spec.runtime_kind not in RUNTIME_KINDS:
        raise ConfigError(f"train.runtime_kind: {spec.runtime_kind!r} is not one of {', '.join(RUNTIME_KINDS)}")
    sanitize = k.ApiClient().sanitize_for_serialization
    cmd = command(spec)
    pod_meta: dict[str, Any] = {"labels": {**spec.pod_labels, **labels(spec)}}
    if spec.pod_annotations:
        pod_meta["annotations"] = dict(spec.pod_annotations)
    metadata: dict[str, Any] = {
        "name": job_name(spec.run_id, spec.step_name), "namespace": spec.namespace, "labels": job_labels(spec),
        "annotations": {"cai/data": spec.data_uri, "cai/model": spec.model_uri, "cai/out": spec.out_uri,
                        ANNOTATION_MAX_RESTARTS: str(spec.restarts)}}
    owners = owner_references(spec)
    if owners:
        metadata["ownerReferences"] = owners
    manifest = {
        "apiVersion": API_VERSION, "kind": KIND, "metadata": metadata,
        "spec": {
            "runtimeRef": {"apiGroup": GROUP, "kind": spec.runtime_kind, "name": spec.runtime},
            "trainer": {"image": spec.image, "command": cmd[:2], "args": cmd[2:], "env": sanitize(pod_env(spec)),
                        "numNodes": spec.nodes, "numProcPerNode": spec.gpus_per_node,
                        "resourcesPerNode": resources(spec)},
            "runtimePatches": [{"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {
                "metadata": {"labels": labels(spec)},
                "spec": {"replicatedJobs": [{"name": NODE, "template": {"spec": {"template": {
                    "metadata": pod_meta, "spec": _pod_spec_patch(spec)}}}}]}}}}],
        },
    }
    manifest["metadata"]["annotations"][ANNOTATION_SPEC] = spec_hash(manifest)
    return manifest


__all__ = ["API_VERSION", "CONTAINER", "GROUP", "KIND", "PLURAL", "RUNTIME_KINDS", "VERSION", "build_trainjob",
           "master_selector"]
