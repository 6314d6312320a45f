"""`FastTransport`: a keep-alive HTTP/1.1 connection pool for the completion hot path (and the SDK)."""
from __future__ import annotations

import asyncio
import collections
import ssl
from typing import Any


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
                return await asyncio.open_connection(host, port, ssl=self._ssl_context(), server_hostname=host,
                                                     limit=1 << 24)
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
