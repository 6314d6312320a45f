"""The run configuration: one frozen section per stage plus the shared sections.

Built in three layers: the embedded defaults (`cai_core/configs/local.yaml`),
then a user YAML file (`--config`), then `--set a.b.c=value` overrides (the
value is parsed as YAML: `--set sft.learning_rate=1e-4`, `--set clean.variant=none`).
Unknown keys and wrong types fail naming the full key path.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from cai_core.cluster import ClusterConfig
from cai_core.configbase import ConfigBase, require
from cai_core.k8s.config import LauncherConfig
from cai_core.errors import ConfigError, InputError
from cai_core.stages.clean import CleanConfig
from cai_core.stages.compare import CompareConfig
from cai_core.stages.discover import DiscoverConfig
from cai_core.stages.dpo import DPOStageConfig
from cai_core.stages.evaluate import EvaluateConfig
from cai_core.stages.gate import GateConfig
from cai_core.stages.judge import JudgeConfig
from cai_core.stages.pairs import PairsConfig
from cai_core.stages.prepare import PrepareConfig
from cai_core.stages.report import ReportConfig
from cai_core.stages.revise import ReviseConfig
from cai_core.stages.sft import SFTStageConfig
from cai_core.storage import StorageConfig


@dataclass(frozen=True)
class ModelConfig(ConfigBase):
    #: The policy model: "tiny" (built offline on first use), a local directory, or a hub id (cluster).
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
    teacher: TeacherConfig = TeacherConfig()
    storage: StorageConfig = StorageConfig()
    #: Training prompts (red-team and helpful).
    prompts: PrepareConfig = PrepareConfig()
    #: Held-out prompts for evaluation.
    eval_prompts: PrepareConfig = PrepareConfig(source="builtin:eval_prompts")
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
    #: Where sft and dpo train: in process (local) or as a Kubeflow PyTorchJob (pytorchjob), and the job's shape.
    train: LauncherConfig = LauncherConfig()
    #: Cluster settings (images, GPUs, placement, secrets); ignored by `cai run`.
    cluster: ClusterConfig = ClusterConfig()

    def validate(self) -> None:
        require(all(c.isalnum() or c in "-_." for c in self.run_id), "run_id",
                "may hold only letters, digits, '-', '_' and '.'")


SECTIONS = [f for f in RunConfig.field_types() if f not in ("run_id", "output_dir")]


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-5` as a string; configs are full of such rates, so read it as a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(text: str):
    return yaml.load(text, Loader=_Loader)


def default_config_path() -> Path:
    return Path(str(resources.files("cai_core.configs") / "local.yaml"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("config file not found", path=str(path)) from None
    except UnicodeDecodeError:
        raise InputError("config file is not valid UTF-8", path=str(path)) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"not valid YAML ({getattr(exc, 'problem', exc)})", path=str(path),
                         line=mark.line + 1 if mark else None) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError("a config file must be a mapping of sections", path=str(path))
    return data


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {item!r}: empty key in '{key}'")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    data = copy.deepcopy(data)
    for item in overrides:
        parts, value = parse_override(item)
        node = data
        for part in parts[:-1]:
            if not isinstance(node.setdefault(part, {}), dict):
                raise ConfigError(f"{'.'.join(parts)}: '{part}' is a value, not a section")
            node = node[part]
        node[parts[-1]] = value
    return data


def load_run_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Defaults, then the file at `path`, then `key.path=value` overrides."""
    data = _read_yaml(default_config_path())
    if path is not None:
        try:
            data = _merge(data, _read_yaml(Path(path)))
            return RunConfig.from_dict(apply_overrides(data, overrides))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return RunConfig.from_dict(apply_overrides(data, overrides))


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)

