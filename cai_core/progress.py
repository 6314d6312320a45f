"""Progress lines for long work: done/total, rate, ETA.

Components run in pods (and in kfp.local subprocesses) where there is no
terminal, so progress is printed as plain log lines prefixed with `[cai]`,
at most every `every_s` seconds and once at the end. They go to stderr, so a
command's stdout stays clean data (KFP merges both streams into the task log).
`cai run` shows these lines and keeps the rest of the KFP output in the
run's log file.
"""
from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def log(message: str) -> None:
    print(f"[cai] {message}", file=sys.stderr, flush=True)


class Progress:
    def __init__(self, desc: str, total: int, unit: str = "rows", every_s: float = 2.0):
        self.desc, self.total, self.unit, self.every_s = desc, total, unit, every_s
        self.done = 0
        self.errors = 0
        self.start = self._last = time.monotonic()

    def update(self, n: int = 1, errors: int = 0) -> None:
        self.done += n
        self.errors += errors
        now = time.monotonic()
        if now - self._last >= self.every_s or self.done >= self.total:
            self._last = now
            log(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        text = f"{self.desc}: {self.done}/{self.total} ({pct:.0f}%) | {rate:.2f} {self.unit}/s | elapsed {_clock(elapsed)} | ETA {_clock(eta)}"
        return text + (f" | errors {self.errors}" if self.errors else "")
