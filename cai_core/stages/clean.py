"""clean (Stage 2): clean self-generated text before anything trains on it.

Used at two points of the pipeline: the final revisions before SFT, and both
responses of every pair before judging. Each cleaned field `f` gets
`f_cleaned` (the text to use downstream) and `f_cleanup` (what changed and
why: `changed`, `reasons` as stable codes, `variant`). The stage reports rows,
changed rows and per-reason counts.

Variants: `none` passes text through (the collapsing baseline); `rule` is the
deterministic cleaner of `cai_core.cleaning.rule`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cai_core import records
from cai_core.cleaning.rule import RuleCleanConfig, rule_clean
from cai_core.configbase import ConfigBase, require
from cai_core.errors import InputError
from cai_core.progress import Progress
from cai_core.stages.base import StageResult


@dataclass(frozen=True)
class CleanConfig(ConfigBase):
    #: none (pass through, the collapsing baseline) or rule (deterministic cleaner).
    variant: Literal["none", "rule"] = "rule"
    #: Settings of the rule cleaner.
    rule: RuleCleanConfig = RuleCleanConfig()
    #: Field holding the prompt (its language is the target language of the text).
    prompt_field: str = "prompt"

    def validate(self) -> None:
        require(bool(self.prompt_field), "prompt_field", "must not be empty")


def clean_text(cfg: CleanConfig, text: str, prompt: str | None) -> tuple[str, dict]:
    if cfg.variant == "none":
        return text, {"variant": "none", "changed": False, "reasons": []}
    outcome = rule_clean(text, prompt, cfg.rule)
    return outcome.text, {"variant": cfg.variant, "changed": outcome.changed, "reasons": list(outcome.reasons)}


def clean_rows(cfg: CleanConfig, rows: list[dict], fields: tuple[str, ...], path: str) -> tuple[list[dict], dict]:
    counts: Counter = Counter()
    progress = Progress("clean", total=len(rows))
    out = []
    for line, row in enumerate(rows, start=1):
        row = dict(row)
        prompt = row.get(cfg.prompt_field)
        for field in fields:
            value = row.get(field)
            if not isinstance(value, str):
                raise InputError("missing" if value is None else f"expected a string, got {type(value).__name__}",
                                 path=path, line=line, field=field)
            cleaned, record = clean_text(cfg, value, prompt if isinstance(prompt, str) else None)
            row[f"{field}_cleaned"] = cleaned
            row[f"{field}_cleanup"] = record
            counts["texts"] += 1
            counts["changed"] += record["changed"]
            counts.update(f"reason_{reason}" for reason in record["reasons"])
            if not cleaned.strip():
                counts["emptied"] += 1
        out.append(row)
        progress.update()
    return out, {"rows": len(rows), **counts}


def run(cfg: CleanConfig, rows_path: Path, out_dir: Path, fields: tuple[str, ...]) -> StageResult:
    rows = records.read_jsonl(rows_path)
    cleaned, counts = clean_rows(cfg, rows, fields, str(rows_path))
    out = out_dir / "cleaned.jsonl"
    records.write_jsonl(out, cleaned)
    texts = counts.get("texts", 0)
    metrics = {k: float(v) for k, v in counts.items()}
    metrics["changed_rate"] = counts.get("changed", 0) / texts if texts else 0.0
    return StageResult(outputs={"rows": out}, metrics=metrics)


def to_sft_rows(rows: list[dict], field: str = "final") -> list[dict]:
    """(prompt, cleaned final revision) rows for SFT; rows whose text was emptied by cleaning are left out."""
    return [{"id": r["id"], "prompt": r["prompt"], "response": r[f"{field}_cleaned"]}
            for r in rows if r[f"{field}_cleaned"].strip()]
