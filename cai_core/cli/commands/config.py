"""`cai config show|docs`: the effective config and the reference of every key."""
from __future__ import annotations

import click

from cai_core.cli.options import config_options, load_config


@click.group("config")
def config_group():
    """Inspect configuration."""


@config_group.command("show")
@config_options()
def config_show(config, overrides):
    """Print the effective config (defaults + file + overrides) as YAML."""
    from cai_core.config.loading import dump_yaml

    click.echo(dump_yaml(load_config(config, overrides)), nl=False)


@config_group.command("docs")
def config_docs():
    """Print the reference of every config key with its default and meaning (Markdown)."""
    from cai_core.config.docs import reference

    click.echo(reference(), nl=False)


def register(group: click.Group) -> None:
    group.add_command(config_group)
