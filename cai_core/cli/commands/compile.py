"""`cai compile`: the pipeline YAML for a Kubeflow Pipelines cluster.

It reads the built-in cluster config (cai_core/configs/cluster.yaml: an 8B instruct
model, the OpenAI teacher, S3 output, 8xH100 generation pods), then `--config`
layered over it, then `--set` overrides. Every check that can fail (image
references, GPU layout, Secret names and keys) runs before anything is written.
"""
from __future__ import annotations

import click

from cai_core.cli.options import config_options, load_config

CLUSTER_CONFIG_USES = "layered over the built-in cluster config (default: the built-in one alone)"


@click.command("compile")
@config_options(CLUSTER_CONFIG_USES, example="cluster.tag=0.1.0", cluster=True)
@click.option("-o", "--output", "output", default="pipeline.yaml", show_default=True,
              type=click.Path(dir_okay=False), help="Where to write the pipeline YAML.")
@click.option("--run-id", help="Make run_root default to <output_dir>/RUN_ID (each run of the package resumes that "
              "run); default: run_id from the config, else none: each run takes its KFP run id.")
def compile_cmd(config, overrides, output, run_id):
    """Compile the pipeline for a Kubeflow Pipelines cluster (for `kfp run create` or the UI).

    \b
    The YAML holds the PipelineSpec and the Kubernetes PlatformSpec: images from
    cluster.registry/tag, GPUs, node selector, tolerations, /dev/shm, Secrets as
    env, retries, timeouts and per-step caching. Upload it in the Kubeflow UI or:
      kfp run create --experiment-name cai --package-file pipeline.yaml
    """
    from cai_pipelines.cluster import compile_pipeline

    cfg = load_config(config, overrides, cluster=True)
    if run_id:
        cfg = cfg.replace(run_id=run_id)
    result = compile_pipeline(cfg, output)
    run = f"run id {result.run_id}" if result.run_id else "run id: each run's KFP run id"
    click.echo(f"wrote {result.path} ({run}, output {result.run_root})")
    for kind in sorted(set(result.images.values())):
        steps = ", ".join(s for s, i in result.images.items() if i == kind)
        click.echo(f"  {kind}: {steps}")


def register(group: click.Group) -> None:
    group.add_command(compile_cmd)
