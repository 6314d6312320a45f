"""The kubeflow.org/v1 PyTorchJob of one training step.

`build_job(spec)` returns the manifest as a plain dict (built with
kubeflow-training's models and the kubernetes client's, serialised with
``ApiClient().sanitize_for_serialization``), ready for the CustomObjects API
or ``--dry-run``:

* ``Master`` (1 replica) plus ``Worker`` (nodes - 1 replicas) when nodes > 1;
  ``nprocPerNode`` = GPUs per node; every pod asks for ``nvidia.com/gpu`` x that;
* the container ``pytorch`` (the name the operator looks for) runs the trainer
  image: ``torchrun`` with the node count, rank and master address the
  operator puts in the environment (PET_* variables, with MASTER_ADDR / RANK as
  fallbacks for older operators) into ``cai train <stage> --launcher local``
  with the data, model and output URIs; the stage's config travels in the env
  variable CAI_TRAIN_CONFIG (JSON), a custom DeepSpeed file inlined;
* ``train.extra_resources`` (RDMA / EFA NICs) requested and limited on every pod;
* node selector, tolerations, a memory-backed /dev/shm (emptyDir, medium
  Memory), a /scratch emptyDir for the model, data and checkpoints before they
  go to S3, Secrets as env (S3 keys and HF token: ``secretKeyRef``), plain env;
* ``restartPolicy: OnFailure`` with ``runPolicy.backoffLimit`` on one node; on
  several ``ExitCode`` (128+ restarts, 1-127 fails), which ignores backoffLimit,
  so the launcher bounds it by the annotation ``cai/max-restarts`` (a restarted
  pod resumes from the last checkpoint on S3); ``cleanPodPolicy: Running``
  (finished pods stay for their logs until ``ttlSecondsAfterFinished``);
* labels ``app=cai``, ``cai/run-id``, ``cai/stage`` on the job and its pods (plus ``train.pod_labels``
  and ``train.pod_annotations`` on the pods: by default ``sidecar.istio.io/inject: "false"``; the
  ``train.priority_class``; Kueue's ``kueue.x-k8s.io/queue-name`` on the job for ``train.kueue_queue``),
  the annotation ``cai/spec-hash`` (what the launcher compares before it
  re-attaches to an existing job), and an ownerReference to the launcher pod or
  the workflow when known, so deleting a run deletes its jobs.

The name is deterministic: ``cai-<stage>-<run id, slugged>-<8 hex of
sha256(run id, stage)>``, at most 52 characters, so that the operator's pod
and service names (``<job>-worker-<i>``) stay valid DNS-1035 labels of at
most 63 characters.
"""
from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from cai_core.errors import ConfigError

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"
API_VERSION = f"{GROUP}/{VERSION}"
CONTAINER = "pytorch"  # the container name the training operator expects
PORT_NAME, PORT = "pytorchjob-port", 23456
LABEL_APP, LABEL_RUN, LABEL_STAGE = "app", "cai/run-id", "cai/stage"
#: The label Kueue reads on a job to queue it in a LocalQueue (train.kueue_queue).
LABEL_QUEUE = "kueue.x-k8s.io/queue-name"
ANNOTATION_SPEC = "cai/spec-hash"
#: The restarts the launcher allows a multi-node job (ExitCode ignores backoffLimit; see LauncherConfig.restarts).
ANNOTATION_MAX_RESTARTS = "cai/max-restarts"
CONFIG_ENV = "CAI_TRAIN_CONFIG"
MAX_NAME = 52  # + "-worker-NNN" stays within 63 (a DNS-1035 label: the operator's service names)
SCRATCH = "/scratch"
#: Secret fields (cluster.SecretsConfig) the training pods get, and their env names. Never the teacher's key.
SECRET_ENV = {"aws_access_key_id": "AWS_ACCESS_KEY_ID", "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
              "hf_token": "HF_TOKEN"}


@dataclass(frozen=True)
class JobSpec:
    """Everything `build_job` needs, already resolved (see `cai_core.training.launch.job_spec`)."""

    stage: str
    run_id: str
    namespace: str
    image: str
    data_uri: str
    model_uri: str
    out_uri: str
    config: dict[str, Any]
    nodes: int = 1
    gpus_per_node: int = 8
    gpu_resource: str = "nvidia.com/gpu"
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple = ()
    shm_size: str = "64Gi"
    scratch_size: str = ""
    cpu: str = "64"
    memory: str = "640Gi"
    secret_env: dict[str, tuple[str, str]] = field(default_factory=dict)  # env -> (secret, key)
    env: dict[str, str] = field(default_factory=dict)
    service_account: str = ""
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    restarts: int = 2
    ttl_after_finished_s: int = 86400
    owner: dict[str, str] | None = None  # {"apiVersion", "kind", "name", "uid"}
    pod_annotations: dict[str, str] = field(default_factory=dict)
    pod_labels: dict[str, str] = field(default_factory=dict)
    priority_class: str = ""
    kueue_queue: str = ""
    extra_resources: dict[str, str] = field(default_factory=dict)
    #: The pipeline step when it is not the stage (a preference round's `dpo_r2`): the job's name, labels and
    #: CAI_STEP, so the rounds of one run never share a job.
    step: str = ""
    #: TrainJob only (trainjob.py): the runtime it runs against (train.runtime, train.runtime_kind).
    runtime: str = "torch-distributed"
    runtime_kind: str = "ClusterTrainingRuntime"

    @property
    def step_name(self) -> str:
        return self.step or self.stage


def restart_policy(nodes: int) -> str:
    """OnFailure for one node (bounded by backoffLimit); ExitCode for several (see LauncherConfig.restarts)."""
    return "OnFailure" if nodes == 1 else "ExitCode"


def slug(text: str) -> str:
    """Lower-case letters, digits and single dashes."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def job_name(run_id: str, stage: str) -> str:
    """Deterministic, DNS-1123/1035 safe, at most MAX_NAME characters, unique per (run id, stage)."""
    digest = hashlib.sha256(json.dumps([run_id, stage]).encode()).hexdigest()[:8]
    head = f"cai-{slug(stage)}"
    room = MAX_NAME - len(head) - len(digest) - 2
    run = slug(run_id)[:room].strip("-")
    return f"{head}-{run}-{digest}" if run else f"{head}-{digest}"


def job_labels(spec: JobSpec) -> dict[str, str]:
    """The PyTorchJob's own labels: cai's, and Kueue's queue name when train.kueue_queue is set."""
    return {**labels(spec), **({LABEL_QUEUE: spec.kueue_queue} if spec.kueue_queue else {})}


def labels(spec: JobSpec) -> dict[str, str]:
    run = spec.run_id if len(spec.run_id) <= 63 and re.match(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
                                                             spec.run_id) else slug(spec.run_id)[:63].strip("-")
    return {LABEL_APP: "cai", LABEL_RUN: run, LABEL_STAGE: spec.step_name}


def command(spec: JobSpec) -> list[str]:
    """bash -c 'exec torchrun ... cai train <stage> --launcher local ...' (the PET_* env comes from the operator)."""
    cai = ["cai", "train", spec.stage, "--launcher", "local", "--config", f"env:{CONFIG_ENV}",
           "--data", spec.data_uri, "--model", spec.model_uri, "--out", spec.out_uri]
    script = (
        "exec torchrun"
        f' --nnodes "${{PET_NNODES:-{spec.nodes}}}"'
        f' --nproc-per-node "${{PET_NPROC_PER_NODE:-{spec.gpus_per_node}}}"'
        ' --node-rank "${PET_NODE_RANK:-${RANK:-0}}"'
        ' --master-addr "${PET_MASTER_ADDR:-${MASTER_ADDR:-localhost}}"'
        f' --master-port "${{PET_MASTER_PORT:-${{MASTER_PORT:-{PORT}}}}}"'
        " --no-python " + " ".join(shlex.quote(a) for a in cai)
    )
    return ["/bin/bash", "-c", script]


def pod_env(spec: JobSpec) -> list:
    """The training container's env (V1EnvVar): the stage config, run id, step, scratch paths, plain env, Secrets.

    Shared by the PyTorchJob and the TrainJob (trainjob.py)."""
    from kubernetes import client as k

    env = [k.V1EnvVar(name=CONFIG_ENV, value=json.dumps(spec.config, sort_keys=True, separators=(",", ":"))),
           k.V1EnvVar(name="CAI_RUN_ID", value=spec.run_id),
           k.V1EnvVar(name="CAI_STEP", value=spec.step_name),
           k.V1EnvVar(name="CAI_TRAIN_WORKDIR", value=f"{SCRATCH}/work"),
           k.V1EnvVar(name="CAI_CACHE_DIR", value=f"{SCRATCH}/cai-cache"),
           k.V1EnvVar(name="HF_HOME", value=f"{SCRATCH}/hf"),
           k.V1EnvVar(name="PYTHONUNBUFFERED", value="1")]
    env += [k.V1EnvVar(name=name, value=value) for name, value in sorted(spec.env.items())]
    env += [k.V1EnvVar(name=name, value_from=k.V1EnvVarSource(
        secret_key_ref=k.V1SecretKeySelector(name=secret, key=key))) for name, (secret, key) in
        sorted(spec.secret_env.items())]
    return env


def resources(spec: JobSpec) -> dict[str, dict[str, str]]:
    """Requests and limits of every training pod: CPU, memory, GPUs, train.extra_resources, and the node disk
    /scratch stages the model, data and checkpoints on (ephemeral-storage, requested when train.scratch_size
    is set, so the scheduler places the pod where that much disk is free)."""
    gpus = str(spec.gpus_per_node)
    disk = {"ephemeral-storage": spec.scratch_size} if spec.scratch_size else {}
    return {"requests": {"cpu": spec.cpu, "memory": spec.memory, spec.gpu_resource: gpus, **disk,
                         **spec.extra_resources},
            "limits": {"memory": spec.memory, spec.gpu_resource: gpus, **spec.extra_resources}}


def owner_references(spec: JobSpec) -> list[dict[str, Any]] | None:
    if not spec.owner:
        return None
    return [{"apiVersion": spec.owner["apiVersion"], "kind": spec.owner["kind"], "name": spec.owner["name"],
             "uid": spec.owner["uid"], "controller": False, "blockOwnerDeletion": False}]


def _pod_template(spec: JobSpec):
    from kubernetes import client as k

    env = pod_env(spec)
    res = resources(spec)
    container = k.V1Container(
        name=CONTAINER,
        image=spec.image,
        image_pull_policy=spec.image_pull_policy,
        command=command(spec)[:2],
        args=command(spec)[2:],
        env=env,
        ports=[k.V1ContainerPort(name=PORT_NAME, container_port=PORT)],
        resources=k.V1ResourceRequirements(requests=res["requests"], limits=res["limits"]),
        volume_mounts=[k.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
                       k.V1VolumeMount(name="scratch", mount_path=SCRATCH)],
    )
    volumes = [
        k.V1Volume(name="dshm", empty_dir=k.V1EmptyDirVolumeSource(medium="Memory", size_limit=spec.shm_size)),
        k.V1Volume(name="scratch", empty_dir=k.V1EmptyDirVolumeSource(size_limit=spec.scratch_size or None)),
    ]
    tolerations = [k.V1Toleration(key=t.key or None, operator=t.operator, value=t.value or None,
                                  effect=t.effect or None, toleration_seconds=t.toleration_seconds)
                   for t in spec.tolerations]
    pod = k.V1PodSpec(
        containers=[container],
        volumes=volumes,
        node_selector=dict(spec.node_selector) or None,
        tolerations=tolerations or None,
        service_account_name=spec.service_account or None,
        image_pull_secrets=[k.V1LocalObjectReference(name=n) for n in spec.image_pull_secrets] or None,
        priority_class_name=spec.priority_class or None,
    )
    meta = k.V1ObjectMeta(labels={**spec.pod_labels, **labels(spec)}, annotations=dict(spec.pod_annotations) or None)
    return k.V1PodTemplateSpec(metadata=meta, spec=pod)


def spec_hash(manifest: dict[str, Any]) -> str:
    """Hash of what the job does (its spec), to tell a job of this config from one of another config (any kind)."""
    return hashlib.sha256(json.dumps(manifest["spec"], sort_keys=True).encode()).hexdigest()[:16]


def build_job(spec: JobSpec) -> dict[str, Any]:
    """The PyTorchJob manifest as a plain dict (see module doc)."""
    from kubeflow.training import (KubeflowOrgV1PyTorchJob, KubeflowOrgV1PyTorchJobSpec, KubeflowOrgV1ReplicaSpec,
                                   KubeflowOrgV1RunPolicy)
    from kubernetes import client as k

    if spec.nodes < 1 or spec.gpus_per_node < 1:
        raise ConfigError(f"train: nodes and gpus_per_node must be at least 1, got {spec.nodes} x {spec.gpus_per_node}")
    template = _pod_template(spec)
    policy = restart_policy(spec.nodes)
    replicas = {"Master": KubeflowOrgV1ReplicaSpec(replicas=1, restart_policy=policy, template=template)}
    if spec.nodes > 1:
        replicas["Worker"] = KubeflowOrgV1ReplicaSpec(replicas=spec.nodes - 1, restart_policy=policy,
                                                      template=template)
    owner = None
    if spec.owner:
        owner = [k.V1OwnerReference(api_version=spec.owner["apiVersion"], kind=spec.owner["kind"],
                                    name=spec.owner["name"], uid=spec.owner["uid"], controller=False,
                                    block_owner_deletion=False)]
    job = KubeflowOrgV1PyTorchJob(
        api_version=API_VERSION,
        kind=KIND,
        metadata=k.V1ObjectMeta(name=job_name(spec.run_id, spec.step_name), namespace=spec.namespace,
                                labels=job_labels(spec), owner_references=owner,
                                annotations={"cai/data": spec.data_uri, "cai/model": spec.model_uri,
                                             "cai/out": spec.out_uri, ANNOTATION_MAX_RESTARTS: str(spec.restarts)}),
        spec=KubeflowOrgV1PyTorchJobSpec(
            nproc_per_node=str(spec.gpus_per_node),
            pytorch_replica_specs=replicas,
            run_policy=KubeflowOrgV1RunPolicy(clean_pod_policy="Running", backoff_limit=spec.restarts,
                                              ttl_seconds_after_finished=spec.ttl_after_finished_s),
        ),
    )
    manifest = k.ApiClient().sanitize_for_serialization(job)
    manifest["metadata"]["annotations"][ANNOTATION_SPEC] = spec_hash(manifest)
    return manifest


def to_yaml(manifest: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False, width=120)


__all__ = ["API_VERSION", "GROUP", "JobSpec", "KIND", "PLURAL", "VERSION", "build_job", "job_name", "labels",
           "owner_references", "pod_env", "resources", "spec_hash", "to_yaml"]
