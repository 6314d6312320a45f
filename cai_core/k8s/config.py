"""`LauncherConfig`: where the sft and dpo stages train, and the PyTorchJob's shape.

The run config's ``train`` section. ``launcher: local`` (the laptop default)
trains in the step's own process; ``launcher: pytorchjob`` makes the step a
small launcher that creates a Kubeflow PyTorchJob on GPU nodes, streams its
master's log, and collects the trained model from S3 (cai_core/k8s/launcher.py);
``launcher: trainjob`` does the same with a Kubeflow Trainer v2 TrainJob
(trainer.kubeflow.org/v1alpha1) against the ``runtime`` (a ClusterTrainingRuntime
``torch-distributed`` by default; cai_core/k8s/trainjob.py).

Fields left empty (or null) take their value from the run's ``cluster``
section (cai_core/config/cluster.py, owned by the cluster settings): the trainer
image, node selector, tolerations, /dev/shm size, Secret references, plain
env, image pull settings and namespace. So a cluster config only states what
differs for training.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cai_core.config.base import ConfigBase, require
from cai_core.config.cluster import SecretsConfig, Toleration
from cai_core.k8s.validate import (image_reference_problem, is_cpu_quantity, is_dns_label, is_dns_subdomain,
                                   is_env_name, is_label_key, is_label_value, is_memory_quantity, looks_like_secret)
from cai_core.k8s.pytorchjob import LABEL_APP, LABEL_QUEUE, LABEL_RUN, LABEL_STAGE

#: Labels cai sets itself on the job and its pods (train.pod_labels may not change them).
RESERVED_LABELS = (LABEL_APP, LABEL_RUN, LABEL_STAGE, LABEL_QUEUE)


def _no_sidecar() -> dict[str, str]:
    # Istio in a Kubeflow profile namespace injects a sidecar that keeps the master pod Running after training
    # (without native sidecars), so the PyTorchJob never succeeds: kubeflow/trainer#1637.
    return {"sidecar.istio.io/inject": "false"}


@dataclass(frozen=True)
class LauncherConfig(ConfigBase):
    """Where sft and dpo train: in process, or as a PyTorchJob or TrainJob on GPU nodes."""

    #: local: train in this process (CPU or the local GPUs); pytorchjob: launch and watch a Kubeflow PyTorchJob
    #: (training-operator v1); trainjob: a Kubeflow Trainer v2 TrainJob (trainer.kubeflow.org/v1alpha1).
    launcher: Literal["local", "pytorchjob", "trainjob"] = "local"
    #: trainjob only: the training runtime the TrainJob runs against (spec.runtimeRef.name); it must run torch
    #: (mlPolicy torch) with a replicatedJob and container named node, as Trainer's torch-distributed does.
    runtime: str = "torch-distributed"
    #: trainjob only: ClusterTrainingRuntime (cluster-wide, the Trainer install's) or TrainingRuntime (one in the
    #: job's namespace).
    runtime_kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = "ClusterTrainingRuntime"
    #: Nodes of the job: 1 = a master pod only; N = a master and N-1 workers (torchrun across nodes).
    nodes: int = 1
    #: GPUs per pod: nprocPerNode and the nvidia.com/gpu limit of every pod.
    gpus_per_node: int = 8
    #: Trainer image of the job's pods; empty = env CAI_TRAINER_IMAGE, else the cluster's trainer image.
    image: str = ""
    #: Namespace of the job; empty = the launcher pod's own namespace, else cluster.namespace.
    namespace: str = ""
    #: Node labels the job's pods must match; null = cluster.node_selector (the H100 nodes).
    node_selector: dict[str, str] | None = None
    #: Taints the job's pods tolerate; null = cluster.tolerations.
    tolerations: tuple[Toleration, ...] | None = None
    #: Size of each pod's memory-backed /dev/shm (NCCL); empty = cluster.shm_size.
    shm_size: str = ""
    #: CPU request of each pod.
    cpu: str = "64"
    #: Memory request and limit of each pod (ZeRO-3 checkpoints pass through host memory).
    memory: str = "640Gi"
    #: Size of each pod's scratch volume (/scratch: the model, data and checkpoints before upload): its emptyDir's
    #: limit and the pod's ephemeral-storage request (the scheduler needs that much free node disk); empty = neither.
    scratch_size: str = ""
    #: Secret keys given to the job's pods (S3 keys, HF token; never the teacher key); null = cluster.secrets.
    secrets: SecretsConfig | None = None
    #: Plain environment variables of the job's pods, over cluster.env (e.g. NCCL_DEBUG=INFO); never secrets.
    env: dict[str, str] = field(default_factory=dict)
    #: Service account of the job's pods (IRSA / workload identity for S3); empty = cluster.service_account.
    service_account: str = ""
    #: Restarts of a failed job; the trainer resumes from the last checkpoint. One node: restartPolicy OnFailure
    #: bounded by backoffLimit. Several nodes: restartPolicy ExitCode (exit codes 128+ such as OOMKilled or a
    #: preempted node restart, 1-127 fail at once), which ignores backoffLimit, so the launcher counts the job's
    #: Restarting transitions and deletes it past this many.
    restarts: int = 2
    #: Seconds the launcher waits for the job before deleting it; 0 = no limit of its own (the pod deadline applies).
    timeout_s: int = 0
    #: Seconds between status checks (each a watch of at most this long).
    poll_interval_s: float = 10.0
    #: Seconds a finished job (and its failed pods, for their logs) is kept before the operator removes it.
    ttl_after_finished_s: int = 86400
    #: Where the job reads its inputs and writes checkpoints and the model (its weights stay there: the step's
    #: artifact refers to them); empty = <run root>/_train/<step>. A pipeline step adds /<its fingerprint>.
    work_uri: str = ""
    #: Stream the master pod's log into this process's log.
    stream_logs: bool = True
    #: Annotations of every pod of the job. The default keeps Istio's sidecar out: with it the master pod stays
    #: Running after training in a profile namespace and the job never succeeds (kubeflow/trainer#1637).
    pod_annotations: dict[str, str] = field(default_factory=_no_sidecar)
    #: Extra labels of every pod of the job (app, cai/run-id and cai/stage are cai's own).
    pod_labels: dict[str, str] = field(default_factory=dict)
    #: PriorityClass of the job's pods (priorityClassName); empty = the cluster's default.
    priority_class: str = ""
    #: Extra resources of every pod, requested and limited alike: RDMA / EFA NICs for multi-node NCCL, e.g.
    #: {"vpc.amazonaws.com/efa": "32"} (p5) or {"rdma/ib": "8"}; values are whole numbers.
    extra_resources: dict[str, str] = field(default_factory=dict)
    #: Kueue LocalQueue that admits the job (label kueue.x-k8s.io/queue-name on the PyTorchJob); empty = no Kueue.
    kueue_queue: str = ""

    def validate(self) -> None:
        require(is_dns_subdomain(self.runtime), "runtime", f"{self.runtime!r} is not a valid training runtime name")
        require(1 <= self.nodes <= 512, "nodes", f"must be between 1 and 512, got {self.nodes}")
        require(1 <= self.gpus_per_node <= 64, "gpus_per_node", f"must be between 1 and 64, got {self.gpus_per_node}")
        if self.image:
            problem = image_reference_problem(self.image)
            require(problem is None, "image", f"image {problem}")
        require(not self.namespace or is_dns_label(self.namespace), "namespace",
                f"{self.namespace!r} is not a valid namespace name")
        for key, value in (self.node_selector or {}).items():
            require(is_label_key(key), "node_selector", f"{key!r} is not a valid label key")
            require(is_label_value(value), "node_selector", f"{key}: {value!r} is not a valid label value")
        require(is_cpu_quantity(self.cpu), "cpu", f"{self.cpu!r} is not a CPU quantity (e.g. 64, 500m)")
        for name in ("memory", "shm_size", "scratch_size"):
            value = getattr(self, name)
            require(not value and name != "memory" or is_memory_quantity(value), name,
                    f"{value!r} is not a memory quantity (e.g. 64Gi)")
        for key in self.env:
            require(is_env_name(key), "env", f"{key!r} is not a variable name")
            require(not looks_like_secret(key), "env",
                    f"{key!r} looks like a secret: reference it from a Secret under train.secrets instead")
        require(0 <= self.restarts <= 100, "restarts", f"must be between 0 and 100, got {self.restarts}")
        require(self.timeout_s >= 0, "timeout_s", "must be 0 (none) or more")
        require(0.05 <= self.poll_interval_s <= 600, "poll_interval_s", "must be between 0.05 and 600 seconds")
        require(self.ttl_after_finished_s >= 0, "ttl_after_finished_s", "must be 0 or more")
        for key, value in self.pod_labels.items():
            require(is_label_key(key), "pod_labels", f"{key!r} is not a valid label key")
            require(is_label_value(value), "pod_labels", f"{key}: {value!r} is not a valid label value")
            require(key not in RESERVED_LABELS, "pod_labels",
                    f"{key!r} is set by cai itself" + (" (use train.kueue_queue)" if key == LABEL_QUEUE else ""))
        for key, value in self.extra_resources.items():
            require(is_label_key(key) and "/" in key, "extra_resources",
                    f"{key!r} is not an extended resource name (domain/name, e.g. vpc.amazonaws.com/efa)")
            require(str(value).isdigit() and int(value) > 0, "extra_resources",
                    f"{key}: {value!r} is not a whole number above 0")
        for key in self.pod_annotations:
            require(is_label_key(key), "pod_annotations", f"{key!r} is not a valid annotation key")
        require(not self.priority_class or is_dns_subdomain(self.priority_class), "priority_class",
                f"{self.priority_class!r} is not a valid PriorityClass name")
        require(not self.kueue_queue or (is_dns_subdomain(self.kueue_queue) and is_label_value(self.kueue_queue)),
                "kueue_queue", f"{self.kueue_queue!r} is not a valid LocalQueue name (a label value)")


__all__ = ["LauncherConfig"]
