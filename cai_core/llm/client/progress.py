"""Progress lines (and a bar) of one run, and the state of one `arun` call."""
from __future__ import annotations

import asyncio
import collections
import sys
import time
from typing import Callable

from cai_core.llm.client.config import ClientConfig
from cai_core.llm.client.errors import TeacherError
from cai_core.llm.client.ratelimit import _sleep
from cai_core.llm.client.requests import Request, Result
from cai_core.llm.client.summary import RunSummary
from cai_core.progress import log


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _si(x: float) -> str:
    return f"{x / 1e6:.1f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


class _Progress:
    """Progress of one run: [cai] lines every `every_s`, and a rich bar when stdout is a terminal."""

    def __init__(self, desc: str, total: int, every_s: float, prices: tuple[float, float] | None,
                 discount: float = 1.0):
        self.desc, self.total, self.every_s = desc, total, every_s
        self.prices, self.discount = prices, discount
        self.done = self.errors = self.retries = self.tokens_in = self.tokens_out = 0
        self.start = time.monotonic()
        self.status: Callable[[], str] | None = None  # the client's window and rate limits
        self._bar = None
        if total and sys.stdout.isatty():
            try:
                from rich.progress import BarColumn, Progress, TextColumn
                self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                                     transient=True)
                self._task = self._bar.add_task(desc, total=total, info="")
                self._bar.start()
            except Exception:  # noqa: BLE001 - a bar is a nicety
                self._bar = None

    def cost(self) -> float | None:
        if self.prices is None:
            return None
        return (self.tokens_in * self.prices[0] + self.tokens_out * self.prices[1]) / 1e6 * self.discount

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        tok = (self.tokens_in + self.tokens_out) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        cost = self.cost()
        line = (f"{self.desc}: {self.done}/{self.total} ({pct:.0f}%) | {rate:.1f} req/s | {_si(tok)} tok/s | "
                f"elapsed {_clock(elapsed)} | ETA {_clock(eta)} | errors {self.errors} | retries {self.retries} | "
                f"est. cost {'unknown' if cost is None else f'${cost:.4f}'}")
        return line + (f" | {self.status()}" if self.status is not None else "")

    def tick(self) -> None:
        log(self.line())
        self.refresh()

    def refresh(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, info=self.line().split(" | ", 1)[-1])

    async def run(self, stop: asyncio.Event) -> None:
        last = time.monotonic()
        while not stop.is_set():
            if await _sleep(0.5 if self._bar is not None else self.every_s, stop):
                return
            if time.monotonic() - last >= self.every_s:
                last = time.monotonic()
                log(self.line())
            self.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

class _Run:
    """State of one `arun` call."""

    def __init__(self, cfg: ClientConfig, todo: list[Request], desc: str):
        self.todo = todo
        self.queue = collections.deque(todo)
        self.stop = asyncio.Event()
        self.why_stop: str | None = None
        self.fatal: TeacherError | None = None
        self.signal: int | None = None
        self.results: dict[str, Result] = {}
        self.summary = RunSummary()
        self.finished = self.failed_n = 0
        self.in_flight = 0
        self.progress = _Progress(desc, len(todo), cfg.progress_every_s, cfg.prices(),
                                  cfg.batch_discount if cfg.batch else 1.0)
