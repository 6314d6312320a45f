"""The client's fatal errors, and reading the error bodies an endpoint sends."""
from __future__ import annotations

import json
from typing import Any

from cai_core.errors import CaiError
from cai_core.llm.client.summary import RunSummary


class TeacherError(CaiError):
    """A problem with the model endpoint that concerns every request (key, URL, model, quota)."""

    def __init__(self, message: str, cause: str = "endpoint", summary: "RunSummary | None" = None):
        super().__init__(message)
        self.cause, self.summary = cause, summary


class ErrorBudgetExceeded(TeacherError):
    """Too many requests failed; the run stopped cleanly (the message and `summary` say why)."""


# ------------------------------------------------------------------ error bodies


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, TypeError):
        return None


def _err_message(body: Any) -> str:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("message") or "")
        if isinstance(err, str):
            return err
        return str(body.get("message") or "")
    return ""


def _err_code(body: Any) -> str | None:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("code") is not None:
            return str(err.get("code"))
    return None


def _snippet(content: bytes, n: int = 80) -> str:
    text = content[:n].decode("utf-8", "replace")
    return repr(text + ("…" if len(content) > n else ""))
