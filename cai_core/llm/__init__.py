"""Model backends behind one interface (`cai_core.llm.base.ChatModel`)."""
from __future__ import annotations

import os

from cai_core.llm.base import ChatModel, Sampling

__all__ = ["ChatModel", "Sampling", "load_policy", "load_teacher", "teacher_is_remote"]


def load_policy(name_or_path: str, device: str = "cpu", batch_size: int = 16) -> ChatModel:
    """The policy model in process (transformers); "tiny" builds the embedded default."""
    from cai_core.llm.transformers_backend import TransformersChatModel
    from cai_core.models.tiny import resolve_model

    return TransformersChatModel(resolve_model(name_or_path), device=device, batch_size=batch_size)


def teacher_is_remote(teacher) -> bool:
    if teacher.backend == "auto":
        return bool(os.environ.get(teacher.api_key_env) or os.environ.get("OPENAI_BASE_URL") or teacher.base_url)
    return teacher.backend == "openai"


def load_teacher(teacher, model) -> ChatModel:
    """The teacher/judge: an OpenAI-compatible endpoint, or the policy model in process."""
    if teacher_is_remote(teacher):
        from cai_core.llm.openai_backend import OpenAIChatModel

        return OpenAIChatModel(teacher.model, base_url=teacher.base_url, api_key=os.environ.get(teacher.api_key_env),
                               timeout_s=teacher.timeout_s, max_concurrency=teacher.max_concurrency)
    return load_policy(model.name_or_path, device=model.device, batch_size=model.batch_size)
