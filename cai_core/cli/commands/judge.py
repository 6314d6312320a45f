"""`cai judge`: judge preference pairs with a remote teacher (`judge_file`, the plain function behind it)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from cai_core.cli.options import load_config, teacher_options


def judge_file(pairs_path: str | os.PathLike, out_dir: str | os.PathLike, judge_cfg: Any = None, client_cfg: Any = None,
               journal_dir: str | None = None, *, base_url: str | None = None, model: str | None = None,
               storage_cfg: Any = None):
    """`cai judge PAIRS OUT_DIR`: judge every pair with the remote teacher.

    Writes train.jsonl, test.jsonl, verdicts.jsonl and metrics.json (judge metrics plus the
    teacher's request counts, tokens and estimated cost, prefixed ``teacher_``) to `out_dir`.
    Returns the judge's StageResult (with those metrics). Raises CaiError subclasses with one
    clear message for a bad input file, a wrong endpoint/key/model, or a blown error budget;
    rows whose request failed are kept with status ``request_failed`` and a reason.
    """
    from cai_core import records
    from cai_core.cli.teacher import teacher_model
    from cai_core.stages import judge

    cfg = judge_cfg if judge_cfg is not None else judge.JudgeConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    llm = teacher_model(client_cfg, out, journal_dir, base_url=base_url, model=model, storage_cfg=storage_cfg,
                        desc="judge")
    try:
        result = judge.run(cfg, Path(pairs_path), out, llm)
    finally:
        llm.close()
    result.metrics.update({f"teacher_{k}": v for k, v in llm.summary.metrics().items()})
    records.write_json(out / "metrics.json", result.metrics)
    return result


@click.command("judge")
@click.option("--pairs", "pairs_path", required=True, type=click.Path(dir_okay=False),
              help="JSONL with prompt, response_a and response_b per line (the pairs step's cleaned.jsonl works).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for train.jsonl, test.jsonl, verdicts.jsonl and metrics.json.")
@teacher_options("judge", "<out>/journal")
def judge_cmd(pairs_path, out_dir, config, overrides, base_url, model_name, journal_dir):
    """Judge preference pairs with a remote teacher under the constitution.

    \b
    Each pair is asked in both orders with a principle drawn per pair; pairs the
    judge cannot decide, or decides inconsistently, are dropped and counted. Prints
    the metrics (kept pairs, agreement, the teacher's requests, tokens and cost).
    """
    cfg = load_config(config, overrides)
    result = judge_file(pairs_path, out_dir, cfg.judge, cfg.teacher, journal_dir, base_url=base_url, model=model_name)
    click.echo(json.dumps(result.metrics, sort_keys=True))


def register(group: click.Group) -> None:
    group.add_command(judge_cmd)
