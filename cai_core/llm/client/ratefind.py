"""`RateFinder`: the request rate an endpoint admits, found from its 429s when it states no limits.

Most hosted limits are rates (requests or tokens per minute), not a number of requests in flight, and an
in-flight window is a poor way to hold a rate: latency varies from request to request, so the rate a window
sends varies with it, and the window must stay well below the limit to keep clear of 429s. A server that
states its limits (``x-ratelimit-limit-*``) is paced by them (`_Limiter.learn`). One that does not, is
measured:

* A 429 means the endpoint's bucket is empty *now*. Between two such moments the endpoint admitted exactly
  what its limit refilled, whatever the size of its bucket, so the requests that were admitted between two
  429 episodes, over the time between them, are the limit (requests refused in between are not counted:
  an endpoint that charges them refills that much less for us). At least `min_span_s` and `min_admitted`
  requests are measured over (older episodes, up to `horizon_s` back, are used for that); the first
  episode alone says nothing about the rate, and the in-flight window is cut as without a finder.
* Once found, requests are paced at `backoff` times that rate (evenly: no burst for the bucket to refuse)
  and the pace probes upwards while it is what holds requests back: by `probe` of itself per second just
  after a cut, doubling every `probe_double_s` seconds without one (limits change: tiers, shared keys).
  The next 429 episode measures the limit again and cuts the pace to `backoff` times it. Under a steady
  limit this settles into a slow sawtooth around the limit, with a 429 or two per cycle.
* A 429 of a request sent before the last cut is old news (it was sent at the old pace) and changes
  nothing, as TCP ignores losses of packets sent before it slowed down.

Plain arithmetic on the events given, with the time passed in (tests use a fake clock).
"""
from __future__ import annotations

import collections
import time
from typing import Callable


class RateFinder:
    """Finds and paces the request rate of an endpoint that states no limits (see the module doc)."""

    def __init__(self, *, backoff: float = 0.97, probe: float = 0.02, probe_double_s: float = 5.0,
                 max_probe: float = 0.25, min_span_s: float = 2.0, min_admitted: int = 30, horizon_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.backoff, self.probe, self.probe_double_s, self.max_probe = backoff, probe, probe_double_s, max_probe
        self.min_span_s, self.min_admitted, self.horizon_s = min_span_s, min_admitted, horizon_s
        self.clock = clock
        self.rate: float | None = None  # requests/s to pace at; None until found
        self.found: float | None = None  # the latest measurement of what the endpoint admits (requests/s)
        self.episodes = 0  # 429 episodes (a 429 of a request sent after the last cut)
        self.n_sent = self.n_refused = 0
        self._points: collections.deque[list] = collections.deque()  # [time, requests admitted by then]
        self._cut_t = -float("inf")
        self._grow_t: float | None = None

    def _now(self, now: float | None) -> float:
        return self.clock() if now is None else now

    def sent(self, now: float | None = None) -> float:
        """A request goes on the wire; returns its send time (to pass to `rate_limited`)."""
        self.n_sent += 1
        return self._now(now)

    def rate_limited(self, sent_at: float, now: float | None = None, retry_after: float | None = None) -> bool:
        """A 429 for the request sent at `sent_at`, asking to wait `retry_after` seconds; True when it starts a
        new episode (and the rate was measured, if it could be)."""
        self.n_refused += 1
        now = self._now(now)
        resume = now + (retry_after or 0.0)
        points = self._points
        for point in points:  # episodes measured while this request was out: it was not admitted
            if point[0] > sent_at:
                point[1] -= 1
        if sent_at < self._cut_t:
            if points and resume > points[-1][0]:
                points[-1][0] = resume  # the endpoint needs longer to have room again
            return False
        self.episodes += 1
        admitted = self.n_sent - self.n_refused
        while points and now - points[0][0] > self.horizon_s:
            points.popleft()
        est = None
        for t, a in reversed(points):  # the latest earlier episode that spans enough
            span = now - t
            if span >= self.min_span_s and admitted - a >= self.min_admitted:
                est = (admitted - a) / span
                break
        # The next measurement starts when the endpoint has room again: its Retry-After says when (it counts
        # what it is owed for refused requests, which the requests sent meanwhile do not show).
        points.append([resume, admitted])
        if est is not None and est > 0:
            self.found = est
            pace = self.backoff * est
            self.rate = pace if self.rate is None else min(self.rate, pace)
        elif self.rate is not None:
            self.rate *= self.backoff ** 3  # too little to measure by: cut anyway
        self._cut_t = now
        self._grow_t = None
        return True

    def pace(self, binding: bool, now: float | None = None) -> float | None:
        """The rate to pace at now; grows it (probing) when `binding` (requests waited for it since last asked)."""
        if self.rate is None:
            return None
        now = self._now(now)
        if binding and self._grow_t is not None:
            dt = min(1.0, max(0.0, now - self._grow_t))
            growth = min(self.max_probe, self.probe * 2 ** ((now - self._cut_t) / self.probe_double_s))
            self.rate *= 1.0 + growth * dt
        self._grow_t = now
        return self.rate

    def describe(self) -> str:
        if self.rate is None:
            return ""
        return f"found {self.found:.3g} req/s, pacing {self.rate:.3g}/s"
