"""`cai init`: a commented starter config."""
from __future__ import annotations

from pathlib import Path

import click

from cai_core.cli.options import bundled_configs
from cai_core.errors import CaiError


@click.command("init")
@click.argument("path", type=click.Path(dir_okay=False), default="cai.yaml")
@click.option("--config", "name", type=click.Choice(sorted(bundled_configs())), default="local", show_default=True,
              help="The bundled config to start from.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init_cmd(path, name, force):
    """Write a commented starter config to PATH (default cai.yaml)."""
    target = Path(path)
    if target.exists() and not force:
        raise CaiError(f"{target} exists; pass --force to overwrite it")
    target.write_text(bundled_configs()[name].read_text(encoding="utf-8"), encoding="utf-8")
    click.echo(f"wrote {target}; run it with: cai run --config {target}")


def register(group: click.Group) -> None:
    group.add_command(init_cmd)
