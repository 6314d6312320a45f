"""discover's input: reading the preference pairs (skips counted by reason) and splitting them.

The pairs come through `cai_core.data.inputs` (JSONL, dataset directories, parquet, hf:) and are mapped by
`cai_core.data.formats` (plain strings, HH transcripts, chat lists as in ultrafeedback_binarized).
Bad input: a missing or mistyped field, invalid JSON or UTF-8 stops the stage with an
InputError naming file, line and field. Rows are skipped and counted (`SKIP_REASONS`; `no_answer`: a side
without an assistant turn).
Usable pairs are cut into disjoint eval / test / propose parts by a seeded hash of their id.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from cai_core import records
from cai_core.data import formats, inputs
from cai_core.errors import ConfigError, InputError, StageError
from cai_core.progress import log
from cai_core.stages.discover.config import DiscoverConfig

SKIP_REASONS = ("no_answer", "empty_prompt", "empty_response", "identical", "duplicate_pair", "over_max_pairs")


def resolve_source(cfg: DiscoverConfig, workdir: Path | None = None) -> str:
    """The source to read (any `cai_core.data.inputs` source; s3:// files are downloaded as they are read)."""
    if not cfg.source:
        raise ConfigError("discover.source: set it to preference pairs (prompt, chosen, rejected): a JSONL file, a "
                          "dataset directory, parquet files or hf:<id>")
    return cfg.source


def read_pairs(cfg: DiscoverConfig, source: str | Path) -> tuple[list[dict], Counter, int]:
    """Usable pairs (stable ids, line numbers kept), counted skips by reason, and the number of rows read."""
    opened = inputs.open_rows(str(source))
    pairs, skipped, seen = [], Counter(), set()
    recipe, n_rows = None, 0
    for line, row in opened.rows():
        n_rows += 1
        if recipe is None:
            recipe = cfg.format if cfg.format != "auto" else formats.pair_format(row, cfg.chosen_field)
            if cfg.format == "auto":
                log(f"discover: {opened.where}: format auto -> {recipe}")
        got = formats.extract_pair(recipe, row, cfg.prompt_field, cfg.chosen_field, cfg.rejected_field,
                                   opened.where, line)
        if got is None:
            skipped["no_answer"] += 1
            continue
        prompt, chosen, rejected = (t.strip() for t in got)
        if not prompt:
            skipped["empty_prompt"] += 1
            continue
        if not chosen or not rejected:
            skipped["empty_response"] += 1
            continue
        if chosen == rejected:
            skipped["identical"] += 1
            continue
        pid = records.row_id("discover-pair", prompt, chosen, rejected)
        if pid in seen:
            skipped["duplicate_pair"] += 1
            continue
        seen.add(pid)
        pair = {"id": pid, "prompt": prompt, "chosen": chosen, "rejected": rejected, "line": line}
        if isinstance(row.get("id"), (str, int)) and not isinstance(row.get("id"), bool):
            pair["source_id"] = str(row["id"])
        elif isinstance(row.get("prompt_id"), str):
            pair["source_id"] = row["prompt_id"]
        pairs.append(pair)
    if n_rows == 0:
        raise InputError("no rows", path=opened.where)
    if cfg.max_pairs and len(pairs) > cfg.max_pairs:
        ordered = sorted(pairs, key=lambda p: records.row_id(cfg.seed, p["id"], "discover-sample"))
        keep = {p["id"] for p in ordered[:cfg.max_pairs]}
        skipped["over_max_pairs"] += len(pairs) - len(keep)
        pairs = [p for p in pairs if p["id"] in keep]
    return pairs, skipped, n_rows


def split_pairs(cfg: DiscoverConfig, pairs: list[dict], where: str) -> dict[str, list[dict]]:
    """Disjoint eval / test / propose parts by a seeded hash of the pair id (exact sizes)."""
    n = len(pairs)
    if n < 3:
        raise StageError(f"{where}: {n} usable pair(s); discovery needs at least 3 (one each to propose from, "
                         "test on and evaluate on), and far more for meaningful principles")
    ordered = sorted(pairs, key=lambda p: records.row_id(cfg.seed, p["id"], "discover-split"))
    n_eval = min(n - 2, max(1, round(n * cfg.eval_fraction)))
    n_test = min(n - n_eval - 1, max(1, round(n * cfg.test_fraction)))
    return {"eval": ordered[:n_eval], "test": ordered[n_eval:n_eval + n_test],
            "propose": ordered[n_eval + n_test:]}


__all__ = ["SKIP_REASONS", "read_pairs", "resolve_source", "split_pairs"]
