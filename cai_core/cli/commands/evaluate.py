"""`cai evaluate`: the evaluation harness on its own, for any model.

    cai evaluate --model runs/x/dpo/model --baseline meta-llama/Meta-Llama-3-8B-Instruct
    cai evaluate --model dpo=my-dpo --baseline base=my-base --base-url http://127.0.0.1:8000/v1
    cai evaluate --model tiny --set evaluate.mt_bench_questions=8 --out eval-tiny

Every model answers the held-out prompts, MT-Bench (both turns) and the red-team and
benign-but-edgy prompts; the judge grades; the collapse metrics are computed; the output
folder gets `evaluate/` (answers, grades, `_stage.json`), `report.html`, `report.md` and
`metrics.json`. The per-model summary (MT-Bench turn-1/turn-2/average, ASR and
over-refusal with 95% intervals, collapse metrics) is printed to stdout as JSON.
"""
from __future__ import annotations

import datetime as _dt
import json
import re
import tempfile
from pathlib import Path

import click

from cai_core.cli.options import config_options, load_config

_LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


def split_label(value: str, default: str) -> tuple[str, str]:
    """'label=source' -> (label, source); a bare source gets `default`."""
    head, sep, tail = value.partition("=")
    if sep and _LABEL.match(head) and tail:
        return head, tail
    return default, value


def model_specs(model: str, baselines: tuple[str, ...], model_name: str | None) -> dict[str, tuple[str, str]]:
    """label -> (source, served name) in report order: the baselines, then the model."""
    from cai_core.errors import CaiError

    specs: dict[str, tuple[str, str]] = {}
    for k, b in enumerate(baselines, start=1):
        label, source = split_label(b, "baseline" if len(baselines) == 1 else f"baseline_{k}")
        specs[label] = (source, source)
    label, source = split_label(model, "model")
    if label in specs:
        raise CaiError(f"--model and --baseline share the label '{label}'; name them with LABEL=SOURCE")
    specs[label] = (source, model_name or source)
    return specs


def _loader(cfg, base_url: str | None, served: dict[str, str], journal: str):
    """source -> ChatModel: an endpoint when base_url is given (journaled under `journal/<name>`), else the
    configured policy backend."""
    if base_url:
        from cai_core import storage
        from cai_core.llm.openai_backend import OpenAIChatModel

        def load(source: str):
            name = served.get(source, source)
            return OpenAIChatModel(name, base_url=base_url, timeout_s=cfg.teacher.timeout_s,
                                   max_concurrency=cfg.teacher.max_concurrency,
                                   journal=storage.join(journal, re.sub(r"[^A-Za-z0-9_.-]+", "_", name)))
        return load
    from cai_core.eval.answers import policy_loader

    return policy_loader(cfg.model, cfg.vllm)


@click.command("evaluate")
@click.option("--model", "model", required=True, metavar="[LABEL=]MODEL",
              help="The model to evaluate: a local model directory, a hub id or an embedded model (tiny, "
                   "smollm2-135m), in process or vLLM with model.backend: vllm; with --base-url, a name served "
                   "there. LABEL names it in the report (default 'model').")
@click.option("--baseline", "baselines", multiple=True, metavar="[LABEL=]MODEL",
              help="A model to compare with, in the same forms (repeatable; default labels baseline, baseline_2, ...).")
@config_options("its eval_prompts, evaluate, teacher, model and report sections are used",
                example="evaluate.mt_bench_questions=8")
@click.option("--base-url", help="An OpenAI-compatible endpoint (e.g. your vLLM server) that serves the models.")
@click.option("--model-name", help="The name --model is served under at --base-url (default: MODEL itself).")
@click.option("--judge-base-url",
              help="Endpoint of the judge (default: teacher.base_url / OPENAI_BASE_URL / the OpenAI API when a key "
                   "is set; without any, the config's model judges in process).")
@click.option("--judge-model", help="Judge model name at its endpoint (default: teacher.model).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Output folder (default: ./eval-<date-time>).")
@click.option("--journal", "journal_dir", help="Request journal of the judge and the --base-url models, local or s3:// "
                                               "(default: <out>/journal); the same command again resumes from it.")
def evaluate_cmd(model, baselines, config, overrides, base_url, model_name, judge_base_url, judge_model, out_dir,
                 journal_dir):
    """Evaluate a model (and baselines): MT-Bench, attack success rate, over-refusal, collapse metrics.

    Writes answers, grades, report.html, report.md and metrics.json to --out and prints the
    per-model summary as JSON.
    """
    from cai_core import records, storage
    from cai_core.llm import load_teacher
    from cai_core.runtime.artifacts import STAGE_FILE
    from cai_core.stages import evaluate, report
    from cai_core.stages.prepare import load_prompts

    if model_name and not base_url:
        raise click.UsageError("--model-name needs --base-url (it is the name the endpoint serves --model under)")
    cfg = load_config(config, overrides)
    specs = model_specs(model, tuple(baselines), model_name)
    out = Path(out_dir or f"eval-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    stage_dir = out / "evaluate"
    stage_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows, _ = load_prompts(cfg.eval_prompts, Path(tmp))
    prompts = stage_dir / "prompts.jsonl"
    records.write_jsonl(prompts, rows)

    teacher = cfg.teacher
    if judge_base_url:
        teacher = teacher.replace(base_url=judge_base_url, backend="openai")
    if judge_model:
        teacher = teacher.replace(model=judge_model)
    journal = journal_dir or str(out / "journal")
    judge = load_teacher(teacher, cfg.model, journal=storage.join(journal, "judge"))
    served = {source: name for source, name in specs.values()}
    try:
        result = evaluate.run(cfg.evaluate, prompts, {label: source for label, (source, _) in specs.items()},
                              stage_dir, load_model=_loader(cfg, base_url, served, journal), judge=judge)
    finally:
        judge.close()
    stage = {"step": "evaluate", "metrics": result.finite_metrics(), "details": result.details,
             "outputs": {k: str(Path(v).relative_to(stage_dir)) for k, v in result.outputs.items()}}
    records.write_json(stage_dir / STAGE_FILE, stage)
    title = cfg.report.title if config or any(o.startswith("report.title=") for o in overrides) else \
        f"cai evaluation: {', '.join(specs)}"
    report.run(cfg.report.replace(title=title), {"evaluate": stage_dir}, out)
    summary = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["models"]
    click.echo(json.dumps(summary, indent=2, sort_keys=True))
    click.echo(f"report: {out / 'report.html'}", err=True)
    click.echo(f"metrics: {out / 'metrics.json'}", err=True)


def register(group: click.Group) -> None:
    group.add_command(evaluate_cmd)
