"""prepare: read the user's prompts, check them, give every row a stable id.

Input is a JSONL file (local path, s3:// URI or `builtin:<name>` for the bundled
sets). Output rows are {"id", "prompt", "category"}; rows are dropped only
with a reason code (`empty_prompt`, `duplicate_prompt`, `over_max_prompts`).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cai_core import records, storage
from cai_core.config.base import ConfigBase, require
from cai_core.errors import InputError
from cai_core.runtime.artifacts import PROMPTS
from cai_core.stages.base import StageResult

BUILTIN_SETS = ("prompts", "eval_prompts")


@dataclass(frozen=True)
class PrepareConfig(ConfigBase):
    #: Prompts file: a local path, an s3:// URI, or builtin:prompts / builtin:eval_prompts.
    source: str = "builtin:prompts"
    #: Field of each JSON row that holds the prompt text.
    prompt_field: str = "prompt"
    #: Optional field holding a category label (e.g. red_team / helpful); absent -> "unknown".
    category_field: str = "category"
    #: Keep at most this many prompts (0 = all), taken in file order after de-duplication.
    max_prompts: int = 0

    def validate(self) -> None:
        require(self.max_prompts >= 0, "max_prompts", "must be >= 0 (0 keeps every prompt)")
        require(bool(self.prompt_field), "prompt_field", "must not be empty")


def resolve_source(source: str, workdir: Path) -> Path:
    """A local path for `source`, downloading s3:// URIs into `workdir`."""
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        if name not in BUILTIN_SETS:
            raise InputError(f"unknown built-in prompt set '{name}' (known: {', '.join(BUILTIN_SETS)})", path=source)
        return Path(str(resources.files("cai_core.data") / f"{name}.jsonl"))
    if storage.is_remote(source):
        local = workdir / Path(source).name
        storage.download_file(source, local)
        return local
    return Path(source)


def load_prompts(cfg: PrepareConfig, workdir: Path) -> tuple[list[dict], dict[str, float]]:
    path = resolve_source(cfg.source, workdir)
    raw = records.read_jsonl(path, {cfg.prompt_field: str})
    rows, seen = [], set()
    counts = {"rows_in": len(raw), "dropped_empty_prompt": 0, "dropped_duplicate_prompt": 0, "dropped_over_max_prompts": 0}
    for line, row in enumerate(raw, start=1):
        category = row.get(cfg.category_field, "unknown")
        if not isinstance(category, str):
            raise InputError(f"expected a string, got {type(category).__name__}", path=str(path), line=line,
                             field=cfg.category_field)
        prompt = row[cfg.prompt_field].strip()
        if not prompt:
            counts["dropped_empty_prompt"] += 1
            continue
        if prompt in seen:
            counts["dropped_duplicate_prompt"] += 1
            continue
        if cfg.max_prompts and len(rows) >= cfg.max_prompts:
            counts["dropped_over_max_prompts"] += 1
            continue
        seen.add(prompt)
        rows.append({"id": records.row_id(prompt), "prompt": prompt, "category": category})
    if not rows:
        raise InputError(f"no usable prompts in field '{cfg.prompt_field}' (all empty or duplicates)", path=str(path))
    counts["rows_out"] = len(rows)
    return rows, counts


def run(cfg: PrepareConfig, out_dir: Path) -> StageResult:
    with tempfile.TemporaryDirectory() as workdir:
        rows, counts = load_prompts(cfg, Path(workdir))
    out = out_dir / PROMPTS
    records.write_jsonl(out, rows)
    return StageResult(outputs={"prompts": out}, metrics=counts)
