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

from cai_core import storage
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


__all__ = ["JOURNAL_DIR", "describe_endpoint", "judge_file", "teacher_model"]
