"""The `cai` group, its entry point and the one runner every entry point uses."""
from __future__ import annotations

import sys

import click

import cai_core
from cai_core.cli import commands
from cai_core.errors import run_program


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(cai_core.__version__, prog_name="cai")
def cli():
    """cai: Constitutional-AI post-training that does not collapse.

    \b
    A model answers prompts, critiques and revises its answers against a written
    constitution; the self-generated text is cleaned (no looping sentences, piled-up
    pleasantries or emoji) before SFT and before AI-judged DPO; the result is
    evaluated against the base model. Runs as a Kubeflow pipeline, locally with
    kfp.local or on a cluster.

    \b
    Start here:
      cai run                      the whole pipeline on the embedded tiny model
      cai init my.yaml             a commented starter config
      cai run --config my.yaml     your model, prompts and constitution
      cai run --ablation           none/rule/llm/hybrid cleaning x seeds, compared
      cai config show --set clean.variant=none   the effective config
      cai compile -o pipeline.yaml / cai submit --host URL   on a Kubeflow cluster
    """


commands.register(cli)


def run_command(command: click.Command) -> None:
    """Run a click command as a program: user errors end with one line and their exit status, no traceback."""
    def invoke() -> None:
        try:
            command.main(standalone_mode=False)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)

    run_program(invoke)


def main() -> None:
    run_command(cli)
