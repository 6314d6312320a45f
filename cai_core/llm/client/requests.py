"""A request (kind, canonical body, key) and how it ended (`Result`, one of `STATUSES`)."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

_PATHS = {"chat": "/chat/completions", "completion": "/completions"}

JOURNALED = frozenset({"ok", "context_length", "bad_request", "too_large"})
STATUSES = ("ok", "context_length", "bad_request", "too_large", "no_choices", "malformed_reply",
            "retries_exhausted", "batch_failed", "not_sent")


class Request:
    """One request: its endpoint kind, JSON body and key (sha256 of kind + canonical body)."""

    __slots__ = ("kind", "body", "payload", "key", "chars", "max_tokens", "model")

    def __init__(self, kind: str, body: dict):
        if kind not in _PATHS:
            raise ValueError(f"unknown request kind {kind!r}")
        self.kind, self.body = kind, body
        self.payload = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        self.key = hashlib.sha256(kind.encode() + b"\n" + self.payload).hexdigest()
        self.model = str(body.get("model", ""))
        mt = body.get("max_completion_tokens", body.get("max_tokens"))
        self.max_tokens = mt if isinstance(mt, int) else 16
        if kind == "chat":
            messages = body.get("messages", ())
            self.chars = sum(len(m.get("content") or "") if isinstance(m.get("content"), str) else
                             len(json.dumps(m.get("content"))) for m in messages) + 12 * len(messages)
        else:
            self.chars = len(str(body.get("prompt", "")))

    def __repr__(self) -> str:
        return f"Request({self.kind}, {self.key[:12]})"


def chat_request(model: str, messages: Sequence[dict], *, max_tokens: int = 256, temperature: float | None = None,
                 top_p: float | None = None, seed: int | None = None, logprobs: bool = False,
                 top_logprobs: int | None = None, **extra: Any) -> Request:
    """A /chat/completions request; parameters left None are not sent (and not part of the key)."""
    body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in messages], "max_tokens": max_tokens}
    for name, value in (("temperature", temperature), ("top_p", top_p), ("seed", seed)):
        if value is not None:
            body[name] = value
    if logprobs:
        body["logprobs"] = True
        if top_logprobs:
            body["top_logprobs"] = top_logprobs
    body.update({k: v for k, v in extra.items() if v is not None})
    return Request("chat", body)


def completion_request(model: str, prompt: str, *, max_tokens: int = 256, temperature: float | None = None,
                       top_p: float | None = None, seed: int | None = None, **extra: Any) -> Request:
    """A /completions request (raw continuation, for base models)."""
    body: dict[str, Any] = {"model": model, "prompt": prompt, "max_tokens": max_tokens}
    for name, value in (("temperature", temperature), ("top_p", top_p), ("seed", seed)):
        if value is not None:
            body[name] = value
    body.update({k: v for k, v in extra.items() if v is not None})
    return Request("completion", body)


class Result:
    """How one request ended: `status` (see the package doc), the reply text and first-token top logprobs."""

    __slots__ = ("key", "status", "text", "top", "prompt_tokens", "completion_tokens", "reason", "attempts",
                 "source", "finish")

    def __init__(self, key: str, status: str, text: str = "", top: list | None = None, prompt_tokens: int = 0,
                 completion_tokens: int = 0, reason: str = "", attempts: int = 0, source: str = "live",
                 finish: str | None = None):
        self.key, self.status, self.text, self.top = key, status, text, top
        self.prompt_tokens, self.completion_tokens = prompt_tokens, completion_tokens
        self.reason, self.attempts, self.source, self.finish = reason, attempts, source, finish

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def record(self) -> dict:
        rec: dict[str, Any] = {"s": self.status, "a": self.attempts, "v": self.source}
        if self.status == "ok":
            rec.update(x=self.text, u=[self.prompt_tokens, self.completion_tokens], f=self.finish)
            if self.top is not None:
                rec["lp"] = self.top
        else:
            rec["why"] = self.reason
        return rec

    @classmethod
    def from_record(cls, key: str, rec: dict) -> "Result":
        u = rec.get("u") or (0, 0)
        return cls(key, rec.get("s", "ok"), rec.get("x", ""), rec.get("lp"), u[0], u[1], rec.get("why", ""),
                   rec.get("a", 0), "journal", rec.get("f"))

    def __repr__(self) -> str:
        return f"Result({self.status}, {self.text[:30]!r}{', ' + self.reason[:60] if self.reason else ''})"
