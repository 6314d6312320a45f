"""Loading a RunConfig: one YAML loader, layered files, `--set` overrides.

`load_run_config`: the embedded defaults (`cai_core/configs/local.yaml`), then a
user YAML file, then `key.path=value` overrides. `load_cluster_run_config` adds
the built-in cluster config (`cai_core/configs/cluster.yaml`) between the
defaults and the user file, so a user's cluster config only states what differs.
"""
from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import yaml

from cai_core.config.run import RunConfig
from cai_core.errors import ConfigError, InputError


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2's floats and booleans: `1e-5` (a learning rate, or what Helm's toYaml writes)
    is a float, which YAML 1.1 reads as a string; only true/false are booleans, so `off`, `on`, `yes` and `no`
    stay strings (`judge.calibration: off`)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))

_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))

#: Mappings a user file replaces instead of merging into (a GKE node selector must not keep the
#: built-in NVIDIA label beside its own).
REPLACED_MAPPINGS = {("cluster", "node_selector"), ("cluster", "cpu_node_selector")}


def load_yaml(text: str):
    return yaml.load(text, Loader=_Loader)


def default_config_path() -> Path:
    return Path(str(resources.files("cai_core.configs") / "local.yaml"))


def default_cluster_config_path() -> Path:
    """The built-in cluster config (`cai compile` without --config)."""
    return Path(str(resources.files("cai_core.configs") / "cluster.yaml"))


def read_yaml(path: Path) -> dict[str, Any]:
    """A config file's mapping of sections ({} when empty)."""
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


def merge(base: dict, over: dict, path: tuple[str, ...] = ()) -> dict:
    """`over` merged into a copy of `base`, mapping by mapping (REPLACED_MAPPINGS are replaced whole)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        deep = isinstance(value, dict) and isinstance(out.get(key), dict) and (*path, key) not in REPLACED_MAPPINGS
        out[key] = merge(out[key], value, (*path, key)) if deep else value
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


def _load(layers: Sequence[Path], path: str | Path | None, overrides: Sequence[str]) -> RunConfig:
    data: dict = {}
    for layer in layers:
        data = merge(data, read_yaml(layer))
    if path is None:
        return RunConfig.from_dict(apply_overrides(data, overrides))
    try:
        data = merge(data, read_yaml(Path(path)))
        return RunConfig.from_dict(apply_overrides(data, overrides))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load_run_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Defaults, then the file at `path`, then `key.path=value` overrides."""
    return _load([default_config_path()], path, overrides)


def load_cluster_run_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """The embedded defaults, then the built-in cluster config, then `path` (if any), then overrides.

    A user's cluster config therefore only needs what differs from the built-in one.
    """
    return _load([default_config_path(), default_cluster_config_path()], path, overrides)


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
