"""Model backends behind one interface (`cai_core.llm.base.ChatModel`)."""
from __future__ import annotations

import os

from cai_core.llm.base import ChatModel, Sampling

__all__ = ["ChatModel", "Sampling", "load_policy", "load_teacher", "teacher_is_remote"]


def load_policy(name_or_path: str, device: str = "cpu", batch_size: int = 16) -> ChatModel:
    """The policy model in process (transformers); "tiny" builds the embedded default."""
    from cai_core.llm.transformers_backend import TransformersChatModel
    from cai_core.models.registry import resolve_model

    return TransformersChatModel(resolve_model(name_or_path), device=device, batch_size=batch_size)


def teacher_is_remote(teacher, base_url: str | None = None) -> bool:
    """auto: remote when a key (teacher.api_key_env), OPENAI_BASE_URL, a configured or given base URL is there."""
    if teacher.backend == "auto":
        return bool(base_url or os.environ.get(teacher.api_key_env) or os.environ.get("OPENAI_BASE_URL")
                    or teacher.base_url)
    return teacher.backend == "openai"


def load_teacher(teacher, model, *, journal: str | None = None, base_url: str | None = None,
                 model_name: str | None = None, client=None, storage_cfg=None) -> ChatModel:
    """The teacher/judge: an OpenAI-compatible endpoint, or the policy model in process.

    `teacher` is the run config's TeacherConfig: every field it shares with
    `cai_core.llm.client.ClientConfig` (base_url, model, api_key_env, timeout_s,
    max_concurrency, rpm, tpm, ...) is used; `client` (a ClientConfig) replaces it.
    `base_url` / `model_name` are the --base-url / --model overrides. `journal` is the
    storage prefix of the request journal (local or s3://); None keeps none.
    """
    if teacher_is_remote(teacher, base_url):
        from cai_core.llm.client import client_config_from
        from cai_core.llm.openai_backend import OpenAIChatModel

        cfg = client_config_from(client if client is not None else teacher, base_url=base_url, model=model_name)
        return OpenAIChatModel(cfg, journal=journal, storage_cfg=storage_cfg)
    return load_policy(model.name_or_path, device=model.device, batch_size=model.batch_size)
