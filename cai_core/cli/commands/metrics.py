"""`cai metrics`: the collapse metrics of a JSONL dataset."""
from __future__ import annotations

import json

import click


@click.command("metrics")
@click.option("--in", "in_path", required=True,
              help="Input: a JSONL file, a saved dataset directory, parquet/arrow files, s3:// or hf:<id>[@split].")
@click.option("--field", default="response", show_default=True, help="Field holding the text.")
def metrics_cmd(in_path, field):
    """Collapse metrics of a dataset as JSON (rep-n, distinct-n, tail-loop rate)."""
    from cai_core import records
    from cai_core.data.inputs import open_rows
    from cai_core.metrics.repetition import collapse_metrics

    opened = open_rows(in_path)
    texts = [records.check_row(row, {field: str}, opened.where, line)[field] for line, row in opened.rows()]
    if not texts:
        from cai_core.errors import InputError
        raise InputError("no rows", path=opened.where)
    click.echo(json.dumps(collapse_metrics(texts), indent=2, sort_keys=True))


def register(group: click.Group) -> None:
    group.add_command(metrics_cmd)
