"""The `cai` command."""
from __future__ import annotations

import datetime as _dt
import json
import sys
import time
from pathlib import Path

import click

import cai_core
from cai_core.errors import CaiError

_SET_HELP = "Override one config value, e.g. --set sft.learning_rate=1e-4 (repeatable; the value is read as YAML)."


def _load(config, overrides, **top):
    from cai_core.config import load_run_config

    extra = [f"{k}={v}" for k, v in top.items() if v is not None]
    return load_run_config(config, list(overrides) + extra)


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


@cli.command()
@click.option("--config", "config", type=click.Path(dir_okay=False), help="Run config YAML (default: the embedded laptop config).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--run-id", help="Name of the run folder; rerunning an id reuses its completed steps.")
@click.option("--output-dir", help="Where runs go: a directory or s3://bucket/prefix (default: ./runs).")
@click.option("--verbose", is_flag=True, help="Show KFP's full task logs, not only progress lines.")
@click.option("--ablation", is_flag=True,
              help="Run the whole pipeline per cleaning variant and seed (ablation.variants x ablation.seeds) "
                   "and compare them in ablation.html.")
def run(config, overrides, run_id, output_dir, verbose, ablation):
    """Run the whole pipeline with kfp.local (no cluster, GPU or API key needed).

    Output goes to <output-dir>/<run-id>/: one folder per step, report.html,
    report.md, metrics.json and pipeline.log. Rerunning with the same --run-id
    reuses every step whose config and inputs are unchanged.
    """
    from cai_core import storage
    from cai_core.records import row_id
    from cai_core.stages.prepare import load_prompts
    from cai_pipelines.local import run_local

    cfg = _load(config, overrides, run_id=run_id, output_dir=output_dir)
    if not cfg.run_id:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        cfg = cfg.replace(run_id=f"{stamp}-{row_id(cfg.to_dict())[:6]}")
    for section in (cfg.prompts, cfg.eval_prompts):  # fail on bad input before any step starts
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            load_prompts(section, Path(tmp))
    run_root = storage.join(cfg.output_dir, cfg.run_id)
    if storage.is_remote(run_root):
        storage.check_writable(run_root)
        from cai_core.models.tiny import cache_root

        local_dir = cache_root() / "kfp" / cfg.run_id  # KFP's own working files; the run itself goes to S3
    else:
        local_dir = Path(run_root).resolve()
        run_root = str(local_dir)
    click.echo(f"cai {cai_core.__version__}: run {cfg.run_id} -> {run_root}")
    start = time.monotonic()
    storage.write_text(storage.join(run_root, "config.yaml"), _dump(cfg))
    run_local(cfg, local_dir, run_root=run_root, verbose=verbose, ablation=ablation)
    click.echo(f"done in {time.monotonic() - start:.0f}s")
    click.echo(f"  report:  {storage.join(run_root, 'ablation.html' if ablation else 'report.html')}")
    click.echo(f"  metrics: {storage.join(run_root, 'ablation.json' if ablation else 'metrics.json')}")


def _dump(cfg) -> str:
    from cai_core.config import dump_yaml

    return dump_yaml(cfg)


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False), default="cai.yaml")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(path, force):
    """Write a commented starter config to PATH (default cai.yaml)."""
    from cai_core.config import default_config_path

    target = Path(path)
    if target.exists() and not force:
        raise CaiError(f"{target} exists; pass --force to overwrite it")
    target.write_text(default_config_path().read_text(encoding="utf-8"), encoding="utf-8")
    click.echo(f"wrote {target}; run it with: cai run --config {target}")


@cli.group("config")
def config_group():
    """Inspect configuration."""


@config_group.command("show")
@click.option("--config", "config", type=click.Path(dir_okay=False), help="Run config YAML.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
def config_show(config, overrides):
    """Print the effective config (defaults + file + overrides) as YAML."""
    click.echo(_dump(_load(config, overrides)), nl=False)


@config_group.command("docs")
def config_docs():
    """Print the reference of every config key with its default and meaning (Markdown)."""
    from cai_core.config_docs import reference

    click.echo(reference(), nl=False)


@cli.command()
@click.option("--in", "in_path", required=True, type=click.Path(dir_okay=False), help="JSONL input.")
@click.option("--field", default="response", show_default=True, help="Field holding the text.")
def metrics(in_path, field):
    """Collapse metrics of a JSONL dataset as JSON (rep-n, distinct-n, tail-loop rate)."""
    from cai_core import records
    from cai_core.metrics.repetition import collapse_metrics

    rows = records.read_jsonl(in_path, {field: str})
    click.echo(json.dumps(collapse_metrics([r[field] for r in rows]), indent=2, sort_keys=True))


def _register() -> None:
    from cai_core.cli_cluster import compile_cmd, submit_cmd
    from cai_core.discover_commands import discover_cmd
    from cai_core.eval_commands import evaluate_cmd
    from cai_core.teacher_commands import clean_cmd, judge_cmd
    from cai_core.train_commands import train_cmd

    for command in (compile_cmd, submit_cmd, evaluate_cmd, discover_cmd, train_cmd, clean_cmd, judge_cmd):
        cli.add_command(command)


_register()


def run_command(command: click.Command) -> None:
    """Run a click command as a program: user errors end with one line and their exit status, no traceback."""
    try:
        command.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CaiError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


def main() -> None:
    run_command(cli)


if __name__ == "__main__":
    main()
