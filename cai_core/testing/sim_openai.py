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

import argparse
import asyncio
import dataclasses
import hashlib
import json
import math
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any, Callable

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_JUDGE_A = re.compile(r"Option A:\n<<<\n(.*?)\n>>>", re.S)
_JUDGE_B = re.compile(r"Option B:\n<<<\n(.*?)\n>>>", re.S)
_WORDS = ("the", "model", "answer", "helpful", "careful", "data", "kind", "clear", "text", "safe", "reply",
          "because", "we", "can", "note", "that", "this", "is", "a", "short", "response", "about", "it")
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            408: "Request Timeout", 413: "Payload Too Large", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


@dataclass
class SimConfig:
    """What the simulated server does; every field can be changed while it runs (`SimServer.configure`)."""

    #: Uniform latency range (seconds) of each completion request.
    latency_s: tuple[float, float] = (0.0, 0.0)
    #: Requests per minute (0 = unlimited).
    rpm: int = 0
    #: Tokens per minute (prompt tokens + max_tokens, charged on admission; 0 = unlimited).
    tpm: int = 0
    #: Bucket capacity in seconds of refill (60: a full minute's limit may arrive at once).
    burst_s: float = 60.0
    #: A request refused with 429 still counts against the RPM bucket (OpenAI: "unsuccessful requests
    #: contribute to your per-minute limit"); the debt is capped at one bucket.
    charge_rejected: bool = True
    #: Probability of a random 500/502/503 reply.
    error_rate: float = 0.0
    #: Probability of closing the connection without a reply.
    drop_rate: float = 0.0
    #: Probability of hanging `hang_s` seconds before replying (client timeouts).
    hang_rate: float = 0.0
    hang_s: float = 30.0
    #: The first `fail_first` attempts of each distinct request get `fail_status`.
    fail_first: int = 0
    fail_status: int = 503
    #: Retry-After (seconds) sent with `fail_status` replies (None: no header).
    fail_retry_after_s: float | None = None
    #: Bearer token every request must carry (None: any, or none).
    api_key: str | None = None
    #: Models that exist (a request for another gets 404 model_not_found); empty: any model.
    models: tuple[str, ...] = ("sim-model", "gpt-4o-mini")
    #: Context window in tokens (prompt + max_tokens); 0 = unlimited.
    context_length: int = 0
    #: max_tokens assumed when a request names none.
    default_max_tokens: int = 16
    #: Seconds a batch takes from creation to completed.
    batch_delay_s: float = 0.0
    #: Reply behaviour for judge prompts: judge-longer, judge-shorter, judge-first (position-biased).
    reply: str = "judge-longer"
    #: Seed of the random faults and latencies.
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def update(self, changes: dict[str, Any]) -> None:
        names = {f.name for f in dataclasses.fields(self)}
        for key, value in changes.items():
            if key not in names:
                raise KeyError(f"unknown SimConfig field {key!r}")
            if key in ("latency_s", "models") and value is not None:
                value = tuple(value)
            setattr(self, key, value)


def request_hash(body: dict) -> str:
    """The identity of a request: sha256 of its canonical JSON body."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def sim_tokens(text: str) -> int:
    """The simulated tokenizer: one token per word or punctuation mark."""
    return len(_TOKEN_RE.findall(text))


def prompt_tokens(body: dict) -> int:
    if "messages" in body:
        total = 3
        for m in body.get("messages") or []:
            content = m.get("content") if isinstance(m, dict) else ""
            if isinstance(content, list):
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            total += 4 + sim_tokens(str(content or ""))
        return total
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        prompt = " ".join(map(str, prompt))
    return sim_tokens(str(prompt))


def _max_tokens(body: dict, default: int) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        if isinstance(body.get(key), int):
            return body[key]
    return default


def _all_text(body: dict) -> str:
    if "messages" in body:
        return "\n".join(str(m.get("content", "")) for m in body.get("messages") or [] if isinstance(m, dict))
    return str(body.get("prompt", ""))


def default_reply(kind: str, body: dict, cfg: SimConfig) -> tuple[str, list[tuple[str, float]] | None]:
    """(text, top tokens with logprobs for the first position) for a request; deterministic."""
    text = _all_text(body)
    a, b = _JUDGE_A.search(text), _JUDGE_B.search(text)
    if a and b:
        first, second = a.group(1), b.group(1)
        if cfg.reply == "judge-first":
            logit = 3.0
        elif cfg.reply == "judge-shorter":
            logit = 2.0 if len(first) < len(second) else -2.0 if len(first) > len(second) else 0.0
        else:
            logit = 2.0 if len(first) > len(second) else -2.0 if len(first) < len(second) else 0.0
        p_a = 1.0 / (1.0 + math.exp(-logit))
        la, lb = math.log(p_a * 0.98), math.log((1 - p_a) * 0.98)
        top = sorted([("A", la), ("B", lb), (" A", la - 4.0), (" B", lb - 4.0), ("The", math.log(0.01)),
                      ("Option", math.log(0.005))], key=lambda t: -t[1])
        return ("A" if p_a >= 0.5 else "B"), top
    key = {k: body.get(k) for k in ("model", "messages", "prompt", "seed", "temperature", "top_p")}
    rng = random.Random(request_hash(key))
    n = max(1, min(_max_tokens(body, cfg.default_max_tokens), 6 + rng.randrange(40)))
    words = [rng.choice(_WORDS) for _ in range(n)]
    reply = " ".join(words).capitalize() + "."
    top = [(words[0].capitalize(), -0.1), (rng.choice(_WORDS), -2.5), (rng.choice(_WORDS), -3.0)]
    return reply, top


def _fmt_reset(seconds: float) -> str:
    """OpenAI's reset format: 1m2.5s, 1.5s, 20ms."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.3g}s" if minutes else f"{rest:.3g}s"


class _Bucket:
    def __init__(self, per_minute: int, burst_s: float):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, per_minute * burst_s / 60.0)
        self.level = self.capacity
        self.t = time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now

    def wait_for(self, n: float) -> float:
        n = min(n, self.capacity)
        return 0.0 if self.level >= n else (n - self.level) / self.rate

    def reset_s(self) -> float:
        return (self.capacity - self.level) / self.rate


class SimState:
    """Everything the server knows; lives on one event loop."""

    def __init__(self, cfg: SimConfig, reply_fn: Callable | None = None):
        self.cfg = cfg
        self.reply_fn = reply_fn or default_reply
        self.rng = random.Random(cfg.seed)
        self.files: dict[str, dict] = {}
        self.file_data: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self._tasks: set[asyncio.Task] = set()
        self.reset_counters()
        self.configure({})

    def configure(self, changes: dict) -> None:
        self.cfg.update(changes)
        self.req_bucket = _Bucket(self.cfg.rpm, self.cfg.burst_s) if self.cfg.rpm else None
        self.tok_bucket = _Bucket(self.cfg.tpm, self.cfg.burst_s) if self.cfg.tpm else None
        if "seed" in changes:
            self.rng = random.Random(self.cfg.seed)

    def reset_counters(self) -> None:
        self.requests = 0
        self.by_status: dict[str, int] = {}
        self.by_path: dict[str, int] = {}
        self.served: dict[str, int] = {}
        self.attempts: dict[str, int] = {}
        self.dropped = self.abandoned = self.rate_limited = 0
        self.tokens_prompt = self.tokens_completion = 0
        self.batch_requests = 0
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.first_admit_t: float | None = None
        self.last_admit_t: float | None = None

    def stats(self) -> dict:
        dup = sum(c - 1 for c in self.served.values() if c > 1)
        return {"requests": self.requests, "by_status": dict(self.by_status), "by_path": dict(self.by_path),
                "served_total": sum(self.served.values()), "distinct": len(self.served), "duplicates": dup,
                "retried": sum(1 for n in self.attempts.values() if n > 1),
                "retried_gt2": sum(1 for n in self.attempts.values() if n > 3),
                "attempts_total": sum(self.attempts.values()),
                "served": dict(self.served), "dropped": self.dropped, "abandoned": self.abandoned,
                "rate_limited": self.rate_limited, "prompt_tokens": self.tokens_prompt,
                "completion_tokens": self.tokens_completion, "batch_requests": self.batch_requests,
                "batches": len(self.batches),
                "first_served_t": self.first_t, "last_served_t": self.last_t,
                "first_admitted_t": self.first_admit_t, "last_admitted_t": self.last_admit_t,
                "config": self.cfg.to_dict()}

    def mark_served(self, h: str, usage: dict) -> None:
        self.served[h] = self.served.get(h, 0) + 1
        self.tokens_prompt += usage["prompt_tokens"]
        self.tokens_completion += usage["completion_tokens"]
        now = time.time()
        self.first_t = self.first_t or now
        self.last_t = now

    # ----------------------------------------------------------------- limits

    def ratelimit_headers(self) -> list[tuple[str, str]]:
        out = []
        for name, bucket, limit in (("requests", self.req_bucket, self.cfg.rpm), ("tokens", self.tok_bucket, self.cfg.tpm)):
            if bucket is None:
                continue
            out += [(f"x-ratelimit-limit-{name}", str(limit)),
                    (f"x-ratelimit-remaining-{name}", str(max(0, int(bucket.level)))),
                    (f"x-ratelimit-reset-{name}", _fmt_reset(bucket.reset_s()))]
        return out

    def admit(self, tokens: int) -> float:
        """0.0 when admitted (buckets charged), else seconds until it would be."""
        now = time.monotonic()
        wait = 0.0
        for bucket, n in ((self.req_bucket, 1), (self.tok_bucket, tokens)):
            if bucket is not None:
                bucket.refill(now)
                wait = max(wait, bucket.wait_for(n))
        if wait > 0:
            if self.cfg.charge_rejected and self.req_bucket is not None:
                self.req_bucket.level = max(-self.req_bucket.capacity, self.req_bucket.level - 1)
            return wait
        if self.req_bucket is not None:
            self.req_bucket.level -= 1
        if self.tok_bucket is not None:
            self.tok_bucket.level -= min(tokens, self.tok_bucket.capacity)
        self.last_admit_t = time.time()
        if self.first_admit_t is None:
            self.first_admit_t = self.last_admit_t
        return 0.0

    # ------------------------------------------------------------- completions

    def complete(self, kind: str, body: dict, h: str) -> tuple[int, dict | bytes]:
        """Build a completion reply body (no latency, no limits): (status, body)."""
        text, top = self.reply_fn(kind, body, self.cfg)
        marker_text = _all_text(body)
        usage = {"prompt_tokens": prompt_tokens(body), "completion_tokens": max(1, sim_tokens(text))}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if "[[sim:malformed]]" in marker_text:
            return 200, b'{"id": "chatcmpl-broken", "choices": [ {"index": 0, "mess'
        created = int(time.time())
        if kind == "chat":
            logprobs = None
            if body.get("logprobs"):
                k = int(body.get("top_logprobs") or 0)
                first = top[0] if top else (text[:1], -0.01)
                logprobs = {"content": [{"token": first[0], "logprob": first[1], "bytes": list(first[0].encode()),
                                         "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())}
                                                          for t, lp in (top or [])[:k]]}], "refusal": None}
            choices = [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": logprobs, "finish_reason": "stop"}]
            out = {"id": "chatcmpl-" + h[:24], "object": "chat.completion", "created": created,
                   "model": body.get("model"), "choices": choices, "usage": usage, "system_fingerprint": "sim"}
        else:
            choices = [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}]
            out = {"id": "cmpl-" + h[:24], "object": "text_completion", "created": created,
                   "model": body.get("model"), "choices": choices, "usage": usage}
        if "[[sim:no_choices]]" in marker_text:
            out["choices"] = []
        return 200, out

    def check(self, body: dict) -> tuple[int, dict] | None:
        """A 4xx for a request that can never succeed, else None."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return 400, _err("you must provide a model parameter", "invalid_request_error", None, "model")
        if self.cfg.models and model not in self.cfg.models:
            return 404, _err(f"The model `{model}` does not exist or you do not have access to it.",
                             "invalid_request_error", "model_not_found")
        if "messages" not in body and "prompt" not in body:
            return 400, _err("'messages' is a required property", "invalid_request_error", None, "messages")
        if self.cfg.context_length:
            need = prompt_tokens(body) + _max_tokens(body, self.cfg.default_max_tokens)
            if need > self.cfg.context_length:
                return 400, _err(f"This model's maximum context length is {self.cfg.context_length} tokens. However, "
                                 f"you requested {need} tokens. Please reduce the length of the messages or completion.",
                                 "invalid_request_error", "context_length_exceeded", "messages")
        return None


def _err(message: str, type_: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class _Reply:
    __slots__ = ("status", "body", "headers", "drop", "on_sent")

    def __init__(self, status: int, body: Any = b"", headers: list | None = None, drop: bool = False,
                 on_sent: Callable[[], None] | None = None):
        self.status, self.body, self.headers, self.drop, self.on_sent = status, body, headers or [], drop, on_sent


class SimApp:
    """Routes parsed HTTP requests to replies."""

    def __init__(self, state: SimState):
        self.state = state

    async def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> _Reply:
        st = self.state
        path = path.split("?", 1)[0]
        if path.startswith("/_sim/"):
            return self._control(method, path, body)
        st.requests += 1
        st.by_path[path] = st.by_path.get(path, 0) + 1
        if st.cfg.api_key is not None:
            auth = headers.get("authorization", "")
            if auth != f"Bearer {st.cfg.api_key}":
                return _Reply(401, _err("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"))
        p = path[3:] if path.startswith("/v1/") else None
        if p is None:
            return _Reply(404, b"<html><body>404 page not found</body></html>", [("content-type", "text/html")])
        if p in ("/chat/completions", "/completions") and method == "POST":
            return await self._completion("chat" if p == "/chat/completions" else "completion", body)
        if p == "/models" and method == "GET":
            return _Reply(200, {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "sim"}
                                                           for m in st.cfg.models]})
        if p.startswith("/models/") and method == "GET":
            m = p[len("/models/"):]
            if st.cfg.models and m not in st.cfg.models:
                return _Reply(404, _err(f"The model `{m}` does not exist", "invalid_request_error", "model_not_found"))
            return _Reply(200, {"id": m, "object": "model", "created": 0, "owned_by": "sim"})
        if p == "/files" and method == "POST":
            return self._upload(headers, body)
        m = re.fullmatch(r"/files/([\w-]+)(/content)?", p)
        if m and method == "GET":
            fid = m.group(1)
            if fid not in st.files:
                return _Reply(404, _err(f"No such File object: {fid}", "invalid_request_error", None, "id"))
            if m.group(2):
                return _Reply(200, st.file_data[fid], [("content-type", "application/octet-stream")])
            return _Reply(200, st.files[fid])
        if p == "/batches" and method == "POST":
            return self._create_batch(body)
        m = re.fullmatch(r"/batches/([\w-]+)(/cancel)?", p)
        if m:
            bid = m.group(1)
            if bid not in st.batches:
                return _Reply(404, _err(f"No batch found with id '{bid}'", "invalid_request_error", None, "batch_id"))
            if m.group(2) and method == "POST":
                b = st.batches[bid]
                if b["status"] in ("validating", "in_progress"):
                    b["status"] = "cancelled"
                    b["cancelled_at"] = int(time.time())
            return _Reply(200, st.batches[bid])
        return _Reply(404, _err(f"Invalid URL ({method} {path})", "invalid_request_error", None))

    def _control(self, method: str, path: str, body: bytes) -> _Reply:
        st = self.state
        if path == "/_sim/stats":
            return _Reply(200, st.stats())
        if path == "/_sim/reset" and method == "POST":
            st.reset_counters()
            st.configure({})
            return _Reply(200, {"ok": True})
        if path == "/_sim/config" and method == "POST":
            try:
                st.configure(json.loads(body or b"{}"))
            except (KeyError, ValueError, TypeError) as exc:
                return _Reply(400, {"error": str(exc)})
            return _Reply(200, st.cfg.to_dict())
        return _Reply(404, {"error": "unknown control path"})

    async def _completion(self, kind: str, raw: bytes) -> _Reply:
        st, cfg = self.state, self.state.cfg
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            return _Reply(400, _err("We could not parse the JSON body of your request.", "invalid_request_error", None))
        h = request_hash(body)
        bad = st.check(body)
        if bad is not None:
            return _Reply(bad[0], bad[1], st.ratelimit_headers())
        n = st.attempts[h] = st.attempts.get(h, 0) + 1
        text = _all_text(body)
        if n <= cfg.fail_first:
            hdrs = []
            if cfg.fail_retry_after_s is not None:
                hdrs = [("retry-after", str(max(0, math.ceil(cfg.fail_retry_after_s)))),
                        ("retry-after-ms", str(int(cfg.fail_retry_after_s * 1000)))]
            code = "rate_limit_exceeded" if cfg.fail_status == 429 else None
            return _Reply(cfg.fail_status, _err(f"simulated failure {n} of {cfg.fail_first}", "server_error", code), hdrs)
        tokens = prompt_tokens(body) + _max_tokens(body, cfg.default_max_tokens)
        wait = st.admit(tokens)
        if wait > 0:
            st.rate_limited += 1
            which = "requests" if st.req_bucket is not None and st.req_bucket.wait_for(1) > 0 else "tokens"
            hdrs = st.ratelimit_headers() + [("retry-after", str(max(1, math.ceil(wait)))),
                                              ("retry-after-ms", str(max(1, int(math.ceil(wait * 1000)))))]
            return _Reply(429, _err(f"Rate limit reached for {body.get('model')} on {which} per min. "
                                    f"Please try again in {wait:.3f}s.", which, "rate_limit_exceeded"), hdrs)
        hdrs = st.ratelimit_headers()
        lo, hi = cfg.latency_s
        delay = lo if hi <= lo else st.rng.uniform(lo, hi)
        r = st.rng.random()
        if r < cfg.hang_rate:
            delay = cfg.hang_s
        if delay > 0:
            await asyncio.sleep(delay)
        r = st.rng.random()
        if r < cfg.drop_rate:
            return _Reply(0, drop=True)
        if r < cfg.drop_rate + cfg.error_rate or "[[sim:500]]" in text:
            code = st.rng.choice((500, 502, 503))
            return _Reply(code, _err("The server had an error while processing your request.", "server_error", None), hdrs)
        status, out = st.complete(kind, body, h)
        usage = out["usage"] if isinstance(out, dict) else {"prompt_tokens": prompt_tokens(body), "completion_tokens": 0}
        return _Reply(status, out, hdrs + [("x-request-id", "req_" + h[:16])], on_sent=lambda: st.mark_served(h, usage))

    def _upload(self, headers: dict[str, str], body: bytes) -> _Reply:
        st = self.state
        m = re.search(r'boundary="?([^";]+)"?', headers.get("content-type", ""))
        if not m:
            return _Reply(400, _err("expected multipart/form-data", "invalid_request_error", None))
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in body.split(b"--" + m.group(1).encode()):
            if b"\r\n\r\n" not in part:
                continue
            head, _, data = part.partition(b"\r\n\r\n")
            if data.endswith(b"\r\n"):
                data = data[:-2]
            name = re.search(rb'name="([^"]*)"', head)
            fname = re.search(rb'filename="([^"]*)"', head)
            if name:
                fields[name.group(1).decode()] = (fname.group(1).decode() if fname else None, data)
        if "file" not in fields:
            return _Reply(400, _err("'file' is a required property", "invalid_request_error", None, "file"))
        fid = "file-" + uuid.uuid4().hex[:24]
        filename, data = fields["file"]
        purpose = fields.get("purpose", (None, b"batch"))[1].decode()
        st.files[fid] = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                         "filename": filename or "upload", "purpose": purpose, "status": "processed"}
        st.file_data[fid] = data
        return _Reply(200, st.files[fid])

    def _create_batch(self, raw: bytes) -> _Reply:
        st = self.state
        try:
            body = json.loads(raw)
        except ValueError:
            return _Reply(400, _err("We could not parse the JSON body of your request.", "invalid_request_error", None))
        fid = body.get("input_file_id")
        if fid not in st.files:
            return _Reply(400, _err(f"Invalid 'input_file_id': '{fid}'.", "invalid_request_error", None, "input_file_id"))
        bid = "batch_" + uuid.uuid4().hex[:24]
        now = int(time.time())
        batch = {"id": bid, "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
                 "input_file_id": fid, "completion_window": body.get("completion_window", "24h"),
                 "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": now,
                 "in_progress_at": None, "expires_at": now + 86400, "finalizing_at": None, "completed_at": None,
                 "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata")}
        st.batches[bid] = batch
        task = asyncio.get_running_loop().create_task(self._run_batch(bid))
        st._tasks.add(task)
        task.add_done_callback(st._tasks.discard)
        return _Reply(200, batch)

    async def _run_batch(self, bid: str) -> None:
        st = self.state
        batch = st.batches[bid]
        await asyncio.sleep(st.cfg.batch_delay_s / 2)
        if batch["status"] == "cancelled":
            return
        lines = st.file_data[batch["input_file_id"]].decode("utf-8", "replace").splitlines()
        batch["status"], batch["in_progress_at"] = "in_progress", int(time.time())
        batch["request_counts"]["total"] = len([x for x in lines if x.strip()])
        out, errs = [], []
        for line in lines:
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                custom_id, url, body = item["custom_id"], item["url"], item["body"]
            except (ValueError, KeyError, TypeError):
                batch["status"] = "failed"
                batch["errors"] = {"object": "list", "data": [{"code": "invalid_json_line", "message": "bad line", "line": None}]}
                return
            kind = "chat" if url.endswith("/chat/completions") else "completion"
            h = request_hash(body)
            rid = "batch_req_" + uuid.uuid4().hex[:20]
            bad = st.check(body)
            if bad is not None:
                errs.append({"id": rid, "custom_id": custom_id, "response": {"status_code": bad[0], "request_id": rid, "body": bad[1]}, "error": None})
                batch["request_counts"]["failed"] += 1
                continue
            status, res = st.complete(kind, body, h)
            if not isinstance(res, dict):
                errs.append({"id": rid, "custom_id": custom_id, "response": None,
                             "error": {"code": "server_error", "message": "malformed"}})
                batch["request_counts"]["failed"] += 1
                continue
            st.mark_served(h, res["usage"])
            st.batch_requests += 1
            out.append({"id": rid, "custom_id": custom_id, "response": {"status_code": 200, "request_id": rid, "body": res}, "error": None})
            batch["request_counts"]["completed"] += 1
        await asyncio.sleep(st.cfg.batch_delay_s / 2)
        if batch["status"] == "cancelled":
            return
        for name, rows in (("output_file_id", out), ("error_file_id", errs)):
            if rows:
                fid = "file-" + uuid.uuid4().hex[:24]
                data = "".join(json.dumps(r) + "\n" for r in rows).encode()
                st.files[fid] = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                                 "filename": f"{bid}_{name}.jsonl", "purpose": "batch_output", "status": "processed"}
                st.file_data[fid] = data
                batch[name] = fid
        batch["status"], batch["completed_at"] = "completed", int(time.time())


# --------------------------------------------------------------------- HTTP layer


class _HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive; one request at a time per connection (no pipelining)."""

    def __init__(self, app: "SimApp"):
        self.app = app
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        buf = self.buf
        i = buf.find(b"\r\n\r\n")
        if i < 0:
            if len(buf) > 1 << 20:
                self.transport.close()
            return
        lines = bytes(buf[:i]).decode("latin-1").split("\r\n")
        try:
            method, target, _version = lines[0].split(" ", 2)
        except ValueError:
            self.transport.close()
            return
        headers = {}
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if sep:
                headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length") or 0)
        if len(buf) < i + 4 + n:
            return
        body = bytes(buf[i + 4:i + 4 + n])
        del buf[:i + 4 + n]
        self.busy = True
        task = asyncio.get_running_loop().create_task(self.app.handle(method, target, headers, body))
        task.add_done_callback(lambda t: self._reply(t, headers))

    def _reply(self, task: asyncio.Task, headers: dict) -> None:
        self.busy = False
        st = self.app.state
        if task.cancelled():
            return
        exc = task.exception()
        reply = _Reply(500, _err(f"sim server bug: {exc!r}", "server_error", None)) if exc else task.result()
        if reply.drop:
            st.dropped += 1
            self.transport.close()
            return
        if self.closed:
            if reply.on_sent is not None:
                st.abandoned += 1  # the client is gone: nothing is delivered
            return
        data = reply.body
        if isinstance(data, (dict, list)):
            data = json.dumps(data).encode()
        ctype = "application/json"
        extra = ""
        for k, v in reply.headers:
            if k == "content-type":
                ctype = v
            else:
                extra += f"{k}: {v}\r\n"
        code = str(reply.status)
        st.by_status[code] = st.by_status.get(code, 0) + 1
        head = (f"HTTP/1.1 {code} {_REASONS.get(reply.status, 'Status')}\r\ncontent-type: {ctype}\r\n"
                f"content-length: {len(data)}\r\n{extra}\r\n")
        self.transport.write(head.encode("latin-1") + data)
        if reply.on_sent is not None:
            reply.on_sent()
        if headers.get("connection", "").lower() == "close":
            self.transport.close()
            return
        if self.buf:
            self._next()


async def _start(app: SimApp, host: str, port: int) -> asyncio.base_events.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _HttpProtocol(app), host, port, backlog=4096, reuse_address=True)


class SimServer:
    """Start/stop the simulated server on 127.0.0.1 (a free port unless `port` is given).

    `process=False` runs it on an event loop in a daemon thread of this process (a
    `reply_fn(kind, body, cfg) -> (text, top)` may be given); `process=True` runs
    ``python -m cai_core.testing.sim_openai`` as a child process with its own core.
    """

    def __init__(self, config: SimConfig | None = None, *, process: bool = False, port: int = 0,
                 reply_fn: Callable | None = None, **overrides: Any):
        self.config = config or SimConfig()
        self.config.update(overrides)
        if process and reply_fn is not None:
            raise ValueError("reply_fn needs process=False")
        self.process, self.port, self.reply_fn = process, port, reply_fn
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.state: SimState | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def start(self) -> "SimServer":
        if self.process:
            cmd = [sys.executable, "-m", "cai_core.testing.sim_openai", "--port", str(self.port),
                   "--config-json", json.dumps(self.config.to_dict())]
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True)
            line = self._proc.stdout.readline()
            m = re.search(r"127\.0\.0\.1:(\d+)", line or "")
            if not m:
                self.stop()
                raise RuntimeError(f"sim server did not start: {line!r}")
            self.port = int(m.group(1))
            return self
        ready = threading.Event()
        err: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self.state = SimState(self.config, self.reply_fn)
                server = loop.run_until_complete(_start(SimApp(self.state), "127.0.0.1", self.port))
                self.port = server.sockets[0].getsockname()[1]
            except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
                err.append(exc)
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                server.close()
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                loop.run_until_complete(asyncio.sleep(0))
                loop.close()

        self._thread = threading.Thread(target=main, name="sim-openai", daemon=True)
        self._thread.start()
        ready.wait(10)
        if err:
            raise err[0]
        return self

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(5)
            self._proc = None
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop = self._thread = None

    def __enter__(self) -> "SimServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _call(self, path: str, payload: dict | None = None) -> dict:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method="GET" if data is None else "POST",
                                     headers={"content-type": "application/json", "connection": "close"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def _in_loop(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def stats(self) -> dict:
        """Counters (see the module doc): requests, by_status, by_path, served {hash: n}, duplicates, ..."""
        if self.state is not None and self._loop is not None:
            return self._in_loop(self.state.stats)
        return self._call("/_sim/stats")

    def reset(self) -> None:
        """Zero the counters and refill the rate-limit buckets."""
        if self.state is not None and self._loop is not None:
            return self._in_loop(lambda: (self.state.reset_counters(), self.state.configure({})))
        self._call("/_sim/reset", {})

    def configure(self, **changes: Any) -> None:
        """Change `SimConfig` fields while running (buckets restart full)."""
        if self.state is not None and self._loop is not None:
            return self._in_loop(lambda: self.state.configure(changes))
        self._call("/_sim/config", changes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cai_core.testing.sim_openai",
                                 description="Simulated OpenAI-compatible server (127.0.0.1 only).")
    ap.add_argument("--port", type=int, default=0, help="port (0: a free one; printed on the first line)")
    ap.add_argument("--config-json", default="{}", help="SimConfig fields as JSON (the flags below override)")
    ap.add_argument("--latency", help="min,max seconds, e.g. 0.5,3")
    ap.add_argument("--rpm", type=int)
    ap.add_argument("--tpm", type=int)
    ap.add_argument("--burst-s", type=float)
    ap.add_argument("--error-rate", type=float)
    ap.add_argument("--drop-rate", type=float)
    ap.add_argument("--api-key")
    ap.add_argument("--models", help="comma-separated model names ('' = any)")
    ap.add_argument("--context-length", type=int)
    ap.add_argument("--batch-delay-s", type=float)
    ap.add_argument("--reply", choices=("judge-longer", "judge-shorter", "judge-first"))
    ap.add_argument("--seed", type=int)
    args = ap.parse_args(argv)
    cfg = SimConfig()
    cfg.update(json.loads(args.config_json))
    flags = {"rpm": args.rpm, "tpm": args.tpm, "burst_s": args.burst_s, "error_rate": args.error_rate,
             "drop_rate": args.drop_rate, "api_key": args.api_key, "context_length": args.context_length,
             "batch_delay_s": args.batch_delay_s, "reply": args.reply, "seed": args.seed}
    cfg.update({k: v for k, v in flags.items() if v is not None})
    if args.latency:
        lo, _, hi = args.latency.partition(",")
        cfg.update({"latency_s": (float(lo), float(hi or lo))})
    if args.models is not None:
        cfg.update({"models": tuple(m for m in args.models.split(",") if m)})

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        server = await _start(SimApp(SimState(cfg)), "127.0.0.1", args.port)
        port = server.sockets[0].getsockname()[1]
        print(f"sim-openai listening on http://127.0.0.1:{port}/v1", flush=True)
        await stop
        server.close()

    try:
        import uvloop  # type: ignore[import-not-found]
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
