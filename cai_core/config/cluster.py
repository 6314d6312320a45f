"""Where the pipeline runs on a cluster: images, GPUs, node placement, secrets, retries.

Data only: `pipelines/cluster.py` turns it into KFP/Kubernetes settings and
`cai compile` / `cai submit` read it (`config.loading.load_cluster_run_config`).
`cai run` (kfp.local) ignores it.

Every check that can be made without a cluster is made here, when the config
is loaded: image references, Secret names and keys, step names, Kubernetes quantities and label values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

from cai_core.config.base import ConfigBase, require
from cai_core.errors import ConfigError
from cai_core.k8s.validate import (image_reference_problem, is_cpu_quantity, is_dns_label, is_dns_subdomain,
                                   is_env_name, is_image_tag, is_label_key, is_label_value, is_memory_quantity,
                                   is_registry, is_secret_key, looks_like_secret)
from cai_core.runtime.steps import GENERATION_STEPS, STEP_NAMES, TRAINING_STEPS

IMAGE_KINDS = ("core", "trainer", "vllm")
#: Keys that moved to the vllm section (the one place for the generation layout, locally and on the cluster).
MOVED_TO_VLLM = {"generation_gpus": "vllm.gpus", "tensor_parallel_size": "vllm.tensor_parallel_size",
                 "data_parallel_replicas": "vllm.data_parallel_replicas"}


def _known_steps(steps: Sequence[str], name: str) -> None:
    unknown = [s for s in steps if s not in STEP_NAMES]
    require(not unknown, name, f"unknown step(s) {', '.join(map(repr, unknown))}; steps are {', '.join(STEP_NAMES)}")


@dataclass(frozen=True)
class SecretRef(ConfigBase):
    """One key of an existing Kubernetes Secret (never the value itself)."""

    #: Name of the Secret in the run's namespace (a DNS subdomain, e.g. cai-openai).
    secret: str = ""
    #: Key inside the Secret's data (letters, digits, '-', '_', '.').
    key: str = ""

    def validate(self) -> None:
        require(is_dns_subdomain(self.secret), "secret",
                f"{self.secret!r} is not a valid Secret name (lower-case letters, digits, '-' and '.', "
                "starting and ending with a letter or digit)")
        require(is_secret_key(self.key), "key",
                f"{self.key!r} is not a valid Secret key (letters, digits, '-', '_' and '.')")


@dataclass(frozen=True)
class SecretsConfig(ConfigBase):
    """Which Secret keys become which environment variables of the pipeline pods (null: not used)."""

    #: The teacher's API key (env: teacher.api_key_env, OPENAI_API_KEY by default): clean, judge and evaluate pods.
    openai_api_key: SecretRef | None = None
    #: S3 access key id (env AWS_ACCESS_KEY_ID), every pod; null with IRSA / workload identity.
    aws_access_key_id: SecretRef | None = None
    #: S3 secret access key (env AWS_SECRET_ACCESS_KEY), every pod; null with IRSA / workload identity.
    aws_secret_access_key: SecretRef | None = None
    #: Hugging Face token for gated models (env HF_TOKEN): pods that load the policy model.
    hf_token: SecretRef | None = None

    def validate(self) -> None:
        require((self.aws_access_key_id is None) == (self.aws_secret_access_key is None), "aws_secret_access_key",
                "set both aws_access_key_id and aws_secret_access_key, or neither")

    def refs(self) -> dict[str, SecretRef]:
        """The configured references by field name."""
        return {name: ref for name, ref in (("openai_api_key", self.openai_api_key),
                                            ("aws_access_key_id", self.aws_access_key_id),
                                            ("aws_secret_access_key", self.aws_secret_access_key),
                                            ("hf_token", self.hf_token)) if ref is not None}


@dataclass(frozen=True)
class Toleration(ConfigBase):
    """A pod toleration (same fields as Kubernetes)."""

    #: Taint key to tolerate; empty with operator Exists tolerates every taint.
    key: str = ""
    #: Exists (any value) or Equal (value must match).
    operator: Literal["Exists", "Equal"] = "Exists"
    #: Taint value (only with operator Equal).
    value: str = ""
    #: Taint effect to tolerate; empty = all effects.
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = ""
    #: Seconds a NoExecute taint is tolerated before eviction; null = forever.
    toleration_seconds: int | None = None

    def validate(self) -> None:
        require(not self.key or is_label_key(self.key), "key", f"{self.key!r} is not a valid taint key")
        require(self.operator == "Equal" or not self.value, "value", "must be empty with operator Exists")
        require(self.toleration_seconds is None or self.effect == "NoExecute", "toleration_seconds",
                "only applies to effect NoExecute")


def _h100_selector() -> dict[str, str]:
    return {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def _gpu_tolerations() -> tuple[Toleration, ...]:
    return (Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"),)


def _default_timeouts() -> dict[str, int]:
    return {"sft": 172800, "dpo": 172800}


@dataclass(frozen=True)
class ClusterConfig(ConfigBase):
    #: Container registry holding the cai images (cai-core, cai-trainer, cai-vllm), e.g. ghcr.io/my-org.
    registry: str = "ghcr.io/cai-project"
    #: Image tag of all three images; empty = the cai package version ('+' becomes '-').
    tag: str = ""
    #: Full reference of the core image (CPU steps); empty = <registry>/cai-core:<tag>.
    core_image: str = ""
    #: Full reference of the trainer image (sft/dpo launchers and PyTorchJobs); empty = <registry>/cai-trainer:<tag>.
    trainer_image: str = ""
    #: Full reference of the vLLM image (generation steps); empty = <registry>/cai-vllm:<tag>.
    vllm_image: str = ""
    #: Image the generation steps (revise, pairs, gate, evaluate) run in: vllm, or trainer for in-process transformers.
    generation_image: Literal["vllm", "trainer", "core"] = "vllm"
    #: Image pull policy of every pod.
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = "IfNotPresent"
    #: Existing Secrets (type dockerconfigjson) to pull the images with.
    image_pull_secrets: tuple[str, ...] = ()

    # A generation pod's GPU count and vLLM layout live in the vllm section (vllm.gpus, vllm.tensor_parallel_size,
    # vllm.data_parallel_replicas): one setting for the pod's GPU limit and the servers started in it.
    #: Extended resource name of the GPUs.
    gpu_resource: str = "nvidia.com/gpu"
    #: Size of the memory-backed /dev/shm of generation pods (NCCL and vLLM workers need it).
    shm_size: str = "64Gi"
    #: Size limit of the emptyDir mounted at vllm.stage_dir in generation pods, where an s3:// model is
    #: staged before `vllm serve` (node disk; at least the model's size: 16 GB for 8B in bf16, 140 GB for 70B).
    generation_stage_size: str = "200Gi"
    #: What holds vllm.stage_dir: emptyDir (node disk, size-limited but not requested: KFP sets no
    #: ephemeral-storage request) or ephemeral (a generic ephemeral volume: a PVC of generation_stage_size the
    #: scheduler must place, deleted with the pod; needs a StorageClass that provisions dynamically).
    generation_stage_volume: Literal["emptyDir", "ephemeral"] = "emptyDir"
    #: StorageClass of the ephemeral staging volume; empty = the cluster's default StorageClass.
    generation_stage_storage_class: str = ""
    #: CPU request of a generation pod.
    generation_cpu: str = "32"
    #: Memory request and limit of a generation pod.
    generation_memory: str = "256Gi"
    #: Node labels a generation pod must match (the H100 nodes).
    node_selector: dict[str, str] = field(default_factory=_h100_selector)
    #: Taints a generation pod tolerates (GPU nodes are usually tainted).
    tolerations: tuple[Toleration, ...] = field(default_factory=_gpu_tolerations)
    #: CPU request of every other pod (prepare, clean, judge, report, the training launchers).
    cpu: str = "1"
    #: Memory request and limit of every other pod.
    memory: str = "4Gi"
    #: Node labels for the CPU pods; empty = anywhere.
    cpu_node_selector: dict[str, str] = field(default_factory=dict)
    #: Taints the CPU pods tolerate.
    cpu_tolerations: tuple[Toleration, ...] = ()

    #: Secret keys exposed to the pods as environment variables.
    secrets: SecretsConfig = SecretsConfig()
    #: Plain environment variables for every pod (e.g. AWS_ENDPOINT_URL_S3 for MinIO); never secrets.
    env: dict[str, str] = field(default_factory=dict)
    #: An existing ConfigMap mounted read-only into every pod (the Helm chart's: config and constitution); empty = none.
    config_map: str = ""
    #: Where config_map is mounted; point revise.constitution / judge.constitution at files below it.
    config_map_mount: str = "/etc/cai"

    #: Retries of a failed pod for the steps in retry_steps (0 = none).
    retries: int = 2
    #: Seconds before the first retry.
    retry_backoff_s: int = 60
    #: Each further retry waits this factor longer.
    retry_backoff_factor: float = 2.0
    #: Longest wait between two retries, in seconds.
    retry_backoff_max_s: int = 3600
    #: Steps that may fail transiently (S3, the teacher API, vLLM start-up) and are retried. Training
    #: launchers are not: a failed 8-GPU job is rarely transient (they re-attach to a running job themselves).
    retry_steps: tuple[str, ...] = ("prepare_prompts", "prepare_eval", "revise", "clean_revisions", "pairs",
                                    "clean_pairs", "judge", "gate", "evaluate", "report")
    #: Pod deadline in seconds for steps not in timeouts_s (0 = none).
    default_timeout_s: int = 21600
    #: Per-step pod deadline in seconds, overriding default_timeout_s (0 = none).
    timeouts_s: dict[str, int] = field(default_factory=_default_timeouts)
    #: Steps KFP must never serve from its cache: prepare reads external files whose content may
    #: change under an unchanged config (KFP would return stale outputs). The steps that read data sets
    #: (prepare_prompts, prepare_eval, discover) are never cached, listed here or not.
    no_cache_steps: tuple[str, ...] = ("prepare_prompts", "prepare_eval")

    #: KFP's pipeline root for this pipeline (where KFP keeps the steps' artifacts: data sets, metrics, model
    #: references; never weights), e.g. s3://team-bucket/kfp; empty = the backend's default (the namespace's
    #: kfp-launcher ConfigMap, else KFP's MinIO). An s3:// root needs its credentials in that ConfigMap's
    #: `providers` (KFP 2.2+, docs/operations.md).
    pipeline_root: str = ""
    #: Kubernetes namespace of the runs (the Kubeflow profile namespace in multi-user mode).
    namespace: str = "kubeflow"
    #: KFP experiment the runs are filed under.
    experiment: str = "cai"
    #: KFP API endpoint for `cai submit`, e.g. https://kubeflow.example.com/pipeline; empty = pass --host.
    kfp_host: str = ""
    #: Service account of the pipeline pods (needs the chart's Role); empty = KFP's default runner account.
    service_account: str = ""

    @classmethod
    def from_dict(cls, data, path: str = ""):
        for key in data or {}:
            if key in MOVED_TO_VLLM:
                raise ConfigError(f"{path + '.' if path else ''}{key}: moved to {MOVED_TO_VLLM[key]} (the vllm "
                                  "section holds the generation pods' GPUs and vLLM layout, locally and on the cluster)")
        return super().from_dict(data, path)

    def validate(self) -> None:
        require(is_registry(self.registry), "registry",
                f"{self.registry!r} is not a valid registry/repository prefix (e.g. ghcr.io/my-org)")
        require(not self.tag or is_image_tag(self.tag), "tag",
                f"{self.tag!r} is not a valid image tag (letters, digits, '_', '.', '-'; at most 128)")
        for kind in IMAGE_KINDS:
            problem = image_reference_problem(self.image(kind))
            name = f"{kind}_image" if getattr(self, f"{kind}_image") else "registry"
            require(problem is None, name, f"image {problem}")
        for name in self.image_pull_secrets:
            require(is_dns_subdomain(name), "image_pull_secrets", f"{name!r} is not a valid Secret name")

        require(is_label_key(self.gpu_resource), "gpu_resource", f"{self.gpu_resource!r} is not a resource name")
        for name in ("generation_cpu", "cpu"):
            value = getattr(self, name)
            require(is_cpu_quantity(value), name, f"{value!r} is not a CPU quantity (e.g. 4, 0.5, 500m)")
        for name in ("shm_size", "generation_stage_size", "generation_memory", "memory"):
            value = getattr(self, name)
            require(is_memory_quantity(value), name, f"{value!r} is not a memory quantity (e.g. 4Gi, 512Mi, 64G)")
        for name in ("node_selector", "cpu_node_selector"):
            for key, value in getattr(self, name).items():
                require(is_label_key(key), name, f"{key!r} is not a valid label key")
                require(is_label_value(value), name, f"{key}: {value!r} is not a valid label value")

        for key in self.env:
            require(is_env_name(key), "env", f"{key!r} is not a valid environment variable name")
            require(not looks_like_secret(key), "env",
                    f"{key!r} looks like a secret: reference it from a Secret under cluster.secrets instead")
        require(not self.config_map or is_dns_subdomain(self.config_map), "config_map",
                f"{self.config_map!r} is not a valid ConfigMap name")
        require(self.config_map_mount.startswith("/"), "config_map_mount", "must be an absolute path")

        require(0 <= self.retries <= 20, "retries", f"must be between 0 and 20, got {self.retries}")
        require(self.retry_backoff_s >= 0, "retry_backoff_s", "must be >= 0")
        require(self.retry_backoff_factor >= 1.0, "retry_backoff_factor", "must be >= 1")
        require(self.retry_backoff_max_s >= self.retry_backoff_s, "retry_backoff_max_s", "must be >= retry_backoff_s")
        _known_steps(self.retry_steps, "retry_steps")
        require(self.default_timeout_s >= 0, "default_timeout_s", "must be >= 0 (0 = no deadline)")
        _known_steps(list(self.timeouts_s), "timeouts_s")
        for step, seconds in self.timeouts_s.items():
            require(seconds >= 0, "timeouts_s", f"{step}: must be >= 0 (0 = no deadline), got {seconds}")
        _known_steps(self.no_cache_steps, "no_cache_steps")

        require(not self.pipeline_root or self.pipeline_root.startswith(("s3://", "minio://", "gs://")),
                "pipeline_root", f"must be an s3://, minio:// or gs:// URI (or empty), got {self.pipeline_root!r}")
        require(not self.generation_stage_storage_class or is_dns_subdomain(self.generation_stage_storage_class),
                "generation_stage_storage_class",
                f"{self.generation_stage_storage_class!r} is not a valid StorageClass name")
        require(is_dns_label(self.namespace), "namespace", f"{self.namespace!r} is not a valid namespace name")
        require(bool(self.experiment.strip()), "experiment", "must not be empty")
        require(not self.kfp_host or self.kfp_host.startswith(("http://", "https://")), "kfp_host",
                f"must start with http:// or https://, got {self.kfp_host!r}")
        require(not self.service_account or is_dns_subdomain(self.service_account), "service_account",
                f"{self.service_account!r} is not a valid service account name")

    # -- derived values ------------------------------------------------------------------

    def image_tag(self) -> str:
        import cai_core

        return self.tag or cai_core.__version__.replace("+", "-")

    def image(self, kind: str) -> str:
        """The reference of image `kind` (core, trainer or vllm)."""
        if kind not in IMAGE_KINDS:
            raise ValueError(f"unknown image kind {kind!r}")
        explicit = getattr(self, f"{kind}_image")
        return explicit or f"{self.registry}/cai-{kind}:{self.image_tag()}"

    def step_image(self, step: str) -> str:
        """The image step `step` runs in."""
        if step in GENERATION_STEPS:
            return self.image(self.generation_image)
        if step in TRAINING_STEPS:
            return self.image("trainer")
        return self.image("core")

    def timeout_for(self, step: str) -> int:
        return self.timeouts_s.get(step, self.default_timeout_s)
