"""`cai run`: the whole pipeline with kfp.local."""
from __future__ import annotations

import datetime as _dt
import tempfile
import time
from pathlib import Path

import click

import cai_core
from cai_core.cli.options import config_options, load_config


@click.command("run")
@config_options("default: the embedded laptop config")
@click.option("--run-id", help="Name of the run folder; rerunning an id reuses its completed steps.")
@click.option("--output-dir", help="Where runs go: a directory or s3://bucket/prefix (default: ./runs).")
@click.option("--verbose", is_flag=True, help="Show KFP's full task logs, not only progress lines.")
@click.option("--ablation", is_flag=True,
              help="Run the whole pipeline per cleaning variant and seed (ablation.variants x ablation.seeds) "
                   "and compare them in ablation.html.")
def run_cmd(config, overrides, run_id, output_dir, verbose, ablation):
    """Run the whole pipeline with kfp.local (no cluster, GPU or API key needed).

    Output goes to <output-dir>/<run-id>/: one folder per step, report.html,
    report.md, metrics.json and pipeline.log. Rerunning with the same --run-id
    reuses every step whose config and inputs are unchanged.
    """
    from cai_core import storage
    from cai_core.config.loading import dump_yaml
    from cai_core.models.registry import check_available, is_embedded, resolve_model
    from cai_core.records import row_id
    from cai_core.stages.prepare import load_prompts
    from cai_pipelines.local import run_local

    top = {"run_id": run_id, "output_dir": output_dir}
    cfg = load_config(config, list(overrides) + [f"{k}={v}" for k, v in top.items() if v is not None])
    if not cfg.run_id:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        cfg = cfg.replace(run_id=f"{stamp}-{row_id(cfg.to_dict())[:6]}")
    for section in (cfg.prompts, cfg.eval_prompts):  # fail on bad input before any step starts
        with tempfile.TemporaryDirectory() as tmp:
            load_prompts(section, Path(tmp))
    if is_embedded(cfg.model.name_or_path):  # a missing package fails here; a first build shows its progress here
        check_available(cfg.model.name_or_path)
        resolve_model(cfg.model.name_or_path)
    run_root = storage.join(cfg.output_dir, cfg.run_id)
    if storage.is_remote(run_root):
        storage.check_writable(run_root)
        from cai_core.models.cache import cache_root

        local_dir = cache_root() / "kfp" / cfg.run_id  # KFP's own working files; the run itself goes to S3
    else:
        local_dir = Path(run_root).resolve()
        run_root = str(local_dir)
    click.echo(f"cai {cai_core.__version__}: run {cfg.run_id} -> {run_root}")
    start = time.monotonic()
    storage.write_text(storage.join(run_root, "config.yaml"), dump_yaml(cfg))
    run_local(cfg, local_dir, run_root=run_root, verbose=verbose, ablation=ablation)
    click.echo(f"done in {time.monotonic() - start:.0f}s")
    if not ablation:
        verdict = _verdict_line(storage.read_text(storage.join(run_root, "report.md")))
        if verdict:
            click.echo(verdict)
    click.echo(f"  report:  {storage.join(run_root, 'ablation.html' if ablation else 'report.html')}")
    click.echo(f"  metrics: {storage.join(run_root, 'ablation.json' if ablation else 'metrics.json')}")


def _verdict_line(report_md: str) -> str | None:
    """The report's verdict sentence (promoted or not, and why), so the terminal says it too."""
    for line in report_md.splitlines():
        if line.startswith("Verdict:"):
            return line
    return None


def register(group: click.Group) -> None:
    group.add_command(run_cmd)
