"""DeepSpeed configs: the packaged ones (zero2, zero3, zero3_offload) and yours.

A stage's ``deepspeed`` field holds one of:

* a packaged name: ``zero2``, ``zero3``, ``zero3_offload`` (``zero3-offload``
  also works), the JSON files in ``cai_core/configs/deepspeed/``;
* a path of a JSON file;
* the JSON itself (text starting with ``{``): the PyTorchJob launcher ships a
  custom file this way, so the pod needs no copy of it;
* empty: no DeepSpeed.

`load()` parses and checks it before any model is loaded or any GPU is asked
for: a file that is missing or not JSON is an `InputError` naming the file and
the line and column of the JSON error; a ZeRO-3 config without
``stage3_gather_16bit_weights_on_model_save: true`` is refused, because the
final model would then not be saved as one safetensors file (only as sharded
DeepSpeed state). ``"auto"`` values are left for the Hugging Face integration
to fill from the trainer arguments (batch sizes, gradient accumulation and
clipping, bf16, bucket sizes, optimizer hyper-parameters).

The packaged files:

* ``zero2`` — optimizer states and gradients partitioned, parameters
  replicated; the trainer's own AdamW (torch); fastest when the model's
  bf16 weights fit on every GPU.
* ``zero3`` — parameters partitioned too (loaded partitioned with
  ``zero.Init``); the trainer's own AdamW; 16-bit weights gathered on save.
* ``zero3_offload`` — ZeRO-3 with optimizer states and parameters in CPU
  memory and DeepSpeed's CPU AdamW (compiled on first use): for GPUs too
  small for the model, at a large cost in speed.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from cai_core.errors import ConfigError, InputError

PACKAGED = {"zero2": "zero2.json", "zero3": "zero3.json", "zero3_offload": "zero3_offload.json",
            "zero3-offload": "zero3_offload.json"}
GATHER_KEY = "stage3_gather_16bit_weights_on_model_save"


def packaged_path(name: str) -> Path:
    """The file of a packaged config (KeyError for an unknown name)."""
    return Path(str(resources.files("cai_core.configs") / "deepspeed" / PACKAGED[name]))


def describe(spec: str) -> str:
    """How `spec` is named in messages: the packaged name, the path, or 'inline JSON'."""
    spec = spec.strip()
    if spec.startswith("{"):
        return "inline DeepSpeed JSON"
    if spec in PACKAGED:
        return f"{spec} ({packaged_path(spec)})"
    return spec


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"DeepSpeed config is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                         path=where) from None
    if not isinstance(data, dict):
        raise InputError(f"DeepSpeed config must be a JSON object, got {type(data).__name__}", path=where)
    return data


def load(spec: str) -> dict[str, Any] | None:
    """The parsed, checked config for a stage's `deepspeed` value; None when it is empty."""
    spec = (spec or "").strip()
    if not spec:
        return None
    if spec.startswith("{"):
        data, where = _parse(spec, "inline DeepSpeed JSON"), "inline DeepSpeed JSON"
    else:
        path = packaged_path(spec) if spec in PACKAGED else Path(spec).expanduser()
        where = str(path)
        if not path.exists():
            known = ", ".join(sorted(PACKAGED))
            raise InputError(f"DeepSpeed config not found (use a packaged name: {known}, a JSON file or inline JSON)",
                             path=where)
        if path.is_dir():
            raise InputError("expected a DeepSpeed JSON file, got a directory", path=where)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise InputError("DeepSpeed config is not valid UTF-8", path=where) from None
        data = _parse(text, where)
    check(data, where)
    return data


def check(data: dict[str, Any], where: str) -> None:
    """Refuse configs the stages cannot use (see module doc)."""
    zero = data.get("zero_optimization", {})
    if not isinstance(zero, dict):
        raise InputError("'zero_optimization' must be a JSON object", path=where)
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise InputError(f"zero_optimization.stage must be 0, 1, 2 or 3, got {stage!r}", path=where)
    if stage == 3 and zero.get(GATHER_KEY) is not True:
        raise InputError(f"ZeRO-3 needs zero_optimization.{GATHER_KEY}: true, or the final model is not saved as "
                         "safetensors (only as partitioned DeepSpeed state)", path=where)
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        value = data.get(key, "auto")
        if value != "auto" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise InputError(f"{key} must be \"auto\" or a positive integer, got {value!r}", path=where)


def zero_stage(data: dict[str, Any] | None) -> int:
    """The ZeRO stage of a parsed config (0 without one)."""
    return int((data or {}).get("zero_optimization", {}).get("stage", 0))


def inline(spec: str) -> str:
    """`spec` as it must travel to another machine: packaged names stay, files become inline JSON."""
    spec = (spec or "").strip()
    if not spec or spec in PACKAGED or spec.startswith("{"):
        if spec.startswith("{"):
            load(spec)
        return spec
    return json.dumps(load(spec), separators=(",", ":"), sort_keys=True)


def validate_name(spec: str, field: str = "deepspeed") -> None:
    """Config-time check (no file access): an obviously wrong value is a ConfigError."""
    spec = (spec or "").strip()
    if spec and not spec.startswith("{") and spec not in PACKAGED and not (
            "/" in spec or "\\" in spec or spec.endswith(".json")):
        known = ", ".join(sorted(PACKAGED))
        raise ConfigError(f"{field}: {spec!r} is neither a packaged DeepSpeed config ({known}) nor a path "
                          "to a .json file")


__all__ = ["PACKAGED", "check", "describe", "inline", "load", "packaged_path", "validate_name", "zero_stage"]
