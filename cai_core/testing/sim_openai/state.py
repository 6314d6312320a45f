"""What the simulated server does and knows: `SimConfig`, replies, rate-limit buckets, `SimState`."""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import random
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_JUDGE_A = re.compile(r"Option A:\n<<<\n(.*?)\n>>>", re.S)
_JUDGE_B = re.compile(r"Option B:\n<<<\n(.*?)\n>>>", re.S)
_WORDS = ("the", "model", "answer", "helpful", "careful", "data", "kind", "clear", "text", "safe", "reply",
          "because", "we", "can", "note", "that", "this", "is", "a", "short", "response", "about", "it")


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
    #: Send the x-ratelimit-* headers (off: the limits are hidden; a 429 still carries Retry-After).
    ratelimit_headers: bool = True
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
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


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
        self.dropped = self.abandoned = self.rate_limited = self.admitted = 0
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
                "rate_limited": self.rate_limited, "admitted": self.admitted, "prompt_tokens": self.tokens_prompt,
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
        out: list[tuple[str, str]] = []
        if not self.cfg.ratelimit_headers:
            return out
        for name, bucket, limit in (("requests", self.req_bucket, self.cfg.rpm),
                                    ("tokens", self.tok_bucket, self.cfg.tpm)):
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
                wait = max(wait, self.req_bucket.wait_for(1))  # the refused request's charge comes first
            return wait
        if self.req_bucket is not None:
            self.req_bucket.level -= 1
        if self.tok_bucket is not None:
            self.tok_bucket.level -= min(tokens, self.tok_bucket.capacity)
        self.admitted += 1
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
                                 f"you requested {need} tokens. "
                                 f"Please reduce the length of the messages or completion.",
                                 "invalid_request_error", "context_length_exceeded", "messages")
        return None


def _err(message: str, type_: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
