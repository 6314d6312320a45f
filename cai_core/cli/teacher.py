"""The teacher of a standalone command (`cai judge`, `cai clean --variant llm|hybrid`, `cai discover`).

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

import os
from typing import Any

from cai_core.errors import CaiError

JOURNAL_DIR = "journal"


def teacher_model(client_cfg: Any, out_dir: str | os.PathLike, journal_dir: str | None = None, *,
                  base_url: str | None = None, model: str | None = None, storage_cfg: Any = None,
                  desc: str = "teacher"):
    """The remote teacher of a standalone command: `client_cfg` (a ClientConfig, or any config with
    the same field names, e.g. TeacherConfig) with the --base-url / --model overrides, journaling
    under `journal_dir` (default: `<out_dir>/journal`)."""
    from cai_core import storage
    from cai_core.llm.client import ClientConfig, client_config_from
    from cai_core.llm.openai_backend import OpenAIChatModel

    cfg = client_config_from(client_cfg if client_cfg is not None else ClientConfig(), base_url=base_url, model=model)
    journal = journal_dir if journal_dir is not None else storage.join(os.fspath(out_dir), JOURNAL_DIR)
    return OpenAIChatModel(cfg, journal=journal, storage_cfg=storage_cfg, desc=desc)


def command_teacher(teacher: Any, model: Any, *, base_url: str | None, model_name: str | None, journal: str,
                    command: str):
    """The teacher of a standalone command (`load_teacher` with the --base-url / --model overrides),
    refusing a smoke-test model (tiny), which cannot follow a cleanup or judging contract."""
    from cai_core.llm import load_teacher, teacher_is_remote
    from cai_core.models.registry import is_smoke_test

    if not teacher_is_remote(teacher, base_url) and is_smoke_test(model.name_or_path):
        raise CaiError(f"{command} needs a teacher model: set OPENAI_API_KEY (OpenAI) or OPENAI_BASE_URL / "
                       "--base-url (any OpenAI-compatible server, e.g. vLLM) and --model, or set "
                       "teacher.backend: local with a real model.name_or_path (e.g. smollm2-135m)")
    return load_teacher(teacher, model, journal=journal, base_url=base_url, model_name=model_name)
