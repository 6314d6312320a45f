"""Rate limits: per-model RPM/TPM token buckets and the server's wait headers."""
from __future__ import annotations

import asyncio
import math
import random
import time

from cai_core.llm.client.ratefind import RateFinder


def parse_duration(text: str | None) -> float | None:
    """OpenAI's reset durations: '1s', '6m0s', '20ms', '1h2m3.5s', or plain seconds."""
    if not text:
        return None
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    total, num = 0.0, ""
    i = 0
    while i < len(text):
        c = text[i]
        if c.isdigit() or c == ".":
            num += c
        else:
            unit = c
            if text.startswith("ms", i):
                unit, i = "ms", i + 1
            try:
                value = float(num)
            except ValueError:
                return None
            total += value * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}.get(unit, 0)
            num = ""
        i += 1
    return total if not num else None


def retry_after_s(headers: dict[str, str]) -> float | None:
    """Seconds the server asks us to wait: retry-after-ms, retry-after, else the relevant x-ratelimit-reset-*."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if ra:
        try:
            return max(0.0, float(ra))
        except ValueError:
            import email.utils
            parsed = email.utils.parsedate_tz(ra)
            if parsed is not None:
                return max(0.0, email.utils.mktime_tz(parsed) - time.time())
    waits = []
    for kind in ("requests", "tokens"):
        remaining = headers.get(f"x-ratelimit-remaining-{kind}")
        if remaining is not None and remaining.strip() in ("0", "0.0"):
            w = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
            if w is not None:
                waits.append(w)
    return max(waits) if waits else None


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value >= 0 else None


def ratelimit_headers(headers: dict[str, str], kind: str) -> tuple[int, float | None, float | None] | None:
    """(limit per minute, remaining, seconds until full) from ``x-ratelimit-{limit,remaining,reset}-<kind>``
    (`kind`: requests or tokens); None without a usable limit header."""
    limit = _number(headers.get(f"x-ratelimit-limit-{kind}"))
    if not limit or limit < 1:
        return None
    return int(limit), _number(headers.get(f"x-ratelimit-remaining-{kind}")), \
        parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))


class _Limiter:
    """Per-model RPM/TPM token buckets (continuous refill), FIFO, synced from x-ratelimit headers.

    With `learn` (no limits given), the limits the server states in ``x-ratelimit-limit-*`` become the
    buckets' (again whenever they change), their capacity from ``remaining + reset * rate``. Until a server
    states any, its 429s are measured (`RateFinder`, `finder`): once the rate it admits is found, requests
    are paced at it (a bucket of 0.1 s), probing upwards.
    """

    #: Seconds of the found rate the pacing bucket holds (a small burst: the server's bucket is unknown).
    PACE_BURST_S = 0.1

    def __init__(self, rpm: int, tpm: int, burst_s: float, *, learn: bool = False,
                 finder: RateFinder | None = None):
        self.burst_s, self.learning, self.learned = burst_s, learn, False
        self.finder: RateFinder | None = (finder or RateFinder()) if learn else None
        self._waited = False  # a request waited for the found pace since the finder was last asked
        self.rpm = self.tpm = 0
        self.r_rate = self.t_rate = 0.0
        self.r_cap = self.t_cap = math.inf
        self.r = self.tk = math.inf
        self.t = time.monotonic()
        if rpm:
            self._set("requests", rpm, None, None)
        if tpm:
            self._set("tokens", tpm, None, None)
        self.blocked_until = 0.0
        self.adj_r = self.adj_t = 0.0  # cumulative corrections, to sync from stale headers without double counting
        self.lock: asyncio.Lock | None = None

    def _set(self, kind: str, per_minute: int, remaining: float | None, reset_s: float | None) -> None:
        rate = per_minute / 60.0
        cap = max(1.0, per_minute * self.burst_s / 60.0)
        if remaining is not None and reset_s is not None:
            cap = min(float(per_minute), max(1.0, remaining + reset_s * rate))
        level = cap if remaining is None else min(cap, remaining)
        if kind == "requests":
            self.rpm, self.r_rate, self.r_cap, self.r = per_minute, rate, cap, level
        else:
            self.tpm, self.t_rate, self.t_cap, self.tk = per_minute, rate, cap, level

    def learn(self, headers: dict[str, str]) -> None:
        """Take the limits the server states (only when none were given); they win over a found pace."""
        if not self.learning:
            return
        for kind, current in (("requests", self.rpm), ("tokens", self.tpm)):
            stated = ratelimit_headers(headers, kind)
            if stated is not None and (stated[0] != current or not self.learned):
                now = time.monotonic()
                self._refill(now)
                if self.finder is not None:  # stated limits from now on, not measured ones
                    self.finder = None
                    self.rpm, self.r_rate, self.r_cap, self.r = 0, 0.0, math.inf, math.inf
                self._set(kind, *stated)
                self.learned = True

    def sent(self) -> float:
        """A request goes on the wire: its send time (for `rate_limited`)."""
        return self.finder.sent() if self.finder is not None else time.monotonic()

    def rate_limited(self, sent_at: float, retry_after: float | None = None) -> None:
        """A 429 for the request sent at `sent_at` (the finder measures the rate the server admits)."""
        if self.finder is not None:
            self.finder.rate_limited(sent_at, retry_after=retry_after)

    @property
    def paces(self) -> bool:
        """Requests are paced by a rate (given, stated by the server or found): 429s are this limiter's business."""
        return bool(self.rpm or self.tpm or (self.finder is not None and self.finder.rate is not None))

    def _follow_finder(self, now: float) -> None:
        rate = self.finder.pace(self._waited, now)
        self._waited = False
        if rate is None:
            return
        self._refill(now)
        self.rpm, self.r_rate = max(1, round(rate * 60)), rate
        self.r_cap = max(1.0, rate * self.PACE_BURST_S)
        self.r = min(self.r, self.r_cap)

    def describe(self) -> str:
        """The limits in force, e.g. 'learned 1200 rpm, 90k tpm' or 'found 19.7 req/s, pacing 19.1/s'."""
        if self.finder is not None and self.finder.rate is not None:
            return self.finder.describe()
        parts = [f"{n} {unit}" for n, unit in ((self.rpm, "rpm"), (self.tpm, "tpm")) if n]
        return ("learned " if self.learned else "given ") + ", ".join(parts) if parts else "no rate limit known"

    def _refill(self, now: float) -> None:
        dt = now - self.t
        if dt > 0:
            if self.rpm:
                self.r = min(self.r_cap, self.r + dt * self.r_rate)
            if self.tpm:
                self.tk = min(self.t_cap, self.tk + dt * self.t_rate)
            self.t = now

    async def acquire(self, tokens: float, stop: asyncio.Event) -> tuple[float, float, float, float] | None:
        """Take 1 request and `tokens` tokens, waiting in FIFO order; None when the run stops first."""
        if self.finder is not None and self.finder.rate is not None:
            self._follow_finder(time.monotonic())
        if not (self.rpm or self.tpm):  # no limits known: only a 429's pause applies
            while True:  # (again if another 429 extended the pause meanwhile)
                wait = self.blocked_until - time.monotonic()
                if wait <= 0:
                    return _NO_SNAP
                if await _sleep(wait + random.random() * min(0.1 * wait + 0.01, 1.0), stop):
                    return None  # (jittered: the paused requests do not all come back at the same instant)
        if self.lock is None:
            self.lock = asyncio.Lock()
        async with self.lock:
            while True:
                now = time.monotonic()
                self._refill(now)
                wait = self.blocked_until - now
                if self.rpm and self.r < 1:
                    wait = max(wait, (1 - self.r) / self.r_rate)
                    self._waited = True
                need = min(tokens, self.t_cap)
                if self.tpm and self.tk < need:
                    wait = max(wait, (need - self.tk) / self.t_rate)
                if wait <= 0:
                    if self.rpm:
                        self.r -= 1
                    if self.tpm:
                        self.tk -= need
                    return self.r, self.tk, self.adj_r, self.adj_t
                if await _sleep(wait, stop):
                    return None

    def refund_request(self, tokens: float) -> None:
        """Give back what `acquire` took for a request that was not sent after all."""
        if self.rpm:
            self.r = min(self.r_cap, self.r + 1)
        if self.tpm:
            self.tk = min(self.t_cap, self.tk + min(tokens, self.t_cap))

    def refund(self, tokens: float) -> None:
        """A 429: the tokens were not used; the request itself still counts (OpenAI counts refused requests)."""
        if self.tpm:
            self.tk = min(self.t_cap, self.tk + min(tokens, self.t_cap))

    def correct_tokens(self, delta: float) -> None:
        """The server counted `delta` more tokens for a request than we charged (negative: fewer)."""
        if self.tpm and delta:
            self.tk = min(self.t_cap, self.tk - delta)
            self.adj_t += delta

    def sync(self, snap: tuple[float, float, float, float] | None, headers: dict[str, str]) -> None:
        """Pull the buckets down to what the server says remains, net of corrections since `snap`."""
        if snap is None or snap is _NO_SNAP:
            return
        r_snap, t_snap, adj_r, adj_t = snap
        rem = headers.get("x-ratelimit-remaining-requests")
        if self.rpm and rem is not None:
            try:
                d = r_snap - float(rem) - (self.adj_r - adj_r)
            except ValueError:
                d = 0.0
            if d > 1.0:
                self.r -= d
                self.adj_r += d
        rem = headers.get("x-ratelimit-remaining-tokens")
        if self.tpm and rem is not None:
            try:
                d = t_snap - float(rem) - (self.adj_t - adj_t)
            except ValueError:
                d = 0.0
            if d > max(1.0, 0.002 * self.t_cap):
                self.tk -= d
                self.adj_t += d

    def block(self, seconds: float) -> None:
        """A 429 asked to wait `seconds`: the whole model waits, and the request bucket follows the server's
        (room for one request then), so that what refilled meanwhile does not go out at once to be refused."""
        now = time.monotonic()
        self.blocked_until = max(self.blocked_until, now + seconds)
        if self.rpm:
            self._refill(now)
            self.r = min(self.r, 1.0 - seconds * self.r_rate)


_NO_SNAP = (0.0, 0.0, 0.0, 0.0)


async def _sleep(seconds: float, stop: asyncio.Event) -> bool:
    """Sleep, waking early when `stop` is set; True if it was."""
    if stop.is_set():
        return True
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
        return True
    except asyncio.TimeoutError:
        return False
