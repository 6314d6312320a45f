"""The one async client for OpenAI-compatible endpoints (the OpenAI API, a vLLM server, any compatible one).

Every remote model call of every stage goes through `LLMClient`:

* **concurrency**: `max_concurrency` workers pull from one queue (no task per request);
* **rate limits**: per model, continuous RPM and TPM token buckets holding `burst_s` seconds
  of refill (OpenAI refills continuously and lets a minute's limit arrive at once). A
  request is charged ``estimated prompt tokens + max_tokens`` (the estimate is text length /
  `chars_per_token`, corrected by the ``usage`` of replies); the ``x-ratelimit-remaining-*``
  headers pull the buckets down when the server has seen more than we have; a 429 pauses the
  whole model for its ``retry-after-ms`` / ``retry-after`` / ``x-ratelimit-reset-*``;
* **retries**: jittered exponential backoff on 429, 408, 409, 5xx, timeouts and connection
  errors, at most `max_retries` times; never on another 4xx; `timeout_s` per attempt;
* **error budget**: past `error_budget` (a fraction) failed requests, once `error_budget_min`
  have finished, the run stops sending, lets requests in flight finish, flushes the journal
  and raises `ErrorBudgetExceeded` with a summary of the causes;
* **journal** (`cai_core.llm.journal`): finished requests are found by key before anything is
  sent and recorded when done, so a rerun pays for nothing already flushed;
* **progress**: done/total, requests/s, tokens/s, ETA, errors, estimated cost, as ``[cai]``
  lines (a bar as well when stdout is a terminal);
* **batch mode** (`batch: true`): the OpenAI Batch API (half price): request file, upload,
  create, poll, download, map back by ``custom_id`` (the request key); the batch id goes
  into the journal at once, so a rerun resumes polling instead of submitting again.

Transport. The `openai` SDK (`openai.AsyncOpenAI`, its own retries off) is used for the
endpoint and key settings, files, batches, models and error types. The hot path
(``/chat/completions`` and ``/completions``) sends the request body as canonical JSON over a
small keep-alive HTTP/1.1 connection pool (`FastTransport`, also the SDK's transport), since
the SDK's per-request machinery alone costs about 0.7 ms of CPU — more than the 0.5 ms a
request may cost to keep up with a vLLM server. ``transport: sdk`` sends every request through
the SDK instead (and is chosen automatically when an HTTP(S)_PROXY is set).

Each request ends with one status (stable codes; the summary counts them):

=================  ================================================================  ==========
status             meaning                                                           journaled
=================  ================================================================  ==========
ok                 a reply with at least one choice                                   yes
context_length     400 context_length_exceeded: the prompt + max_tokens do not fit    yes
bad_request        another 400/422: the server refuses this request as it is          yes
too_large          413: the request body is too large                                 yes
no_choices         200 with an empty ``choices`` list                                 no
malformed_reply    200 whose body is not the JSON of a completion                     no
retries_exhausted  429/5xx/timeouts/connection errors past `max_retries`              no
batch_failed       the batch, or this request in it, failed or expired                no
not_sent           the run stopped first (error budget, fatal error, signal)          no
=================  ================================================================  ==========

Problems that concern every request end the run at once with one `TeacherError` naming the
cause: no API key, the key refused (401/403), the model not found (404), a wrong base URL
(404 on the endpoint itself, or nothing answering), an exhausted quota (429 insufficient_quota).
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import json
import math
import os
import random
import signal
import ssl
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal, Sequence
from urllib.parse import urlsplit

from cai_core.configbase import ConfigBase, require
from cai_core.errors import CaiError
from cai_core.progress import log

OPENAI_URL = "https://api.openai.com/v1"

#: USD per 1M (input, output) tokens, for the spend estimate (override with price_* in the config).
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "o4-mini": (1.10, 4.40),
}

JOURNALED = frozenset({"ok", "context_length", "bad_request", "too_large"})
STATUSES = ("ok", "context_length", "bad_request", "too_large", "no_choices", "malformed_reply",
            "retries_exhausted", "batch_failed", "not_sent")


@dataclass(frozen=True)
class ClientConfig(ConfigBase):
    """How to reach an OpenAI-compatible endpoint and how hard to push it."""

    #: Endpoint base URL, e.g. http://vllm:8000/v1. Empty: OPENAI_BASE_URL, else the OpenAI API.
    base_url: str | None = None
    #: Model name at the endpoint.
    model: str = "gpt-4o-mini"
    #: Environment variable holding the API key (OPENAI_API_KEY is also tried). Only the OpenAI API requires one.
    api_key_env: str = "OPENAI_API_KEY"
    #: Requests in flight at once.
    max_concurrency: int = 64
    #: Requests per minute allowed per model (0 = no limit). Set it to your account's limit.
    rpm: int = 0
    #: Tokens per minute allowed per model, prompt + max_tokens (0 = no limit).
    tpm: int = 0
    #: Seconds of refill the rate buckets hold (60: a minute's limit may be sent at once, as OpenAI allows).
    burst_s: float = 60.0
    #: Seconds before one attempt of a request times out.
    timeout_s: float = 60.0
    #: Retries of one request after 429, 408, 409, 5xx, timeouts or connection errors (never other 4xx).
    max_retries: int = 6
    #: First backoff delay (seconds); doubled per retry, jittered, capped at backoff_max_s.
    backoff_base_s: float = 0.5
    #: Longest backoff delay (seconds); a longer Retry-After is honoured as sent.
    backoff_max_s: float = 60.0
    #: Stop the run when more than this share of finished requests failed (1.0 = never).
    error_budget: float = 0.1
    #: ... once at least this many requests have finished.
    error_budget_min: int = 20
    #: USD per 1M input tokens for the spend estimate (empty: the built-in table by model, else unknown).
    price_input_per_1m: float | None = None
    #: USD per 1M output tokens for the spend estimate (empty: the built-in table by model, else unknown).
    price_output_per_1m: float | None = None
    #: Price factor of Batch API requests (OpenAI: half price).
    batch_discount: float = 0.5
    #: Seconds between journal flushes (also flushed at the end of every call and on SIGTERM/SIGINT).
    journal_flush_s: float = 5.0
    #: On SIGTERM/SIGINT, seconds to let requests in flight finish (and be journaled) before exiting.
    shutdown_grace_s: float = 20.0
    #: Use the OpenAI Batch API (half price, results within the completion window) instead of live calls.
    batch: bool = False
    #: Batch mode: seconds between status polls.
    batch_poll_s: float = 30.0
    #: Batch mode: the completion window asked for.
    batch_completion_window: str = "24h"
    #: Batch mode: most requests per batch (OpenAI allows 50,000).
    batch_max_requests: int = 50000
    #: Batch mode: give up polling after this many hours (the batch keeps running server-side; rerun to resume).
    batch_max_wait_h: float = 26.0
    #: Characters per token for estimating prompt tokens before the first reply's usage corrects it.
    chars_per_token: float = 4.0
    #: Seconds between progress lines.
    progress_every_s: float = 10.0
    #: Check the endpoint (GET /models) before the first request, for clear errors on a wrong URL or key.
    preflight: bool = True
    #: fast: keep-alive HTTP/1.1 pool for completions (SDK for the rest); sdk: everything through openai.AsyncOpenAI.
    transport: Literal["fast", "sdk"] = "fast"

    def validate(self) -> None:
        require(self.base_url is None or self.base_url.startswith(("http://", "https://")), "base_url",
                f"must start with http:// or https://, got {self.base_url!r}")
        require(bool(self.model.strip()), "model", "must not be empty")
        require(1 <= self.max_concurrency <= 4096, "max_concurrency", "must be between 1 and 4096")
        require(self.rpm >= 0 and self.tpm >= 0, "rpm", "rpm and tpm must be >= 0 (0 = no limit)")
        require(self.burst_s > 0, "burst_s", "must be > 0")
        require(self.timeout_s > 0, "timeout_s", "must be > 0")
        require(0 <= self.max_retries <= 100, "max_retries", "must be between 0 and 100")
        require(0 < self.backoff_base_s <= self.backoff_max_s, "backoff_base_s", "must be > 0 and <= backoff_max_s")
        require(0 < self.error_budget <= 1, "error_budget", "must be in (0, 1]")
        require(self.error_budget_min >= 1, "error_budget_min", "must be >= 1")
        require(self.journal_flush_s > 0, "journal_flush_s", "must be > 0")
        require(self.shutdown_grace_s >= 0, "shutdown_grace_s", "must be >= 0")
        require(self.batch_poll_s > 0, "batch_poll_s", "must be > 0")
        require(1 <= self.batch_max_requests <= 50000, "batch_max_requests", "must be between 1 and 50000")
        require(self.chars_per_token > 0, "chars_per_token", "must be > 0")
        require(self.progress_every_s > 0, "progress_every_s", "must be > 0")
        for name in ("price_input_per_1m", "price_output_per_1m"):
            v = getattr(self, name)
            require(v is None or v >= 0, name, "must be >= 0")

    def resolved_base_url(self) -> str:
        return (self.base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL).rstrip("/")

    def prices(self, model: str | None = None) -> tuple[float, float] | None:
        model = model or self.model
        table = PRICES.get(model) or next((p for m, p in sorted(PRICES.items(), key=lambda kv: -len(kv[0]))
                                           if model.startswith(m + "-")), None)
        inp = self.price_input_per_1m if self.price_input_per_1m is not None else (table[0] if table else None)
        out = self.price_output_per_1m if self.price_output_per_1m is not None else (table[1] if table else None)
        return None if inp is None or out is None else (inp, out)


# ----------------------------------------------------------------------------- errors


class TeacherError(CaiError):
    """A problem with the model endpoint that concerns every request (key, URL, model, quota)."""

    def __init__(self, message: str, cause: str = "endpoint", summary: "RunSummary | None" = None):
        super().__init__(message)
        self.cause, self.summary = cause, summary


class ErrorBudgetExceeded(TeacherError):
    """Too many requests failed; the run stopped cleanly (the message and `summary` say why)."""


# ---------------------------------------------------------------------------- requests

_PATHS = {"chat": "/chat/completions", "completion": "/completions"}


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
            self.chars = sum(len(m.get("content") or "") if isinstance(m.get("content"), str) else
                             len(json.dumps(m.get("content"))) for m in body.get("messages", ())) + 12 * len(body.get("messages", ()))
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
    """How one request ended: `status` (see the module doc), the reply text and first-token top logprobs."""

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


# ----------------------------------------------------------------------------- summary


@dataclass
class RunSummary:
    """What a run (or the client's whole life) did; `line()` for logs, `metrics()` for KFP."""

    total: int = 0
    from_journal: int = 0
    sent: int = 0
    ok: int = 0
    statuses: Counter = dataclasses.field(default_factory=Counter)
    reasons: dict = dataclasses.field(default_factory=dict)
    attempts: int = 0
    retried: int = 0
    retried_gt2: int = 0
    rate_limited: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0
    saved_usd: float | None = 0.0
    wall_s: float = 0.0
    batch_ids: list = dataclasses.field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(n for s, n in self.statuses.items() if s != "ok")

    def add(self, other: "RunSummary") -> None:
        for f in ("total", "from_journal", "sent", "ok", "attempts", "retried", "retried_gt2", "rate_limited",
                  "prompt_tokens", "completion_tokens", "wall_s"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        for f in ("cost_usd", "saved_usd"):
            a, b = getattr(self, f), getattr(other, f)
            setattr(self, f, None if a is None or b is None else a + b)
        self.statuses.update(other.statuses)
        for k, v in other.reasons.items():
            self.reasons.setdefault(k, v)
        self.batch_ids += other.batch_ids

    def causes(self) -> str:
        parts = []
        for status, n in self.statuses.most_common():
            if status != "ok":
                why = self.reasons.get(status)
                parts.append(f"{status} {n}" + (f" (e.g. {why})" if why else ""))
        return "; ".join(parts)

    def line(self) -> str:
        cost = "unknown" if self.cost_usd is None else f"${self.cost_usd:.4f}"
        text = (f"{self.total} requests: {self.ok} ok, {self.failed} failed, {self.from_journal} from the journal, "
                f"{self.sent} sent ({self.attempts} attempts, {self.retried} retried, {self.retried_gt2} retried >2x, "
                f"{self.rate_limited} rate-limited); tokens in {self.prompt_tokens} out {self.completion_tokens}; "
                f"est. cost {cost}")
        if self.saved_usd:
            text += f" (journal saved ${self.saved_usd:.4f})"
        causes = self.causes()
        return text + (f"; failures: {causes}" if causes else "")

    def metrics(self) -> dict[str, float]:
        m = {"requests": self.total, "requests_ok": self.ok, "requests_failed": self.failed,
             "requests_from_journal": self.from_journal, "requests_sent": self.sent, "attempts": self.attempts,
             "requests_retried": self.retried, "requests_retried_gt2": self.retried_gt2,
             "rate_limited": self.rate_limited, "prompt_tokens": self.prompt_tokens,
             "completion_tokens": self.completion_tokens, "cost_usd": self.cost_usd if self.cost_usd is not None else -1.0}
        for status in STATUSES[1:]:
            m[f"requests_{status}"] = self.statuses.get(status, 0)
        return m


# ------------------------------------------------------------------------ rate limits


def parse_duration(text: str | None) -> float | None:
    """OpenAI's reset durations: '1s', '6m0s', '20ms', '1h2m3.5s', or plain seconds."""
    if not text:
        return None
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    total, num = 0.0, ""
    i = 0
    while i < len(text):
        c = text[i]
        if c.isdigit() or c == ".":
            num += c
        else:
            unit = c
            if text.startswith("ms", i):
                unit, i = "ms", i + 1
            try:
                value = float(num)
            except ValueError:
                return None
            total += value * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}.get(unit, 0)
            num = ""
        i += 1
    return total if not num else None


def retry_after_s(headers: dict[str, str]) -> float | None:
    """Seconds the server asks us to wait: retry-after-ms, retry-after, else the relevant x-ratelimit-reset-*."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if ra:
        try:
            return max(0.0, float(ra))
        except ValueError:
            import email.utils
            parsed = email.utils.parsedate_tz(ra)
            if parsed is not None:
                return max(0.0, email.utils.mktime_tz(parsed) - time.time())
    waits = []
    for kind in ("requests", "tokens"):
        remaining = headers.get(f"x-ratelimit-remaining-{kind}")
        if remaining is not None and remaining.strip() in ("0", "0.0"):
            w = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
            if w is not None:
                waits.append(w)
    return max(waits) if waits else None


class _Limiter:
    """Per-model RPM/TPM token buckets (continuous refill), FIFO, synced from x-ratelimit headers."""

    def __init__(self, rpm: int, tpm: int, burst_s: float):
        self.rpm, self.tpm = rpm, tpm
        self.r_rate, self.t_rate = rpm / 60.0, tpm / 60.0
        self.r_cap = max(1.0, rpm * burst_s / 60.0) if rpm else math.inf
        self.t_cap = max(1.0, tpm * burst_s / 60.0) if tpm else math.inf
        self.r, self.tk = self.r_cap, self.t_cap
        self.t = time.monotonic()
        self.blocked_until = 0.0
        self.adj_r = self.adj_t = 0.0  # cumulative corrections, to sync from stale headers without double counting
        self.lock: asyncio.Lock | None = None

    def _refill(self, now: float) -> None:
        dt = now - self.t
        if dt > 0:
            if self.rpm:
                self.r = min(self.r_cap, self.r + dt * self.r_rate)
            if self.tpm:
                self.tk = min(self.t_cap, self.tk + dt * self.t_rate)
            self.t = now

    async def acquire(self, tokens: float, stop: asyncio.Event) -> tuple[float, float, float, float] | None:
        """Take 1 request and `tokens` tokens, waiting in FIFO order; None when the run stops first."""
        if not (self.rpm or self.tpm):  # no limits configured: only a 429's pause applies
            wait = self.blocked_until - time.monotonic()
            if wait > 0 and await _sleep(wait + random.random() * min(0.1 * wait + 0.01, 1.0), stop):
                return None  # (jittered: the paused requests do not all come back at the same instant)
            return _NO_SNAP
        if self.lock is None:
            self.lock = asyncio.Lock()
        async with self.lock:
            while True:
                now = time.monotonic()
                self._refill(now)
                wait = self.blocked_until - now
                if self.rpm and self.r < 1:
                    wait = max(wait, (1 - self.r) / self.r_rate)
                need = min(tokens, self.t_cap)
                if self.tpm and self.tk < need:
                    wait = max(wait, (need - self.tk) / self.t_rate)
                if wait <= 0:
                    if self.rpm:
                        self.r -= 1
                    if self.tpm:
                        self.tk -= need
                    return self.r, self.tk, self.adj_r, self.adj_t
                if await _sleep(wait, stop):
                    return None

    def refund(self, tokens: float) -> None:
        """A 429: the tokens were not used; the request itself still counts (OpenAI counts refused requests)."""
        if self.tpm:
            self.tk = min(self.t_cap, self.tk + min(tokens, self.t_cap))

    def correct_tokens(self, delta: float) -> None:
        """The server counted `delta` more tokens for a request than we charged (negative: fewer)."""
        if self.tpm and delta:
            self.tk = min(self.t_cap, self.tk - delta)
            self.adj_t += delta

    def sync(self, snap: tuple[float, float, float, float] | None, headers: dict[str, str]) -> None:
        """Pull the buckets down to what the server says remains, net of corrections since `snap`."""
        if snap is None or snap is _NO_SNAP:
            return
        r_snap, t_snap, adj_r, adj_t = snap
        rem = headers.get("x-ratelimit-remaining-requests")
        if self.rpm and rem is not None:
            try:
                d = r_snap - float(rem) - (self.adj_r - adj_r)
            except ValueError:
                d = 0.0
            if d > 1.0:
                self.r -= d
                self.adj_r += d
        rem = headers.get("x-ratelimit-remaining-tokens")
        if self.tpm and rem is not None:
            try:
                d = t_snap - float(rem) - (self.adj_t - adj_t)
            except ValueError:
                d = 0.0
            if d > max(1.0, 0.002 * self.t_cap):
                self.tk -= d
                self.adj_t += d

    def block(self, seconds: float) -> None:
        self.blocked_until = max(self.blocked_until, time.monotonic() + seconds)


_NO_SNAP = (0.0, 0.0, 0.0, 0.0)


async def _sleep(seconds: float, stop: asyncio.Event) -> bool:
    """Sleep, waking early when `stop` is set; True if it was."""
    if stop.is_set():
        return True
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
        return True
    except asyncio.TimeoutError:
        return False


# --------------------------------------------------------------------------- transport


class _ConnError(Exception):
    """Connection refused/reset/closed before a full reply."""


class _Timeout(Exception):
    """No full reply within the request timeout."""


_timeout_ctx = getattr(asyncio, "timeout", None)


class FastTransport:
    """Keep-alive HTTP/1.1 connections per origin (plain or TLS), for many small JSON requests.

    `send()` is the hot path; `handle_async_request()` lets the SDK's httpx2 client use the same
    pool (files, batches, models). One request at a time per connection; no pipelining.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None):
        self._idle: dict[tuple, collections.deque] = collections.defaultdict(collections.deque)
        self._ssl = ssl_context
        self.opened = 0

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            try:
                import certifi
                self._ssl = ssl.create_default_context(cafile=certifi.where())
            except ImportError:
                self._ssl = ssl.create_default_context()
        return self._ssl

    async def _open(self, origin: tuple) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        scheme, host, port = origin
        try:
            if scheme == "https":
                return await asyncio.open_connection(host, port, ssl=self._ssl_context(), server_hostname=host, limit=1 << 24)
            return await asyncio.open_connection(host, port, limit=1 << 24)
        except (OSError, ssl.SSLError) as exc:
            raise _ConnError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        finally:
            self.opened += 1

    async def send(self, origin: tuple, raw: bytes, timeout: float) -> tuple[int, dict[str, str], bytes]:
        """Send one complete request; (status, lower-case headers, body)."""
        if _timeout_ctx is not None:
            try:
                async with _timeout_ctx(timeout):
                    return await self._exchange(origin, raw)
            except TimeoutError:
                raise _Timeout(f"no reply within {timeout:g}s") from None
        try:
            return await asyncio.wait_for(self._exchange(origin, raw), timeout)
        except asyncio.TimeoutError:
            raise _Timeout(f"no reply within {timeout:g}s") from None

    async def _exchange(self, origin: tuple, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        idle = self._idle[origin]
        conn = None
        while idle:
            conn = idle.pop()
            if conn[0].at_eof():  # the server closed it while idle
                conn[1].close()
                conn = None
                continue
            break
        reader, writer = conn if conn is not None else await self._open(origin)
        ok = False
        try:
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head[:-4].decode("latin-1").split("\r\n")
            try:
                status = int(lines[0].split(" ", 2)[1])
            except (IndexError, ValueError):
                raise _ConnError(f"not an HTTP reply: {lines[0][:80]!r}") from None
            headers: dict[str, str] = {}
            for line in lines[1:]:
                k, sep, v = line.partition(":")
                if sep:
                    headers[k.strip().lower()] = v.strip()
            close = headers.get("connection", "").lower() == "close"
            if "chunked" in headers.get("transfer-encoding", "").lower():
                chunks = []
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while (await reader.readuntil(b"\r\n")) != b"\r\n":
                            pass
                        break
                    chunks.append(await reader.readexactly(size))
                    await reader.readexactly(2)
                body = b"".join(chunks)
            elif "content-length" in headers:
                n = int(headers["content-length"])
                body = await reader.readexactly(n) if n else b""
            else:
                body = await reader.read()
                close = True
            enc = headers.get("content-encoding", "").lower()
            if enc in ("gzip", "deflate") and body:
                import zlib
                body = zlib.decompress(body, 47 if enc == "gzip" else 15)
            ok = not close
            return status, headers, body
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError) as exc:
            raise _ConnError(f"connection to {origin[1]}:{origin[2]} lost: {type(exc).__name__}: {exc}") from None
        finally:
            if ok:
                idle.append((reader, writer))
            else:
                writer.close()

    # -- the SDK's transport (httpx2.AsyncBaseTransport interface)

    async def handle_async_request(self, request: Any) -> Any:
        import httpx2

        url = request.url
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        body = await request.aread()
        target = url.raw_path.decode("ascii") if isinstance(url.raw_path, bytes) else str(url.raw_path)
        head = [f"{request.method} {target} HTTP/1.1\r\n".encode("ascii")]
        has_host = False
        for k, v in request.headers.raw:
            if k.lower() == b"host":
                has_host = True
            if k.lower() in (b"content-length", b"transfer-encoding", b"accept-encoding"):
                continue
            head.append(k + b": " + v + b"\r\n")
        if not has_host:
            head.append(b"Host: " + url.host.encode("idna") + b"\r\n")
        head.append(b"Accept-Encoding: identity\r\nContent-Length: %d\r\n\r\n" % len(body))
        t = request.extensions.get("timeout") or {}
        timeout = max((v for v in t.values() if v), default=600.0)
        try:
            status, headers, content = await self.send(origin, b"".join(head) + body, timeout)
        except _Timeout as exc:
            raise httpx2.ReadTimeout(str(exc), request=request) from None
        except _ConnError as exc:
            raise httpx2.ConnectError(str(exc), request=request) from None
        return httpx2.Response(status, headers=list(headers.items()), content=content, request=request)

    async def aclose(self) -> None:
        for q in self._idle.values():
            while q:
                q.pop()[1].close()

    async def __aenter__(self) -> "FastTransport":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


# ----------------------------------------------------------------------------- progress


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _si(x: float) -> str:
    return f"{x / 1e6:.1f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


class _Progress:
    """Progress of one run: [cai] lines every `every_s`, and a rich bar when stdout is a terminal."""

    def __init__(self, desc: str, total: int, every_s: float, prices: tuple[float, float] | None, discount: float = 1.0):
        self.desc, self.total, self.every_s = desc, total, every_s
        self.prices, self.discount = prices, discount
        self.done = self.errors = self.retries = self.tokens_in = self.tokens_out = 0
        self.start = time.monotonic()
        self._bar = None
        if total and sys.stdout.isatty():
            try:
                from rich.progress import BarColumn, Progress, TextColumn
                self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                                     transient=True)
                self._task = self._bar.add_task(desc, total=total, info="")
                self._bar.start()
            except Exception:  # noqa: BLE001 - a bar is a nicety
                self._bar = None

    def cost(self) -> float | None:
        if self.prices is None:
            return None
        return (self.tokens_in * self.prices[0] + self.tokens_out * self.prices[1]) / 1e6 * self.discount

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        tok = (self.tokens_in + self.tokens_out) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        cost = self.cost()
        return (f"{self.desc}: {self.done}/{self.total} ({pct:.0f}%) | {rate:.1f} req/s | {_si(tok)} tok/s | "
                f"elapsed {_clock(elapsed)} | ETA {_clock(eta)} | errors {self.errors} | retries {self.retries} | "
                f"est. cost {'unknown' if cost is None else f'${cost:.4f}'}")

    def tick(self) -> None:
        log(self.line())
        self.refresh()

    def refresh(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, info=self.line().split(" | ", 1)[-1])

    async def run(self, stop: asyncio.Event) -> None:
        last = time.monotonic()
        while not stop.is_set():
            if await _sleep(0.5 if self._bar is not None else self.every_s, stop):
                return
            if time.monotonic() - last >= self.every_s:
                last = time.monotonic()
                log(self.line())
            self.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


# ------------------------------------------------------------------------------- client


class _Run:
    """State of one `arun` call."""

    def __init__(self, client: "LLMClient", todo: list[Request], desc: str):
        self.todo = todo
        self.queue = collections.deque(todo)
        self.stop = asyncio.Event()
        self.why_stop: str | None = None
        self.fatal: TeacherError | None = None
        self.signal: int | None = None
        self.results: dict[str, Result] = {}
        self.summary = RunSummary()
        self.finished = self.failed_n = 0
        self.in_flight = 0
        self.progress = _Progress(desc, len(todo), client.cfg.progress_every_s, client.cfg.prices(),
                                  client.cfg.batch_discount if client.cfg.batch else 1.0)


class LLMClient:
    """Sends `Request`s to one OpenAI-compatible endpoint; see the module doc.

    ``results = client.run(requests)`` (or ``await client.arun(requests)``) returns one
    `Result` per request, in order. Identical requests are sent once. `summary` accumulates
    over runs, `last_summary` is the latest run's.
    """

    def __init__(self, cfg: ClientConfig | None = None, journal: Any = None, *, api_key: str | None = None):
        self.cfg = cfg or ClientConfig()
        self.journal = journal
        self.base_url = self.cfg.resolved_base_url()
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TeacherError(f"base URL {self.base_url!r} is not an http(s) URL (check --base-url / base_url / "
                               f"OPENAI_BASE_URL)", "base_url")
        self.origin = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        self._path = parts.path.rstrip("/")
        self._host = parts.netloc
        self._api_key_arg = api_key
        self.summary = RunSummary()
        self.last_summary = RunSummary()
        self._limiters: dict[str, _Limiter] = {}
        self._ratio_est = self._ratio_act = 0.0  # prompt tokens: sum of estimates vs. sum of usage
        self._preflight_done = False
        self._proxy = any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                                                        "ALL_PROXY", "all_proxy"))

    # -------------------------------------------------------------- settings

    def api_key(self) -> str:
        key = self._api_key_arg or os.environ.get(self.cfg.api_key_env) or os.environ.get("OPENAI_API_KEY")
        if key:
            return key
        if urlsplit(self.base_url).hostname == "api.openai.com":
            raise TeacherError(f"no API key for {self.base_url}: set {self.cfg.api_key_env}"
                               + ("" if self.cfg.api_key_env == "OPENAI_API_KEY" else " (or OPENAI_API_KEY)")
                               + ", or point --base-url / OPENAI_BASE_URL at a server that needs none", "api_key")
        return "EMPTY"  # vLLM and most local servers accept any key

    def _use_sdk_transport(self) -> bool:
        return self.cfg.transport == "sdk" or self._proxy

    def _sdk(self, transport: FastTransport | None) -> Any:
        import openai

        kwargs: dict[str, Any] = dict(api_key=self.api_key(), base_url=self.base_url, max_retries=0,
                                      timeout=self.cfg.timeout_s)
        if transport is not None and not self._use_sdk_transport():
            import httpx2
            kwargs["http_client"] = httpx2.AsyncClient(transport=transport, timeout=self.cfg.timeout_s)
        return openai.AsyncOpenAI(**kwargs)

    def _head(self, sdk: Any, kind: str) -> bytes:
        headers = {k: v for k, v in sdk.default_headers.items() if isinstance(v, str)}
        headers.update(sdk.auth_headers)
        lines = [f"POST {self._path}{_PATHS[kind]} HTTP/1.1", f"Host: {self._host}", "Accept-Encoding: gzip"]
        lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "accept-encoding", "content-length")]
        return ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")

    def limiter(self, model: str) -> _Limiter:
        """The model's buckets (with no rpm/tpm configured, only the pause after a 429 applies)."""
        lim = self._limiters.get(model)
        if lim is None:
            lim = self._limiters[model] = _Limiter(self.cfg.rpm, self.cfg.tpm, self.cfg.burst_s)
        return lim

    def estimate_prompt_tokens(self, req: Request) -> float:
        """Prompt tokens before the reply says: characters / chars_per_token, times the ratio of usage to
        estimate seen so far, plus 5%: an over-estimate is refunded when the reply's usage arrives, an
        under-estimate costs a 429."""
        raw = req.chars / self.cfg.chars_per_token
        if self._ratio_est > 200:  # enough replies to trust the correction
            raw *= self._ratio_act / self._ratio_est
        return raw * 1.05

    # ------------------------------------------------------------------ runs

    def run(self, requests: Sequence[Request], desc: str = "requests") -> list[Result]:
        """Synchronous `arun` (its own event loop; from inside a running loop, in a helper thread)."""
        return run_sync(self.arun(requests, desc))

    async def arun(self, requests: Sequence[Request], desc: str = "requests") -> list[Result]:
        t0 = time.monotonic()
        results: dict[str, Result] = {}
        todo: list[Request] = []
        seen: set[str] = set()
        journal = self.journal
        if journal is not None:
            journal.open()
        saved_in = saved_out = 0
        for req in requests:
            if req.key in seen:
                continue
            seen.add(req.key)
            rec = journal.get(req.key) if journal is not None else None
            if rec is not None:
                res = Result.from_record(req.key, rec)
                results[req.key] = res
                saved_in += res.prompt_tokens
                saved_out += res.completion_tokens
            else:
                todo.append(req)
        run = _Run(self, todo, desc)
        s = run.summary
        s.total, s.from_journal = len(seen), len(seen) - len(todo)
        prices = self.cfg.prices()
        s.cost_usd = None if prices is None else 0.0
        s.saved_usd = None if prices is None else (saved_in * prices[0] + saved_out * prices[1]) / 1e6
        if s.from_journal:
            log(f"{desc}: {s.from_journal} of {s.total} requests found in the journal; {len(todo)} to send")
        try:
            if todo:
                if journal is not None:
                    with journal.activate(on_signal=lambda sig: self._on_signal(run, sig)):
                        await self._dispatch(run)
                        if run.signal is not None:
                            journal.reraise(run.signal)
                else:
                    await self._dispatch(run)
        finally:
            run.progress.close()
            s.wall_s = time.monotonic() - t0
            for req in todo:
                if req.key not in run.results:
                    run.results[req.key] = Result(req.key, "not_sent", reason=run.why_stop or "the run stopped first")
                    s.statuses["not_sent"] += 1
                    s.reasons.setdefault("not_sent", run.why_stop or "the run stopped first")
            for res in results.values():
                s.statuses[res.status] += 1
                if res.ok:
                    s.ok += 1
            self.last_summary = s
            self.summary.add(s)
        results.update(run.results)
        if todo or s.from_journal:
            log(f"{desc}: done in {_clock(s.wall_s)}: {s.line()}")
        if run.fatal is not None:
            run.fatal.summary = s
            raise run.fatal
        return [results[r.key] for r in requests]

    def _on_signal(self, run: _Run, sig: int) -> None:
        run.signal = sig
        self._stop(run, f"stopped by {signal.Signals(sig).name}")
        try:
            loop = self._loop
            loop.call_soon_threadsafe(lambda: None)  # wake the loop
        except Exception:  # noqa: BLE001
            pass

    def _stop(self, run: _Run, why: str, fatal: TeacherError | None = None) -> None:
        if run.why_stop is None:
            run.why_stop = why
        if fatal is not None and run.fatal is None:
            run.fatal = fatal
        run.stop.set()

    async def _dispatch(self, run: _Run) -> None:
        self._loop = asyncio.get_running_loop()
        if self.cfg.batch:
            await self._run_batches(run)
            return
        transport = FastTransport()
        sdk = self._sdk(transport)
        try:
            if self.cfg.preflight and not self._preflight_done:
                await self._preflight(sdk)
            heads = {kind: self._head(sdk, kind) for kind in _PATHS}
            progress_task = asyncio.ensure_future(run.progress.run(run.stop))
            n = min(self.cfg.max_concurrency, len(run.todo))
            workers = [asyncio.ensure_future(self._worker(run, transport, sdk, heads)) for _ in range(n)]
            done_all = asyncio.gather(*workers)
            watchdog = asyncio.ensure_future(self._grace(run, workers))
            try:
                await done_all
            except asyncio.CancelledError:
                if not run.stop.is_set():
                    raise
            finally:
                watchdog.cancel()
                run.stop.set()
                await asyncio.gather(progress_task, return_exceptions=True)
            run.progress.tick()
        finally:
            await sdk.close()
            await transport.aclose()

    async def _grace(self, run: _Run, workers: list) -> None:
        """After a signal, give requests in flight `shutdown_grace_s` to finish, then cancel them."""
        await run.stop.wait()
        if run.signal is None:
            return
        await asyncio.sleep(self.cfg.shutdown_grace_s)
        for w in workers:
            w.cancel()

    async def _preflight(self, sdk: Any) -> None:
        import openai

        where = f"{self.base_url} (from {'--base-url/base_url' if self.cfg.base_url else 'OPENAI_BASE_URL' if os.environ.get('OPENAI_BASE_URL') else 'the default'})"
        last: Exception | None = None
        for attempt in range(3):
            try:
                page = await sdk.models.list(timeout=min(10.0, self.cfg.timeout_s))
                names = [m.id for m in getattr(page, "data", []) or []]
                if names and self.cfg.model not in names:
                    log(f"note: model {self.cfg.model!r} is not among the {len(names)} models listed by {self.base_url} "
                        f"({', '.join(names[:5])}{'…' if len(names) > 5 else ''})")
                self._preflight_done = True
                return
            except openai.AuthenticationError as exc:
                raise TeacherError(f"the endpoint {self.base_url} rejected the API key from {self.cfg.api_key_env} "
                                   f"(401: {_err_message(exc.body) or exc.message})", "auth") from None
            except openai.APIStatusError:
                self._preflight_done = True  # no /models here (or not for us): the real requests will tell
                return
            except openai.APIConnectionError as exc:
                last = exc
                if attempt < 2:
                    await asyncio.sleep(0.5 * (attempt + 1))  # a server that is just starting
        cause = getattr(last, "__cause__", None) or last
        raise TeacherError(f"cannot reach the model endpoint {where}: {cause}. Check the URL (it usually ends in /v1) "
                           f"and that the server is running", "unreachable") from None

    async def _worker(self, run: _Run, transport: FastTransport, sdk: Any, heads: dict[str, bytes]) -> None:
        queue, stop = run.queue, run.stop
        while queue and not stop.is_set():
            req = queue.popleft()
            run.in_flight += 1
            try:
                res = await self._do(run, req, transport, sdk, heads)
            finally:
                run.in_flight -= 1
            if res is not None:
                self._finish(run, req, res)

    def _finish(self, run: _Run, req: Request, res: Result) -> None:
        run.results[req.key] = res
        s, p = run.summary, run.progress
        s.sent += 1
        s.attempts += res.attempts
        if res.attempts > 1:
            s.retried += 1
            p.retries += res.attempts - 1
        if res.attempts > 3:
            s.retried_gt2 += 1
        s.statuses[res.status] += 1
        p.done += 1
        run.finished += 1
        if res.ok:
            s.ok += 1
            s.prompt_tokens += res.prompt_tokens
            s.completion_tokens += res.completion_tokens
            p.tokens_in += res.prompt_tokens
            p.tokens_out += res.completion_tokens
        else:
            s.reasons.setdefault(res.status, res.reason)
            p.errors += 1
            run.failed_n += 1
        if self.journal is not None and res.status in JOURNALED:
            self.journal.add_result(req.key, res.record(), req.payload.decode("utf-8"))
        cost = p.cost()
        s.cost_usd = cost
        if run.finished >= self.cfg.error_budget_min and run.failed_n > self.cfg.error_budget * run.finished \
                and run.fatal is None and not run.stop.is_set():
            left = len(run.queue)
            msg = (f"stopped calling {self.base_url}: {run.failed_n} of {run.finished} finished requests failed "
                   f"({100.0 * run.failed_n / run.finished:.0f}% > error_budget {100 * self.cfg.error_budget:.0f}%): "
                   f"{s.causes()}. {left} requests were not sent; finished ones are "
                   f"{'kept in the journal' if self.journal is not None else 'not journaled'}.")
            self._stop(run, "error budget exceeded", ErrorBudgetExceeded(msg, "error_budget"))

    async def _send(self, req: Request, transport: FastTransport, sdk: Any, heads: dict[str, bytes]) -> tuple[int, dict, bytes]:
        if not self._use_sdk_transport():
            return await transport.send(self.origin, heads[req.kind] + b"%d\r\n\r\n" % len(req.payload) + req.payload,
                                        self.cfg.timeout_s)
        import httpx2
        import openai

        try:
            resp = await sdk.post(_PATHS[req.kind], body=req.body, cast_to=httpx2.Response,
                                  options={"timeout": self.cfg.timeout_s, "max_retries": 0})
            return resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, resp.content
        except openai.APIStatusError as exc:
            return exc.status_code, {k.lower(): v for k, v in exc.response.headers.items()}, exc.response.content
        except openai.APITimeoutError:
            raise _Timeout(f"no reply within {self.cfg.timeout_s:g}s") from None
        except openai.APIConnectionError as exc:
            raise _ConnError(f"{exc.__cause__ or exc}") from None

    async def _do(self, run: _Run, req: Request, transport: FastTransport, sdk: Any, heads: dict[str, bytes]) -> Result | None:
        cfg = self.cfg
        limiter = self.limiter(req.model)
        attempts = 0
        last = ""
        while True:
            est = self.estimate_prompt_tokens(req)
            charge = est + req.max_tokens
            snap = await limiter.acquire(charge, run.stop)
            if snap is None:  # the run stopped while this request waited for its turn
                return Result(req.key, "not_sent", reason=run.why_stop or "stopped", attempts=attempts) if attempts else None
            attempts += 1
            retry_wait: float | None = None
            paused = False
            try:
                status, headers, content = await self._send(req, transport, sdk, heads)
            except _Timeout as exc:
                last = f"timeout: {exc}"
            except _ConnError as exc:
                last = f"connection error: {exc}"
            else:
                if status == 429:
                    limiter.refund(charge)
                limiter.sync(snap, headers)
                if status == 200:
                    return self._parse(req, content, attempts, limiter, est)  # ok, no_choices or malformed_reply
                if status == 429:
                    body = _json_or_none(content)
                    code = _err_code(body)
                    if code == "insufficient_quota":
                        self._stop(run, "quota exhausted", TeacherError(
                            f"the endpoint {self.base_url} says the account's quota is exhausted (429 insufficient_quota: "
                            f"{_err_message(body)}); add credit or use another key", "quota"))
                        return Result(req.key, "not_sent", reason="quota exhausted", attempts=attempts)
                    run.summary.rate_limited += 1
                    retry_wait = retry_after_s(headers)
                    if retry_wait is not None:
                        limiter.block(retry_wait)  # the whole model waits, not just this request
                        paused = True
                    last = f"429 rate limited: {_err_message(body) or 'too many requests'}"
                elif status in (408, 409) or status >= 500:
                    retry_wait = retry_after_s(headers) if "retry-after" in headers or "retry-after-ms" in headers else None
                    last = f"HTTP {status}: {_err_message(_json_or_none(content)) or _snippet(content)}"
                else:
                    return self._client_error(run, req, status, content, attempts)
            # A transient failure: retry after Retry-After, else a jittered exponential backoff.
            if attempts > cfg.max_retries or run.stop.is_set():
                if run.stop.is_set() and attempts <= cfg.max_retries:
                    return Result(req.key, "not_sent", reason=f"{run.why_stop} (last attempt: {last})", attempts=attempts)
                return Result(req.key, "retries_exhausted", reason=f"{attempts} attempts; last: {last}", attempts=attempts)
            delay = min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (attempts - 1))
            delay = delay / 2 + random.random() * delay / 2
            if retry_wait is not None:
                # After a 429 the model's limiter is paused until then (and keeps the order); else wait here.
                delay = 0.0 if paused else retry_wait + random.random() * min(0.1 * retry_wait + 0.01, 1.0)
            if delay > 0 and await _sleep(delay, run.stop):
                return Result(req.key, "not_sent", reason=f"{run.why_stop} (last attempt: {last})", attempts=attempts)

    def _parse(self, req: Request, content: bytes, attempts: int, limiter: _Limiter | None, est: float) -> Result:
        try:
            data = json.loads(content)
            choices = data["choices"]
            if not isinstance(choices, list):
                raise TypeError("choices is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            return Result(req.key, "malformed_reply", attempts=attempts,
                          reason=f"the server's 200 reply is not a completion ({type(exc).__name__}: {exc}; "
                                 f"{len(content)} bytes: {_snippet(content)})")
        usage = data.get("usage") or {}
        pt, ct = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
        if pt and limiter is not None:
            limiter.correct_tokens(pt - est)
        if pt:
            self._ratio_est += req.chars / self.cfg.chars_per_token
            self._ratio_act += pt
        if not choices:
            return Result(req.key, "no_choices", attempts=attempts,
                          reason=f"the server replied 200 with no choices (id {data.get('id')!r}, model {data.get('model')!r})")
        c0 = choices[0]
        try:
            if req.kind == "chat":
                msg = c0.get("message") or {}
                text = msg.get("content") or ""
                top = None
                lp = c0.get("logprobs")
                if lp and lp.get("content"):
                    top = [[t["token"], t["logprob"]] for t in lp["content"][0].get("top_logprobs") or []]
            else:
                text = c0.get("text") or ""
                top = None
                lp = c0.get("logprobs")
                if lp and lp.get("top_logprobs"):
                    top = [[k, v] for k, v in (lp["top_logprobs"][0] or {}).items()]
        except (AttributeError, KeyError, TypeError, IndexError) as exc:
            return Result(req.key, "malformed_reply", attempts=attempts,
                          reason=f"the server's reply has an unexpected shape ({type(exc).__name__}: {exc}; {_snippet(content)})")
        return Result(req.key, "ok", text, top, pt, ct, attempts=attempts, finish=c0.get("finish_reason"))

    def _client_error(self, run: _Run, req: Request, status: int, content: bytes, attempts: int) -> Result:
        body = _json_or_none(content)
        msg = _err_message(body) or _snippet(content)
        code = _err_code(body)
        if status == 401:
            self._stop(run, "API key rejected", TeacherError(
                f"the endpoint {self.base_url} rejected the API key from {self.cfg.api_key_env} (401: {msg})", "auth"))
            return Result(req.key, "not_sent", reason="API key rejected", attempts=attempts)
        if status == 403:
            self._stop(run, "permission denied", TeacherError(
                f"the endpoint {self.base_url} refused access to model {req.model!r} (403: {msg})", "permission"))
            return Result(req.key, "not_sent", reason="permission denied", attempts=attempts)
        if status == 404:
            if body is not None and ("model" in (msg or "").lower() or code == "model_not_found"):
                err = TeacherError(f"model {req.model!r} not found at {self.base_url} (404: {msg}); check --model / "
                                   f"the config's model", "model_not_found")
            else:
                err = TeacherError(f"{self.base_url}{_PATHS[req.kind]} does not exist (404: {msg}); the base URL is "
                                   f"probably wrong (it usually ends in /v1)", "base_url")
            self._stop(run, err.cause, err)
            return Result(req.key, "not_sent", reason=err.cause, attempts=attempts)
        if status == 400 and (code == "context_length_exceeded" or "context length" in (msg or "").lower()
                              or "maximum context" in (msg or "").lower()):
            return Result(req.key, "context_length", reason=f"the prompt does not fit the model's context (400: {msg})",
                          attempts=attempts)
        if status == 413:
            return Result(req.key, "too_large", reason=f"the request is too large (413: {msg})", attempts=attempts)
        return Result(req.key, "bad_request", reason=f"the server refused the request ({status}: {msg})", attempts=attempts)

    # ----------------------------------------------------------------- batches

    async def _run_batches(self, run: _Run) -> None:
        """Batch API mode: resume batches the journal knows, submit the rest, poll, map back."""
        journal = self.journal
        transport = FastTransport()
        sdk = self._sdk(transport)
        try:
            if self.cfg.preflight and not self._preflight_done:
                await self._preflight(sdk)
            by_key = {r.key: r for r in run.todo}
            jobs: list[tuple[str, list[str]]] = []
            claimed: set[str] = set()
            if journal is not None:
                for b in journal.pending_batches():
                    keys = [k for k in b["keys"] if k in by_key and k not in claimed]
                    if keys:
                        log(f"{run.progress.desc}: resuming batch {b['id']} ({len(keys)} of our requests)")
                        jobs.append((b["id"], keys))
                        claimed.update(keys)
            fresh: dict[str, list[Request]] = collections.defaultdict(list)
            for r in run.todo:
                if r.key not in claimed:
                    fresh[r.kind].append(r)
            for kind, reqs in fresh.items():
                for i in range(0, len(reqs), self.cfg.batch_max_requests):
                    chunk = reqs[i:i + self.cfg.batch_max_requests]
                    bid = await self._submit_batch(sdk, kind, chunk)
                    jobs.append((bid, [r.key for r in chunk]))
            run.summary.batch_ids = [b for b, _ in jobs]
            await asyncio.gather(*(self._await_batch(run, sdk, bid, keys, by_key) for bid, keys in jobs))
            run.progress.tick()
        finally:
            await sdk.close()
            await transport.aclose()

    async def _sdk_call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """An SDK call (files, batches) with our retries on transient errors and clear fatal errors."""
        import openai

        for attempt in range(self.cfg.max_retries + 1):
            try:
                return await fn(*args, **kwargs)
            except openai.AuthenticationError as exc:
                raise TeacherError(f"{what}: the endpoint {self.base_url} rejected the API key (401: {exc.message})", "auth") from None
            except openai.NotFoundError as exc:
                raise TeacherError(f"{what}: not found at {self.base_url} (404: {exc.message}); does this server "
                                   f"implement the Batch API? (vLLM does not: use batch: false)", "base_url") from None
            except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError) as exc:
                if attempt >= self.cfg.max_retries:
                    raise TeacherError(f"{what} failed after {attempt + 1} attempts: {exc}", "unreachable") from None
                wait = None
                if isinstance(exc, openai.APIStatusError):
                    wait = retry_after_s({k.lower(): v for k, v in exc.response.headers.items()})
                if wait is None:
                    wait = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * 2 ** attempt) * (0.5 + random.random() / 2)
                await asyncio.sleep(wait)
            except openai.APIStatusError as exc:
                raise TeacherError(f"{what} refused by {self.base_url} ({exc.status_code}: {exc.message})", "batch") from None

    async def _submit_batch(self, sdk: Any, kind: str, reqs: list[Request]) -> str:
        url = "/v1" + _PATHS[kind]
        lines = b"".join(b'{"custom_id":"%s","method":"POST","url":"%s","body":%s}\n'
                         % (r.key.encode(), url.encode(), r.payload) for r in reqs)
        f = await self._sdk_call("uploading the batch input file", sdk.files.create,
                                 file=(f"cai-batch-{reqs[0].key[:12]}.jsonl", lines), purpose="batch")
        batch = await self._sdk_call("creating the batch", sdk.batches.create, input_file_id=f.id, endpoint=url,
                                     completion_window=self.cfg.batch_completion_window,
                                     metadata={"cai": "teacher", "requests": str(len(reqs))})
        if self.journal is not None:
            self.journal.add_batch(batch.id, [r.key for r in reqs], url, input_file_id=f.id)
            self.journal.flush()  # now: a crash after this must not submit the same requests again
        log(f"submitted batch {batch.id} ({len(reqs)} requests, input file {f.id}, window {self.cfg.batch_completion_window})")
        return batch.id

    async def _await_batch(self, run: _Run, sdk: Any, bid: str, keys: list[str], by_key: dict[str, Request]) -> None:
        deadline = time.monotonic() + self.cfg.batch_max_wait_h * 3600
        last_line = 0.0
        while True:
            b = await self._sdk_call(f"polling batch {bid}", sdk.batches.retrieve, bid)
            status = b.status
            if status in ("completed", "failed", "expired", "cancelled"):
                break
            if time.monotonic() - last_line >= self.cfg.progress_every_s:
                last_line = time.monotonic()
                rc = b.request_counts
                log(f"batch {bid}: {status}" + (f", {rc.completed}/{rc.total} done, {rc.failed} failed" if rc else ""))
            if time.monotonic() > deadline:
                for k in keys:
                    self._finish(run, by_key[k], Result(k, "batch_failed", reason=f"batch {bid} still {status} after "
                                 f"{self.cfg.batch_max_wait_h:g} h; rerun to resume polling it", source="batch"))
                return
            if await _sleep(self.cfg.batch_poll_s, run.stop):
                return
        found: dict[str, Result] = {}
        for fid in (b.output_file_id, b.error_file_id):
            if not fid:
                continue
            content = await self._sdk_call(f"downloading {fid} of batch {bid}", sdk.files.content, fid)
            data = content.content if hasattr(content, "content") else bytes(content)
            for line in data.splitlines():
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                    key = item["custom_id"]
                except (ValueError, KeyError, TypeError):
                    continue
                req = by_key.get(key)
                if req is None:
                    continue
                found[key] = self._batch_item(req, item)
        why = f"batch {bid} ended {b.status}"
        if b.status == "failed" and getattr(b, "errors", None):
            errs = getattr(b.errors, "data", None) or []
            if errs:
                why += f": {getattr(errs[0], 'message', errs[0])}"
        for k in keys:
            res = found.get(k) or Result(k, "batch_failed", reason=f"{why} without a result for this request", source="batch")
            self._finish(run, by_key[k], res)
        if self.journal is not None:
            self.journal.finish_batch(bid, b.status)
            self.journal.flush()

    def _batch_item(self, req: Request, item: dict) -> Result:
        resp = item.get("response") or {}
        code = resp.get("status_code")
        body = resp.get("body")
        if code == 200 and isinstance(body, dict):
            res = self._parse(req, json.dumps(body).encode(), 1, None, 0.0)
        elif code is not None:
            msg = _err_message(body) or str(body)[:200]
            if code == 400 and (_err_code(body) == "context_length_exceeded" or "context length" in msg.lower()):
                res = Result(req.key, "context_length", reason=f"the prompt does not fit the model's context (400: {msg})")
            elif code in (400, 422):
                res = Result(req.key, "bad_request", reason=f"the server refused the request ({code}: {msg})")
            else:
                res = Result(req.key, "batch_failed", reason=f"batch request failed ({code}: {msg})")
        else:
            err = item.get("error") or {}
            res = Result(req.key, "batch_failed", reason=f"batch request failed: {err.get('code')}: {err.get('message')}")
        res.source, res.attempts = "batch", 1
        return res


# ------------------------------------------------------------------------------ helpers


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


def run_sync(coro: Any) -> Any:
    """Run a coroutine to completion from synchronous code (in a helper thread if a loop is already running)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            out["error"] = exc

    t = threading.Thread(target=target, name="cai-llm-client")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def client_config_from(source: Any, **overrides: Any) -> ClientConfig:
    """A ClientConfig from any config object (e.g. TeacherConfig): every attribute named like a ClientConfig field."""
    if isinstance(source, ClientConfig) and not overrides:
        return source
    names = [f.name for f in dataclasses.fields(ClientConfig)]
    values = {n: getattr(source, n) for n in names if source is not None and hasattr(source, n)}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ClientConfig(**values)


__all__ = ["ClientConfig", "ErrorBudgetExceeded", "FastTransport", "LLMClient", "PRICES", "Request", "Result",
           "RunSummary", "STATUSES", "TeacherError", "chat_request", "client_config_from", "completion_request",
           "parse_duration", "retry_after_s", "run_sync"]
