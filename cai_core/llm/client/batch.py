"""Batch API mode (`batch: true`) of `LLMClient`: request file, upload, create, poll, download, map back."""
from __future__ import annotations

import asyncio
import collections
import json
import random
import time
from typing import Any

from cai_core.llm.client.errors import TeacherError, _err_code, _err_message
from cai_core.llm.client.progress import _Run
from cai_core.llm.client.ratelimit import _sleep, retry_after_s
from cai_core.llm.client.requests import _PATHS, Request, Result
from cai_core.llm.client.transport import FastTransport
from cai_core.progress import log


class BatchMode:
    """The Batch API half of `LLMClient` (which supplies cfg, journal, base_url, _sdk, _preflight, _finish, _parse)."""

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
                raise TeacherError(f"{what}: the endpoint {self.base_url} rejected the API key (401: {exc.message})",
                                   "auth") from None
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
                    wait = (min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * 2 ** attempt)
                            * (0.5 + random.random() / 2))
                await asyncio.sleep(wait)
            except openai.APIStatusError as exc:
                raise TeacherError(f"{what} refused by {self.base_url} ({exc.status_code}: {exc.message})",
                                   "batch") from None

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
        log(f"submitted batch {batch.id} ({len(reqs)} requests, input file {f.id}, "
            f"window {self.cfg.batch_completion_window})")
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
            res = found.get(k) or Result(k, "batch_failed", reason=f"{why} without a result for this request",
                                         source="batch")
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
                res = Result(req.key, "context_length",
                             reason=f"the prompt does not fit the model's context (400: {msg})")
            elif code in (400, 422):
                res = Result(req.key, "bad_request", reason=f"the server refused the request ({code}: {msg})")
            else:
                res = Result(req.key, "batch_failed", reason=f"batch request failed ({code}: {msg})")
        else:
            err = item.get("error") or {}
            res = Result(req.key, "batch_failed",
                         reason=f"batch request failed: {err.get('code')}: {err.get('message')}")
        res.source, res.attempts = "batch", 1
        return res
