"""Plain functions behind the standalone teacher commands (`cai judge`, and the teacher of
`cai clean --variant llm` / `cai evaluate`); the CLI only parses options and calls these.

Endpoint, model and key, highest precedence first:

* base URL: ``--base-url`` (`base_url` argument) > the config's ``base_url`` > ``OPENAI_BASE_URL`` >
  the OpenAI API (https://api.openai.com/v1);
* model: ``--model`` (`model` argument) > the config's ``model``;
* API key: the variable named by the config's ``api_key_env`` (default OPENAI_API_KEY) >
  ``OPENAI_API_KEY``; only the OpenAI API itself requires one (a vLLM server gets "EMPTY").

The request journal is kept beside the output by default (``<out_dir>/journal``; ``--journal DIR``,
local or s3://, moves it), so running the same command again resumes: every request already
finished and flushed is read back instead of being paid for again.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from cai_core import storage
from cai_core.errors import CaiError
from cai_core.llm.client import ClientConfig, client_config_from
from cai_core.llm.openai_backend import OpenAIChatModel

JOURNAL_DIR = "journal"


def teacher_model(client_cfg: Any, out_dir: str | os.PathLike, journal_dir: str | None = None, *,
                  base_url: str | None = None, model: str | None = None, storage_cfg: Any = None,
                  desc: str = "teacher") -> OpenAIChatModel:
    """The remote teacher of a standalone command: `client_cfg` (a ClientConfig, or any config with
    the same field names, e.g. TeacherConfig) with the --base-url / --model overrides, journaling
    under `journal_dir` (default: `<out_dir>/journal`)."""
    cfg = client_config_from(client_cfg if client_cfg is not None else ClientConfig(), base_url=base_url, model=model)
    journal = journal_dir if journal_dir is not None else storage.join(os.fspath(out_dir), JOURNAL_DIR)
    return OpenAIChatModel(cfg, journal=journal, storage_cfg=storage_cfg, desc=desc)


def command_teacher(teacher: Any, model: Any, *, base_url: str | None, model_name: str | None, journal: str,
                    command: str):
    """The teacher of a standalone command (`load_teacher` with the --base-url / --model overrides),
    refusing the tiny demo model, which cannot follow a cleanup or judging contract."""
    from cai_core.llm import load_teacher, teacher_is_remote

    if not teacher_is_remote(teacher, base_url) and model.name_or_path == "tiny":
        raise CaiError(f"{command} needs a teacher model: set OPENAI_API_KEY (OpenAI) or OPENAI_BASE_URL / "
                       "--base-url (any OpenAI-compatible server, e.g. vLLM) and --model, or set "
                       "teacher.backend: local with a real model.name_or_path")
    return load_teacher(teacher, model, journal=journal, base_url=base_url, model_name=model_name)


def judge_file(pairs_path: str | os.PathLike, out_dir: str | os.PathLike, judge_cfg: Any = None, client_cfg: Any = None,
               journal_dir: str | None = None, *, base_url: str | None = None, model: str | None = None,
               storage_cfg: Any = None):
    """`cai judge PAIRS OUT_DIR`: judge every pair with the remote teacher.

    Writes train.jsonl, test.jsonl, verdicts.jsonl and metrics.json (judge metrics plus the
    teacher's request counts, tokens and estimated cost, prefixed ``teacher_``) to `out_dir`.
    Returns the judge's StageResult (with those metrics). Raises CaiError subclasses with one
    clear message for a bad input file, a wrong endpoint/key/model, or a blown error budget;
    rows whose request failed are kept with status ``request_failed`` and a reason.
    """
    from cai_core.stages import judge

    cfg = judge_cfg if judge_cfg is not None else judge.JudgeConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    llm = teacher_model(client_cfg, out, journal_dir, base_url=base_url, model=model, storage_cfg=storage_cfg,
                        desc="judge")
    try:
        result = judge.run(cfg, Path(pairs_path), out, llm)
    finally:
        llm.close()
    result.metrics.update({f"teacher_{k}": v for k, v in llm.summary.metrics().items()})
    from cai_core import records

    records.write_json(out / "metrics.json", result.metrics)
    return result


def describe_endpoint(client_cfg: Any = None, *, base_url: str | None = None, model: str | None = None) -> str:
    """One line naming the endpoint, model and key source that a command would use (for logs)."""
    cfg = client_config_from(client_cfg if client_cfg is not None else ClientConfig(), base_url=base_url, model=model)
    url = cfg.resolved_base_url()
    source = "--base-url/config" if cfg.base_url else "OPENAI_BASE_URL" if os.environ.get("OPENAI_BASE_URL") else "default"
    key = cfg.api_key_env if os.environ.get(cfg.api_key_env) else "OPENAI_API_KEY" if os.environ.get("OPENAI_API_KEY") else "none"
    return json.dumps({"base_url": url, "base_url_from": source, "model": cfg.model, "api_key_from": key})


# ---------------------------------------------------------------- the commands

_SET_HELP = "Override one config value, e.g. --set teacher.max_concurrency=32 (repeatable; read as YAML)."
_BASE_URL_HELP = ("OpenAI-compatible endpoint of the teacher (default: teacher.base_url, else OPENAI_BASE_URL, "
                  "else the OpenAI API when OPENAI_API_KEY is set).")


def teacher_options(section: str, journal_default: str):
    """The options every teacher command shares: --config, --set, --base-url, --model, --journal."""
    options = [
        click.option("--config", type=click.Path(dir_okay=False),
                     help=f"Run config YAML; its {section} and teacher sections are used."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP),
        click.option("--base-url", help=_BASE_URL_HELP),
        click.option("--model", "model_name", help="Teacher model name at the endpoint (default: teacher.model)."),
        click.option("--journal", "journal_dir", help=f"Request journal folder, local or s3:// (default: "
                                                      f"{journal_default}); rerunning resumes from it."),
    ]

    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command
    return apply


def _run_config(config: str | None, overrides: tuple[str, ...]):
    from cai_core.config import load_run_config

    return load_run_config(config, list(overrides))


@click.command("clean")
@click.option("--in", "in_path", required=True, type=click.Path(dir_okay=False), help="JSONL input.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="JSONL output (written atomically).")
@click.option("--field", "fields", multiple=True, default=("response",), show_default=True,
              help="Field to clean; give it twice for pairs.")
@click.option("--prompt-field", default="prompt", show_default=True,
              help="Field with the prompt (sets the target language).")
@click.option("--variant", type=click.Choice(["none", "rule", "llm", "hybrid"]),
              help="rule: deterministic fixes; llm: every text to the teacher, verified; hybrid: rules, then the "
                   "teacher only where detectors still fire (default: clean.variant of the config, rule).")
@teacher_options("clean", "<out>.clean/journal")
def clean_cmd(in_path, out_path, fields, prompt_field, variant, config, overrides, base_url, model_name, journal_dir):
    """Clean your own data: adds <field>_cleaned and <field>_cleanup to every row.

    \b
    Prints the counts per reason code as JSON. With --variant llm or hybrid the
    teacher's replies are verified (stance kept, nothing added, not longer); a reply
    that fails falls back to the rule output and is counted with its reason.
    """
    from cai_core.stages.clean import LLM_VARIANTS, clean_file

    cfg = _run_config(config, overrides)
    variant = variant or cfg.clean.variant
    llm = None
    if variant in LLM_VARIANTS:
        journal = journal_dir or storage.join(f"{out_path}.clean", JOURNAL_DIR)
        llm = command_teacher(cfg.teacher, cfg.model, base_url=base_url, model_name=model_name, journal=journal,
                              command=f"cai clean --variant {variant}")
    try:
        metrics = clean_file(in_path, out_path, fields, prompt_field, variant, llm=llm, cfg=cfg.clean)
    finally:
        getattr(llm, "close", lambda: None)()
    click.echo(json.dumps(metrics, sort_keys=True))


@click.command("judge")
@click.option("--pairs", "pairs_path", required=True, type=click.Path(dir_okay=False),
              help="JSONL with prompt, response_a and response_b per line (the pairs step's cleaned.jsonl works).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for train.jsonl, test.jsonl, verdicts.jsonl and metrics.json.")
@teacher_options("judge", "<out>/journal")
def judge_cmd(pairs_path, out_dir, config, overrides, base_url, model_name, journal_dir):
    """Judge preference pairs with a remote teacher under the constitution.

    \b
    Each pair is asked in both orders with a principle drawn per pair; pairs the
    judge cannot decide, or decides inconsistently, are dropped and counted. Prints
    the metrics (kept pairs, agreement, the teacher's requests, tokens and cost).
    """
    cfg = _run_config(config, overrides)
    result = judge_file(pairs_path, out_dir, cfg.judge, cfg.teacher, journal_dir, base_url=base_url, model=model_name)
    click.echo(json.dumps(result.metrics, sort_keys=True))


__all__ = ["JOURNAL_DIR", "clean_cmd", "command_teacher", "describe_endpoint", "judge_cmd", "judge_file",
           "teacher_model"]
