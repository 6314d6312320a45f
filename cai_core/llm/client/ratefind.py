"""`RateFinder`: the request rate an endpoint admits, found from its 429s when it states no limits.

Most hosted limits are rates (requests or tokens per minute), not a number of requests in flight, and an
in-flight window is a poor way to hold a rate: latency varies from request to request, so the rate a window
sends varies with it, and the window must stay well below the limit to keep clear of 429s. A server that
states its limits (``x-ratelimit-limit-*``) is paced by them (`_Limiter.learn`). One that does not, is
measured:

* A 429 means the endpoint's bucket is empty *now*, and its Retry-After says when it has room for one
  request again. From that moment (the episode's resumption) to the next 429, an endpoint kept busy admits
  the one request it had room for plus what its limit refills, whatever the size of its bucket. So the
  requests admitted in such busy intervals (less one each), over the intervals' length, are the limit. The
  pauses between them (Retry-After) are left out, and with them what an endpoint that charges refused
  requests is owed (its Retry-After counts that in). At least `min_span_s` seconds and `min_admitted`
  requests are measured over (earlier intervals, up to `horizon_s` back, are added for that); the first
  episode alone says nothing about the rate.
* **The first 429** has nothing to measure against, and an in-flight window cannot hold a rate below one
  request per latency (at 5 req/s and 0.1 s, a window of one sends twice too many, and an endpoint that
  charges refused requests then spends half its limit on refusals). So pacing starts at once, at `backoff`
  times what was sent in the last second and not refused (the refusals of that second still to come are
  taken off as they arrive): an over-estimate, since it drained the bucket. Until a measurement, each
  further episode cuts the pace by `quick_cut`; a measurement cuts it by at most `max_cut` at once (it is a
  lower bound when the client did not keep the endpoint busy), never below `backoff` times it.
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

    def __init__(self, *, backoff: float = 0.97, quick_cut: float = 0.1, max_cut: float = 0.15,
                 probe: float = 0.04, probe_double_s: float = 5.0, max_probe: float = 0.25,
                 min_span_s: float = 1.0, min_admitted: int = 10, horizon_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.quick_cut, self.max_cut = quick_cut, max_cut
        self.backoff, self.probe, self.probe_double_s, self.max_probe = backoff, probe, probe_double_s, max_probe
        self.min_span_s, self.min_admitted, self.horizon_s = min_span_s, min_admitted, horizon_s
        self.clock = clock
        self.rate: float | None = None  # requests/s to pace at; None until the first 429
        self.found: float | None = None  # the latest measurement of what the endpoint admits (requests/s)
        self.episodes = 0  # 429 episodes (a 429 of a request sent after the last cut)
        self.n_sent = self.n_refused = 0
        #: [resumption time, requests admitted by then, seconds busy until the next episode, admitted by then]
        self._points: collections.deque[list] = collections.deque()
        self._recent: collections.deque[float] = collections.deque()  # send times of the last second (until paced)
        self._first_cut_t: float | None = None  # when the first pace was set
        self._cut_t = -float("inf")
        self._grow_t: float | None = None

    def _now(self, now: float | None) -> float:
        return self.clock() if now is None else now

    def sent(self, now: float | None = None) -> float:
        """A request goes on the wire; returns its send time (to pass to `rate_limited`)."""
        now = self._now(now)
        self.n_sent += 1
        if self.rate is None:  # only the first 429 needs them
            recent = self._recent
            recent.append(now)
            while now - recent[0] > 1.0:
                recent.popleft()
        return now

    def rate_limited(self, sent_at: float, now: float | None = None, retry_after: float | None = None) -> bool:
        """A 429 for the request sent at `sent_at`, asking to wait `retry_after` seconds; True when it starts a
        new episode (and the rate was measured, if it could be)."""
        self.n_refused += 1
        now = self._now(now)
        resume = now + (retry_after or 0.0)
        points = self._points
        for point in points:  # intervals that began or ended while this request was out: it was not admitted
            if point[0] > sent_at:
                point[1] -= 1
            if point[2] and point[0] + point[2] > sent_at:
                point[3] -= 1
        if sent_at < self._cut_t:
            if points and resume > points[-1][0]:
                points[-1][0] = resume  # the endpoint needs longer to have room again
            first = self._first_cut_t
            if self.found is None and first is not None and first - 1.0 <= sent_at < first and self.rate is not None:
                self.rate = max(self.backoff, self.rate - self.backoff)  # counted in the first pace, not admitted
            return False
        self.episodes += 1
        admitted = self.n_sent - self.n_refused
        if points:  # the busy interval that this episode ends: [that episode's resumption, now]
            points[-1][2] = max(0.0, now - points[-1][0])
            points[-1][3] = admitted
        while points and now - points[0][0] > self.horizon_s:
            points.popleft()
        est = None
        span = got = 0.0
        for resume_t, start, busy, end in reversed(points):  # the latest intervals that span enough together
            span += busy
            got += max(0, end - start - 1)  # less the one request the endpoint had room for at resumption
            if span >= self.min_span_s and got >= self.min_admitted:
                est = got / span
                break
        points.append([resume, admitted, 0.0, admitted])
        if self.rate is None:  # the first pace: what went out in the last second and was not refused
            self.rate = self.backoff * max(1, len(self._recent) - 1)
            self._recent.clear()
            self._first_cut_t = now
        elif est is not None and est > 0:
            self.found = est
            self.rate = min(self.rate, max(self.backoff * est, (1.0 - self.max_cut) * self.rate))
        else:  # too soon to measure by: the pace is clearly too high (but not below the latest measurement)
            floor = self.backoff * self.found if self.found is not None else 0.0
            self.rate = min(self.rate, max(floor, (1.0 - self.quick_cut) * self.rate))
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
        found = f"found {self.found:.3g} req/s, " if self.found is not None else ""
        return f"{found}pacing {self.rate:.3g}/s"
