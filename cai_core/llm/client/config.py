"""`ClientConfig`: how to reach an OpenAI-compatible endpoint and how hard to push it."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Literal

from cai_core.config.base import ConfigBase, require

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


@dataclass(frozen=True)
class ClientConfig(ConfigBase):
    """How to reach an OpenAI-compatible endpoint and how hard to push it."""

    #: Endpoint base URL, e.g. http://vllm:8000/v1. Empty: OPENAI_BASE_URL, else the OpenAI API.
    base_url: str | None = None
    #: Model name at the endpoint.
    model: str = "gpt-4o-mini"
    #: Environment variable holding the API key (OPENAI_API_KEY is also tried). Only the OpenAI API requires one.
    api_key_env: str = "OPENAI_API_KEY"
    #: Most requests in flight at once: the ceiling of the adaptive window, or the fixed number with rpm/tpm
    #: given or adaptive_concurrency off.
    max_concurrency: int = 256
    #: Without rpm/tpm: find the endpoint's limit by itself; the in-flight window grows while replies come back
    #: without 429s and latency holds, and is cut on 429s and latency inflation (off: always max_concurrency).
    adaptive_concurrency: bool = True
    #: Requests in flight at first when the window adapts (at most max_concurrency).
    initial_concurrency: int = 16
    #: Requests per minute allowed per model (0: learned from the server's x-ratelimit-* headers, if it sends
    #: them). Given, rpm/tpm win: nothing is learned and max_concurrency is fixed.
    rpm: int = 0
    #: Tokens per minute allowed per model, prompt + max_tokens (0: learned as rpm is).
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
        require(self.initial_concurrency >= 1, "initial_concurrency", "must be >= 1")
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


def client_config_from(source: Any, **overrides: Any) -> ClientConfig:
    """A ClientConfig from any config object (e.g. TeacherConfig): every attribute named like a ClientConfig field."""
    if isinstance(source, ClientConfig) and not overrides:
        return source
    names = [f.name for f in dataclasses.fields(ClientConfig)]
    values = {n: getattr(source, n) for n in names if source is not None and hasattr(source, n)}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ClientConfig(**values)
