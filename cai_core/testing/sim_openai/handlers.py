"""The simulated server's HTTP layer: `SimApp` routes requests to replies, `_HttpProtocol` speaks HTTP/1.1."""
from __future__ import annotations

import asyncio
import json
import math
import re
import time
import uuid
from typing import Any, Callable

from cai_core.testing.sim_openai.state import SimState, _all_text, _err, _max_tokens, prompt_tokens, request_hash

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            408: "Request Timeout", 413: "Payload Too Large", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


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
            return _Reply(cfg.fail_status, _err(f"simulated failure {n} of {cfg.fail_first}", "server_error", code),
                          hdrs)
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
            return _Reply(code, _err("The server had an error while processing your request.", "server_error", None),
                          hdrs)
        status, out = st.complete(kind, body, h)
        usage = (out["usage"] if isinstance(out, dict)
                 else {"prompt_tokens": prompt_tokens(body), "completion_tokens": 0})
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
            return _Reply(400, _err(f"Invalid 'input_file_id': '{fid}'.", "invalid_request_error", None,
                                    "input_file_id"))
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
                batch["errors"] = {"object": "list",
                                   "data": [{"code": "invalid_json_line", "message": "bad line", "line": None}]}
                return
            kind = "chat" if url.endswith("/chat/completions") else "completion"
            h = request_hash(body)
            rid = "batch_req_" + uuid.uuid4().hex[:20]
            bad = st.check(body)
            if bad is not None:
                errs.append({"id": rid, "custom_id": custom_id,
                             "response": {"status_code": bad[0], "request_id": rid, "body": bad[1]}, "error": None})
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
            out.append({"id": rid, "custom_id": custom_id,
                        "response": {"status_code": 200, "request_id": rid, "body": res}, "error": None})
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
