"""`cai train sft|dpo`: one training stage, in this process or as a Kubeflow PyTorchJob or TrainJob (cai_core/training)."""
from __future__ import annotations

import json

import click

from cai_core.cli.options import config_options, load_config
from cai_core.errors import CaiError
from cai_core.training import STAGES


@click.command("train")
@click.argument("stage", type=click.Choice(STAGES))
@config_options("default: the built-in config", example="sft.max_steps=10")
@click.option("--launcher", type=click.Choice(["local", "pytorchjob", "trainjob"]),
              help="Train here, as a Kubeflow PyTorchJob (training-operator v1) or as a Kubeflow Trainer v2 TrainJob "
                   "(default: train.launcher of the config).")
@click.option("--dry-run", is_flag=True, help="Print the PyTorchJob or TrainJob manifest (YAML) instead of creating it.")
@click.option("--data", "data", metavar="URI", help="Training data: sft rows or dpo pairs (JSONL; path or s3://).")
@click.option("--model", "model", metavar="URI",
              help="Model to train: an embedded model (tiny, smollm2-135m), a hub id, a directory or s3:// "
                   "(default: model.name_or_path).")
@click.option("--out", "out", metavar="URI",
              help="Output: model/, train_log.jsonl, checkpoints (default: <output_dir>/<run id>/_train/<stage>).")
@click.option("--run-id", help="Run id of the job's name and labels (default: run_id of the config, else 'manual').")
def train_cmd(stage, config, overrides, launcher, dry_run, data, model, out, run_id):
    """Train one stage (sft or dpo) here or as a PyTorchJob or TrainJob on GPU nodes.

    \b
    cai train sft --data rows.jsonl --out out/sft
    cai train dpo --data pairs.jsonl --model out/sft/model --out out/dpo
    cai train sft --launcher pytorchjob --data s3://b/sft.jsonl --out s3://b/sft --dry-run
    cai train sft --launcher trainjob --data s3://b/sft.jsonl --out s3://b/sft --dry-run
    """
    from cai_core.training.launch import write_termination_message

    try:
        _train(stage, config, overrides, launcher, dry_run, data, model, out, run_id)
    except CaiError as exc:
        write_termination_message(f"{type(exc).__name__}: {exc}")
        raise


def _train(stage, config, overrides, launcher, dry_run, data, model, out, run_id):
    from cai_core import storage
    from cai_core.training.distributed import Dist
    from cai_core.training.launch import (build_manifest, cluster_config, default_targets, job_spec, launch,
                                          launcher_config, summary, train_local)

    cfg = load_config(config, overrides)
    lc = launcher_config(cfg)
    which = launcher or lc.launcher
    section = getattr(cfg, stage)
    if not data:
        raise click.UsageError("--data is required (the JSONL of sft rows or dpo pairs)")
    model, out, run_id = default_targets(cfg, stage, model, out, run_id)
    if which == "local":
        if dry_run:
            raise click.UsageError("--dry-run prints a job manifest: use it with --launcher pytorchjob or trainjob")
        result = train_local(stage, section, data, model, out)
        if Dist.from_env().rank == 0:
            click.echo(summary(stage, result))
        return
    if which != lc.launcher:
        lc = lc.replace(launcher=which)
    spec = job_spec(stage, section, lc, cluster_config(cfg), run_id=run_id, data_uri=data, model_uri=model,
                    out_uri=out)
    if dry_run:
        from cai_core.k8s.pytorchjob import to_yaml

        click.echo(to_yaml(build_manifest(spec, which)), nl=False)
        return
    _, manifest = launch(spec, lc, which=which)
    click.echo(json.dumps({"stage": stage, which: manifest["metadata"]["name"],
                           "namespace": spec.namespace, "model": storage.join(out, "final", "model")}, indent=1))


def register(group: click.Group) -> None:
    group.add_command(train_cmd)
