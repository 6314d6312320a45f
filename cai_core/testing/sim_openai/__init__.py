"""A simulated OpenAI-compatible HTTP server for tests and benchmarks (loopback only).

Endpoints (under /v1): ``POST chat/completions`` (with ``logprobs``/``top_logprobs``),
``POST completions``, ``GET models`` and ``models/{id}``, ``POST files`` (multipart),
``GET files/{id}`` and ``files/{id}/content``, ``POST batches``, ``GET batches/{id}``,
``POST batches/{id}/cancel``. Control endpoints: ``GET /_sim/stats``,
``POST /_sim/reset``, ``POST /_sim/config`` (JSON of `SimConfig` fields).

Behaviour (all in `SimConfig`):

* latency: uniform in ``latency_s = (min, max)`` seconds per request;
* rate limits: continuous token buckets of ``rpm`` requests and ``tpm`` tokens per
  minute holding ``burst_s`` seconds' worth (60 = OpenAI's behaviour). A request is
  charged ``prompt tokens + max_tokens`` on admission; when a bucket is short the reply
  is ``429`` with ``retry-after`` (whole seconds), ``retry-after-ms`` and the
  ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` headers (sent on every reply); as OpenAI
  documents, a refused request still counts against the per-minute request limit (``charge_rejected``);
  ``ratelimit_headers: false`` hides the limits (no ``x-ratelimit-*`` headers; 429s keep Retry-After);
* faults: random 5xx (``error_rate``), connection drops without a reply (``drop_rate``),
  hangs longer than any sane timeout (``hang_rate``), the first ``fail_first`` attempts of
  every distinct request answered with ``fail_status``; markers in a message switch
  faults on for that request only: ``[[sim:no_choices]]`` (200 with ``choices: []``),
  ``[[sim:malformed]]`` (200 with a body that is not JSON), ``[[sim:500]]``;
* checks: ``api_key`` (401 otherwise), known ``models`` (404 ``model_not_found``),
  ``context_length`` (400 ``context_length_exceeded``);
* replies are a deterministic function of the request (same request, same text);
  judge prompts (``Option A:`` / ``Option B:``) are answered with a letter and A/B
  ``top_logprobs`` following ``reply`` (``judge-longer``, ``judge-shorter``, ``judge-first``).

Counters: every request by path and status, and for each distinct request (sha256 of its
canonical JSON body, `request_hash`) how many times it was *served* (a 200 written to a
live connection, or produced by a batch). ``stats()["duplicates"]`` is the number of
paid-for repeats. A reply whose client went away before it was written counts as
``abandoned``, not served.

Use as a context manager (``with SimServer(SimConfig(...)) as sim: sim.base_url``), in a
thread of this process (tests) or in a child process (``process=True``: benchmarks, so the
server has its own core), or standalone: ``python -m cai_core.testing.sim_openai --port N``.
"""
from __future__ import annotations

from cai_core.testing.sim_openai.cli import main
from cai_core.testing.sim_openai.handlers import SimApp
from cai_core.testing.sim_openai.server import SimServer
from cai_core.testing.sim_openai.state import (SimConfig, SimState, default_reply, prompt_tokens, request_hash,
                                              sim_tokens)

__all__ = ["SimApp", "SimConfig", "SimServer", "SimState", "default_reply", "main", "prompt_tokens", "request_hash",
           "sim_tokens"]
