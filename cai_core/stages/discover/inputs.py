"""discover's input: reading the preference pairs (skips counted by reason) and splitting them.

Bad input: a missing or mistyped field, invalid JSON or UTF-8 stops the stage with an
InputError naming file, line and field. Rows are skipped and counted (`SKIP_REASONS`).
Usable pairs are cut into disjoint eval / test / propose parts by a seeded hash of their id.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from cai_core import records, storage
from cai_core.errors import ConfigError, StageError
from cai_core.stages.discover.config import DiscoverConfig

SKIP_REASONS = ("empty_prompt", "empty_response", "identical", "duplicate_pair", "over_max_pairs")


def resolve_source(cfg: DiscoverConfig, workdir: Path) -> Path:
    """A local path for `cfg.source` (downloading an s3:// URI into `workdir`)."""
    if not cfg.source:
        raise ConfigError("discover.source: set it to a JSONL file of preference pairs (prompt, chosen, rejected)")
    if storage.is_remote(cfg.source):
        local = workdir / "source_pairs.jsonl"
        storage.download_file(cfg.source, str(local))
        return local
    return Path(cfg.source)


def read_pairs(cfg: DiscoverConfig, path: Path) -> tuple[list[dict], Counter, int]:
    """Usable pairs (stable ids, line numbers kept), counted skips by reason, and the number of rows read."""
    schema = {cfg.prompt_field: str, cfg.chosen_field: str, cfg.rejected_field: str}
    rows = records.read_jsonl(path, schema)
    pairs, skipped, seen = [], Counter(), set()
    for line, row in _with_lines(path, rows):
        prompt = row[cfg.prompt_field].strip()
        chosen, rejected = row[cfg.chosen_field].strip(), row[cfg.rejected_field].strip()
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
        pairs.append(pair)
    if cfg.max_pairs and len(pairs) > cfg.max_pairs:
        ordered = sorted(pairs, key=lambda p: records.row_id(cfg.seed, p["id"], "discover-sample"))
        keep = {p["id"] for p in ordered[:cfg.max_pairs]}
        skipped["over_max_pairs"] += len(pairs) - len(keep)
        pairs = [p for p in pairs if p["id"] in keep]
    return pairs, skipped, len(rows)


def _with_lines(path: Path, rows: list[dict]) -> list[tuple[int, dict]]:
    """Pair each row with its 1-based line number (read_jsonl skips blank lines)."""
    lines = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if raw.decode("utf-8", errors="replace").strip():  # blank as iter_jsonl sees it
                lines.append(lineno)
    return list(zip(lines, rows))


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
