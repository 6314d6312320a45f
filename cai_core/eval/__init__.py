"""Evaluation harness: MT-Bench helpfulness (`mt_bench`), attack success rate and
over-refusal (`safety`), and what they share: prompt sets, judge modes, intervals.

Every judged item ends with one explicit status (stable codes, see each module);
only items with status ``ok`` (and, where stated, ``empty_answer``) enter an average
or a rate, and every other status is counted, so a figure is never silently wrong.
"""
from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from cai_core import records
from cai_core.data import inputs
from cai_core.errors import InputError

#: Bundled prompt sets for `builtin:<name>` sources.
BUILTIN_SETS = ("red_team_eval", "benign_edgy", "eval_prompts", "prompts")


def data_path(*parts: str) -> Path:
    """A file under the bundled `cai_core/data` folder."""
    return Path(str(resources.files("cai_core.data").joinpath(*parts)))


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% for z = 1.96); (0, 1) when n = 0."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes}")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def is_remote(llm: Any) -> bool:
    return bool(getattr(llm, "remote", False))


def resolve_judge_mode(mode: str, judge: Any) -> str:
    """auto: read scores from log-probabilities with an in-process judge, parse the text of a remote one."""
    if mode == "auto":
        return "text" if is_remote(judge) else "logprobs"
    return mode


def load_prompt_set(source: str, field: str = "prompt", limit: int = 0, category_field: str = "category",
                    split: str = "train") -> list[dict]:
    """Rows {id, prompt, category} from a prompt set.

    `source`: anything `cai_core.data.inputs` reads: ``builtin:<name>`` (bundled: red_team_eval,
    benign_edgy, ...), a local JSONL path or ``s3://`` URI, a saved dataset directory, parquet files,
    or ``hf:<dataset id>[@split]`` (streamed; `split` is the default; e.g. ``hf:walledai/AdvBench`` with
    field ``prompt``). Empty prompts and duplicates are skipped; `limit` > 0 keeps the first `limit` rows.
    """
    opened = inputs.open_rows(source, builtins=BUILTIN_SETS, split=split)
    where = opened.where
    rows, seen = [], set()
    for line, row in opened.rows():
        if field not in row:
            raise InputError("missing", path=where, line=line, field=field)
        if not isinstance(row[field], str):
            raise InputError(f"expected a string, got {type(row[field]).__name__}", path=where, line=line, field=field)
        prompt = row[field].strip()
        if not prompt or prompt in seen:
            continue
        seen.add(prompt)
        category = row.get(category_field, "unknown")
        rows.append({"id": str(row.get("id") or records.row_id(prompt)), "prompt": prompt,
                     "category": category if isinstance(category, str) else "unknown"})
        if limit and len(rows) >= limit:
            break
    if not rows:
        raise InputError(f"no usable prompts in field '{field}'", path=where)
    return rows


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


__all__ = ["BUILTIN_SETS", "data_path", "is_remote", "load_prompt_set", "mean", "resolve_judge_mode",
           "wilson_interval"]
