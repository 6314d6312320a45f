"""`cai metrics`: the collapse metrics of a JSONL dataset."""
from __future__ import annotations

import json

import click


@click.command("metrics")
@click.option("--in", "in_path", required=True, type=click.Path(dir_okay=False), help="JSONL input.")
@click.option("--field", default="response", show_default=True, help="Field holding the text.")
def metrics_cmd(in_path, field):
    """Collapse metrics of a JSONL dataset as JSON (rep-n, distinct-n, tail-loop rate)."""
    from cai_core import records
    from cai_core.metrics.repetition import collapse_metrics

    rows = records.read_jsonl(in_path, {field: str})
    click.echo(json.dumps(collapse_metrics([r[field] for r in rows]), indent=2, sort_keys=True))


def register(group: click.Group) -> None:
    group.add_command(metrics_cmd)
