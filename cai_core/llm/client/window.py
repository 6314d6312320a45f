"""`ConcurrencyWindow`: how many requests may be in flight, found by the client itself when no limits are given.

Nobody tells the client an endpoint's limits, and they change (tiers, keys shared with other jobs). The
window finds them the way TCP finds a link's capacity, with the two signals an endpoint gives:

* **429 (loss)**: AIMD. While replies come back without 429s and latency holds, the window grows:
  tripling every round trip at first (slow start: `slow_start_gain` more per reply, to get from the
  starting window to a large ceiling in a few round trips), then additively, quickly back towards the size
  of the last cut and by one request a round beyond it (probing). A 429 cuts it multiplicatively, to `backoff` times the requests that were
  actually on the wire (what the server was admitting when it said no), at most once per round trip:
  the 429s of requests sent before the cut took effect say nothing new. The request's own Retry-After
  is honoured by the rate limiter, as without a window.
* **latency (delay)**: a gradient, in the manner of Netflix's concurrency-limits (Gradient2): the mean
  latency of each round (about one window of replies) is compared with a long-run baseline (a slow
  exponential average of the rounds). A round more than `latency_tolerance` times the baseline means
  requests queue at the server; the window is cut by baseline/recent (at most by half). A baseline far
  above recent rounds (a past overload ending) is pulled down quickly.

The window stays within [`minimum`, `maximum`]; it does not grow while the client is not using it
(fewer than half its slots on the wire: growing then would only move the ceiling out of reach of the
signals). Fixed (`adaptive=False`) it is `maximum`, and only gates.

The decisions (`on_success`, `on_rate_limited`, `on_timeout`) are plain arithmetic on the events given
(with the time passed in for tests); `acquire` / `release` are the asyncio gate the workers pass.
"""
from __future__ import annotations

import asyncio
import collections
import math
import time
from typing import Callable


class ConcurrencyWindow:
    """The in-flight window: an asyncio gate whose size follows 429s and latency (see the module doc)."""

    def __init__(self, initial: int, maximum: int, *, adaptive: bool = True, minimum: int = 1,
                 backoff: float = 0.9, latency_tolerance: float = 2.0, min_round: int = 8,
                 slow_start_gain: float = 2.0,
                 clock: Callable[[], float] = time.monotonic):
        self.maximum, self.minimum = maximum, max(1, min(minimum, maximum))
        self.adaptive = adaptive
        self.backoff, self.latency_tolerance, self.min_round = backoff, latency_tolerance, min_round
        self.slow_start_gain = slow_start_gain
        self.clock = clock
        self.limit = float(min(max(initial, self.minimum), maximum) if adaptive else maximum)
        self.slow_start = adaptive
        self.in_flight = 0  # slots held (a request waiting for its rate-limit turn holds one)
        self.on_wire = 0  # requests sent and not yet answered
        self.baseline: float | None = None  # long-run latency (seconds)
        self.recent: float | None = None  # mean latency of the last full round
        self.last_cut_size = 0.0
        self.cuts = self.rate_cuts = self.latency_cuts = 0
        self._lat_sum = 0.0  # latency of the replies since the last judgement
        self._lat_n = 0
        self._round_n = self._round_429 = 0  # replies and 429s of this round
        self._round_busy = False
        self._cut_t = -math.inf  # when the window was last cut
        self._paced = False  # the latest reply said a rate limiter paces the requests
        self._waiters: collections.deque[asyncio.Future] = collections.deque()

    # ------------------------------------------------------------------ the gate

    @property
    def size(self) -> int:
        """Requests that may be in flight now."""
        return max(self.minimum, int(self.limit))

    async def acquire(self) -> None:
        """Wait for a slot (FIFO)."""
        if self.in_flight < self.size and not self._waiters:
            self.in_flight += 1
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed over just as we were cancelled: give it back
            else:
                self._waiters.remove(fut)
            raise

    @property
    def over(self) -> bool:
        """More slots are held than the window has (it was cut while they waited)."""
        return self.in_flight > self.size

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.size:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)

    def sent(self) -> None:
        """A request goes on the wire (it holds a slot)."""
        self.on_wire += 1
        if self.on_wire * 2 >= self.limit:
            self._round_busy = True

    # --------------------------------------------------------------- the signals

    def on_success(self, latency_s: float, now: float | None = None, *, paced: bool = False) -> None:
        """A reply (not a 429) came back after `latency_s` seconds. `paced`: a rate limiter paces the requests,
        so 429s are its business and the window only follows latency (it grows as in slow start)."""
        self.on_wire -= 1
        if not self.adaptive:
            return
        self._paced = paced
        if (self.slow_start or paced) and (self.on_wire + 1) * 2 >= self.limit:
            self._set(self.limit + self.slow_start_gain)  # +2 per reply: tripling per round trip
        self._lat_sum += latency_s
        self._lat_n += 1
        self._round_n += 1
        self._end_round_if_full()

    def on_rate_limited(self, sent_at: float | None = None, now: float | None = None, *, paced: bool = False) -> None:
        """A 429 came back for the attempt sent at `sent_at` (the attempt's Retry-After is the rate limiter's
        business). `paced`: a rate limiter paces the requests (limits given, stated or found), and a 429 is its
        business too: the window does not grow this round, and is not cut."""
        self.on_wire -= 1
        if not self.adaptive:
            return
        self._round_429 += 1
        if paced:
            return
        now = self.clock() if now is None else now
        if sent_at is not None and sent_at < self._cut_t:
            return  # sent before the last cut, at the old size: nothing new
        # What the server admits: the requests still on the wire (a 429 comes back at once, an admitted
        # request after its latency). Cutting to a share of that, not of the window, does not stop short of
        # what is needed when the window was far too large; at most half at once, against outliers.
        target = max(self.backoff * max(1, self.on_wire), 0.5 * self.limit)
        if target >= self.limit:
            return
        self.last_cut_size = self.limit
        self.rate_cuts += 1
        self._cut(target, now)

    def on_timeout(self, sent_at: float | None = None, now: float | None = None) -> None:
        """An attempt timed out: overload as far as the window is concerned (cut like a 429)."""
        self.on_rate_limited(sent_at, now)

    def on_other(self) -> None:
        """Any other end of an attempt (5xx, dropped connection): not a signal either way."""
        self.on_wire -= 1

    def rtt(self) -> float | None:
        """The round-trip time to measure by: the long-run latency, else the mean of the replies so far."""
        if self.baseline is not None:
            return self.baseline
        return self._lat_sum / self._lat_n if self._lat_n else None

    # ------------------------------------------------------------------ internals

    def _set(self, value: float) -> None:
        self.limit = min(float(self.maximum), max(float(self.minimum), value))
        self._wake()

    def _cut(self, value: float, now: float | None = None) -> None:
        self.slow_start = False
        self._set(min(self.limit, value))
        self.cuts += 1
        self._cut_t = self.clock() if now is None else now
        self._reset_round()

    def _reset_round(self) -> None:
        self._round_n, self._round_429, self._round_busy = 0, 0, False

    def _end_round_if_full(self) -> None:
        """Every `size` replies (about a round trip): judge latency, then grow if nothing said no."""
        if self._round_n + self._round_429 < self.size:
            return
        busy, had_429 = self._round_busy, self._round_429 > 0
        self._reset_round()
        if self._lat_n >= self.min_round and self._judge_latency():
            return
        if had_429 or not busy or self.slow_start or self._paced:
            return
        gap = self.last_cut_size - self.limit
        self._set(self.limit + max(1.0, gap / 2))  # quickly back towards the last cut, then one at a time

    def _judge_latency(self) -> bool:
        """Compare the latest replies' mean latency with the long-run baseline; True if that cut the window."""
        recent = self._lat_sum / self._lat_n
        self._lat_sum, self._lat_n = 0.0, 0
        self.recent = recent
        base = self.baseline
        if base is None:
            self.baseline = recent
            return False
        if base > 2 * recent:
            base *= 0.9  # an overload is over: do not wait for the average to forget it
        self.baseline = 0.9 * base + 0.1 * recent
        if recent <= self.latency_tolerance * base:
            return False
        self.last_cut_size = self.limit  # requests queue at the server
        self._cut(self.limit * max(0.5, base / recent))
        self.latency_cuts += 1
        return True

    def describe(self) -> str:
        if not self.adaptive:
            return f"{self.size} (fixed)"
        return f"{self.size} (max {self.maximum})"
