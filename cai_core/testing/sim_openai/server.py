"""`SimServer`: start and stop the simulated server in a thread or a child process, and talk to it."""
from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import urllib.request
from typing import Any, Callable

from cai_core.testing.sim_openai.handlers import SimApp, _start
from cai_core.testing.sim_openai.state import SimConfig, SimState

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
        """Counters (see the package doc): requests, by_status, by_path, served {hash: n}, duplicates, ..."""
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
