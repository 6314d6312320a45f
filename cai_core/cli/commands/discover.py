"""`cai discover`: learn a constitution from existing preference pairs.

    cai discover --pairs prefs.jsonl --out constitution.yaml [--n 16]
                 [--base-url URL] [--model NAME] [--config run.yaml] [--set discover.clusters=24]

The teacher is the run config's `teacher` section, as for the teacher stages: an
OpenAI-compatible endpoint when OPENAI_API_KEY or OPENAI_BASE_URL is set (or
``--base-url`` / ``teacher.base_url`` is given), the key from OPENAI_API_KEY (or the
variable named by ``teacher.api_key_env``). Requests are journaled under the report
folder, so a rerun after a failure pays for nothing twice. The embedded tiny policy model
cannot write principles, so without an endpoint the command stops and says what to set
(``--standin`` runs the deterministic stand-in teacher used by the tests: not a model).

Writes the constitution to ``--out`` (refusing to overwrite without ``--force``) and the
report, metrics and work files to ``--report-dir`` (default ``<out>.discover/``).
"""
from __future__ import annotations

from pathlib import Path

import click

from cai_core.cli.options import config_options, load_config
from cai_core.errors import CaiError


def _teacher(teacher, model, base_url, model_name, standin: bool, journal: str):
    if standin:
        from cai_core.testing.standin_teacher import StandInTeacher

        return StandInTeacher()
    from cai_core.cli.teacher import command_teacher

    return command_teacher(teacher, model, base_url=base_url, model_name=model_name, journal=journal,
                           command="cai discover (or --standin, the deterministic stand-in used by the tests)")


@click.command("discover")
@click.option("--pairs", "pairs_path", required=True,
              help="Preference pairs (prompt, chosen, rejected; field names: discover.*_field): a JSONL file, a saved "
                   "dataset directory, parquet/arrow files, s3:// or hf:<id>[@split]; chosen/rejected may be chat "
                   "lists or HH transcripts (discover.format).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Where to write the discovered constitution YAML.")
@click.option("--n", "n", type=int, default=None, help="Principles to keep (default: discover.n, 16).")
@click.option("--base-url", help="OpenAI-compatible endpoint of the teacher (default: teacher.base_url, else "
              "OPENAI_BASE_URL, else the OpenAI API when OPENAI_API_KEY is set).")
@click.option("--model", "model_name", help="Teacher model name at the endpoint (default: teacher.model).")
@config_options("its discover and teacher sections are used",
                example="discover.clusters=24 or --set teacher.model=gpt-4o")
@click.option("--report-dir", type=click.Path(file_okay=False),
              help="Folder for discover_report.md, metrics.json and the work files (default: <out>.discover/).")
@click.option("--standin", is_flag=True,
              help="Use the deterministic stand-in teacher (NOT a model; for demos and tests).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
def discover_cmd(pairs_path, out_path, n, base_url, model_name, config, overrides, report_dir, standin, force):
    """Learn a constitution from preference pairs (inverse constitutional AI).

    \b
    For every pair a teacher proposes principles that explain why the chosen answer
    won; the candidates are clustered, one per cluster is tested alone as the judge's
    principle on held-out pairs, and the top --n that predict the preferences above
    chance (de-duplicated) are written as a constitution the judge stage loads as it
    is (judge.constitution: <out>), each with its measured accuracy and support.
    The report compares it with the default constitution on a held-out split.
    """
    from cai_core import records
    from cai_core.constitution import load_constitution
    from cai_core.stages import discover

    out = Path(out_path)
    if out.exists() and not force:
        raise CaiError(f"{out} exists; pass --force to overwrite it")
    if out.is_dir():
        raise CaiError(f"{out} is a directory; --out names the constitution YAML file to write")
    cfg = load_config(config, overrides)
    dcfg = cfg.discover.replace(source=str(pairs_path), **({"n": n} if n is not None else {}))
    work = Path(report_dir) if report_dir else out.with_name(out.name.removesuffix(".yaml").removesuffix(".yml")
                                                             + ".discover")
    llm = _teacher(cfg.teacher, cfg.model, base_url, model_name, standin, journal=str(work / "journal"))
    try:
        result = discover.run(dcfg, str(pairs_path), work, llm)
    finally:
        close = getattr(llm, "close", None)
        if callable(close):
            close()
    records.atomic_write(out, result.outputs["constitution"].read_text(encoding="utf-8"))
    m = result.metrics
    constitution = load_constitution(str(out))
    click.echo(f"wrote {out}: {len(constitution.judge)} principle(s) from {int(m['pairs_usable'])} usable pairs "
               f"({int(m['candidates'])} candidates, {int(m['clusters'])} clusters, "
               f"{int(m['principles_tested'])} tested)")
    for p in constitution.judge:
        click.echo(f"  accuracy {p.accuracy:.3f}  support {p.support:.3f}  {p.id}: {p.principle}")
    click.echo(f"held-out agreement (whole constitution): discovered {m['eval_discovered_whole_agreement']:.3f}, "
               f"{dcfg.base} {m['eval_base_whole_agreement']:.3f} on {int(m['eval_pairs'])} pairs")
    click.echo(f"  report: {result.outputs['report']}")
    if standin:
        click.echo("  (teacher: the deterministic stand-in, NOT a model: these principles only exercise the mechanics)")


def register(group: click.Group) -> None:
    group.add_command(discover_cmd)
