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

from cai_core.llm.client.client import LLMClient, run_sync
from cai_core.llm.client.config import PRICES, ClientConfig, client_config_from
from cai_core.llm.client.errors import ErrorBudgetExceeded, TeacherError
from cai_core.llm.client.ratelimit import parse_duration, retry_after_s
from cai_core.llm.client.requests import STATUSES, Request, Result, chat_request, completion_request
from cai_core.llm.client.summary import RunSummary
from cai_core.llm.client.transport import FastTransport

__all__ = ["ClientConfig", "ErrorBudgetExceeded", "FastTransport", "LLMClient", "PRICES", "Request", "Result",
           "RunSummary", "STATUSES", "TeacherError", "chat_request", "client_config_from", "completion_request",
           "parse_duration", "retry_after_s", "run_sync"]
