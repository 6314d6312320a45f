"""`LLMClient`: live requests through a worker pool, with rate limits, retries and an error budget."""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import threading
import time
from typing import Any, Sequence
from urllib.parse import urlsplit

from cai_core.llm.client.batch import BatchMode
from cai_core.llm.client.config import ClientConfig
from cai_core.llm.client.errors import (ErrorBudgetExceeded, TeacherError, _err_code, _err_message, _json_or_none,
                                        _snippet)
from cai_core.llm.client.progress import _clock, _Run
from cai_core.llm.client.ratelimit import _Limiter, _sleep, retry_after_s
from cai_core.llm.client.requests import _PATHS, JOURNALED, Request, Result
from cai_core.llm.client.summary import RunSummary
from cai_core.llm.client.transport import FastTransport, _ConnError, _Timeout
from cai_core.llm.client.window import ConcurrencyWindow
from cai_core.progress import log

class LLMClient(BatchMode):
    """Sends `Request`s to one OpenAI-compatible endpoint; see the package doc (`cai_core.llm.client`).

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
        self._window: ConcurrencyWindow | None = None
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
        lines += [f"{k}: {v}" for k, v in headers.items()
                  if k.lower() not in ("host", "accept-encoding", "content-length")]
        return ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")

    def limits_given(self) -> bool:
        """rpm or tpm configured: they pace every model, nothing is learned and the window is fixed."""
        return bool(self.cfg.rpm or self.cfg.tpm)

    def limiter(self, model: str) -> _Limiter:
        """The model's buckets: the given rpm/tpm, else those the server's x-ratelimit-limit-* headers state
        (until it sends any, only the pause after a 429 applies)."""
        lim = self._limiters.get(model)
        if lim is None:
            lim = self._limiters[model] = _Limiter(self.cfg.rpm, self.cfg.tpm, self.cfg.burst_s,
                                                   learn=not self.limits_given())
        return lim

    def window(self) -> ConcurrencyWindow:
        """How many requests may be in flight (one window for the endpoint, kept over runs): adaptive from
        initial_concurrency up to max_concurrency without given limits, else max_concurrency."""
        if self._window is None:
            cfg = self.cfg
            self._window = ConcurrencyWindow(cfg.initial_concurrency, cfg.max_concurrency,
                                             adaptive=cfg.adaptive_concurrency and not self.limits_given())
        return self._window

    def rate_status(self) -> str:
        """The window and the rate limits in force, for progress lines."""
        text = f"window {self.window().describe()}"
        limits = "; ".join(f"{model} {lim.describe()}" if len(self._limiters) > 1 else lim.describe()
                           for model, lim in self._limiters.items() if lim.rpm or lim.tpm)
        return text + (f" | {limits}" if limits else "")

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
        run = _Run(self.cfg, todo, desc)
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
            run.progress.status = self.rate_status
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

        source = ("--base-url/base_url" if self.cfg.base_url else "OPENAI_BASE_URL" if os.environ.get("OPENAI_BASE_URL")
                  else "the default")
        where = f"{self.base_url} (from {source})"
        last: Exception | None = None
        for attempt in range(3):
            try:
                page = await sdk.models.list(timeout=min(10.0, self.cfg.timeout_s))
                names = [m.id for m in getattr(page, "data", []) or []]
                if names and self.cfg.model not in names:
                    log(f"note: model {self.cfg.model!r} is not among the {len(names)} models listed by "
                        f"{self.base_url} "
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

    async def _send(self, req: Request, transport: FastTransport, sdk: Any,
                    heads: dict[str, bytes]) -> tuple[int, dict, bytes]:
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

    async def _do(self, run: _Run, req: Request, transport: FastTransport, sdk: Any,
                  heads: dict[str, bytes]) -> Result | None:
        cfg = self.cfg
        limiter = self.limiter(req.model)
        attempts = 0
        last = ""
        while True:
            est = self.estimate_prompt_tokens(req)
            charge = est + req.max_tokens
            retry_wait: float | None = None
            paused = False
            attempts += 1
            try:
                reply = await self._attempt(run, req, limiter, charge, transport, sdk, heads)
                if reply is None:  # the run stopped while this request waited for its turn: not sent
                    attempts -= 1
                    if not attempts:
                        return None
                    return Result(req.key, "not_sent", reason=run.why_stop or "stopped", attempts=attempts)
                snap, status, headers, content = reply
            except _Timeout as exc:
                last = f"timeout: {exc}"
            except _ConnError as exc:
                last = f"connection error: {exc}"
            else:
                if status == 429:
                    limiter.refund(charge)
                limiter.learn(headers)
                limiter.sync(snap, headers)
                if status == 200:
                    return self._parse(req, content, attempts, limiter, est)  # ok, no_choices or malformed_reply
                if status == 429:
                    body = _json_or_none(content)
                    code = _err_code(body)
                    if code == "insufficient_quota":
                        self._stop(run, "quota exhausted", TeacherError(
                            f"the endpoint {self.base_url} says the account's quota is exhausted "
                            f"(429 insufficient_quota: "
                            f"{_err_message(body)}); add credit or use another key", "quota"))
                        return Result(req.key, "not_sent", reason="quota exhausted", attempts=attempts)
                    run.summary.rate_limited += 1
                    retry_wait = retry_after_s(headers)
                    if retry_wait is not None:
                        limiter.block(retry_wait)  # the whole model waits, not just this request
                        paused = True
                    last = f"429 rate limited: {_err_message(body) or 'too many requests'}"
                elif status in (408, 409) or status >= 500:
                    sent_wait = "retry-after" in headers or "retry-after-ms" in headers
                    retry_wait = retry_after_s(headers) if sent_wait else None
                    last = f"HTTP {status}: {_err_message(_json_or_none(content)) or _snippet(content)}"
                else:
                    return self._client_error(run, req, status, content, attempts)
            # A transient failure: retry after Retry-After, else a jittered exponential backoff.
            if attempts > cfg.max_retries or run.stop.is_set():
                if run.stop.is_set() and attempts <= cfg.max_retries:
                    return Result(req.key, "not_sent", reason=f"{run.why_stop} (last attempt: {last})",
                                  attempts=attempts)
                return Result(req.key, "retries_exhausted", reason=f"{attempts} attempts; last: {last}",
                              attempts=attempts)
            delay = min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (attempts - 1))
            delay = delay / 2 + random.random() * delay / 2
            if retry_wait is not None:
                # After a 429 the model's limiter is paused until then (and keeps the order); else wait here.
                delay = 0.0 if paused else retry_wait + random.random() * min(0.1 * retry_wait + 0.01, 1.0)
            if delay > 0 and await _sleep(delay, run.stop):
                return Result(req.key, "not_sent", reason=f"{run.why_stop} (last attempt: {last})", attempts=attempts)

    async def _attempt(self, run: _Run, req: Request, limiter: _Limiter, charge: float, transport: FastTransport,
                       sdk: Any, heads: dict[str, bytes]) -> tuple[tuple, int, dict, bytes] | None:
        """One attempt, inside the concurrency window and the rate limits: (limiter snapshot, status, headers,
        body); None when the run stopped first. Tells the window how it went."""
        window = self.window()
        await window.acquire()
        try:
            while True:
                snap = await limiter.acquire(charge, run.stop)
                if snap is None:
                    return None
                if not window.over:
                    break
                # The window was cut while this request waited (for a 429's pause): it waits for a slot again,
                # rather than going out with everything else that waited, all at once.
                limiter.refund_request(charge)
                window.release()
                await window.acquire()
            window.sent()
            t0 = limiter.sent()
            try:
                status, headers, content = await self._send(req, transport, sdk, heads)
            except _Timeout:
                window.on_timeout(t0)
                raise
            except BaseException:
                window.on_other()
                raise
            if status == 200:
                window.on_success(time.monotonic() - t0, paced=limiter.paces)
            elif status == 429:
                limiter.rate_limited(t0, retry_after_s(headers))  # first: a pace found now takes over from the window
                window.on_rate_limited(t0, paced=limiter.paces)
            else:
                window.on_other()
            return snap, status, headers, content
        finally:
            window.release()

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
                          reason=f"the server replied 200 with no choices (id {data.get('id')!r}, "
                                 f"model {data.get('model')!r})")
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
                          reason=f"the server's reply has an unexpected shape ({type(exc).__name__}: {exc}; "
                                 f"{_snippet(content)})")
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
        return Result(req.key, "bad_request", reason=f"the server refused the request ({status}: {msg})",
                      attempts=attempts)

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
