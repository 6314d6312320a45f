"""`RunSummary`: the counts, tokens and cost of a run."""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

from cai_core.llm.client.requests import STATUSES


@dataclass
class RunSummary:
    """What a run (or the client's whole life) did; `line()` for logs, `metrics()` for KFP."""

    total: int = 0
    from_journal: int = 0
    sent: int = 0
    ok: int = 0
    statuses: Counter = dataclasses.field(default_factory=Counter)
    reasons: dict = dataclasses.field(default_factory=dict)
    attempts: int = 0
    retried: int = 0
    retried_gt2: int = 0
    rate_limited: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0
    saved_usd: float | None = 0.0
    wall_s: float = 0.0
    batch_ids: list = dataclasses.field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(n for s, n in self.statuses.items() if s != "ok")

    def add(self, other: "RunSummary") -> None:
        for f in ("total", "from_journal", "sent", "ok", "attempts", "retried", "retried_gt2", "rate_limited",
                  "prompt_tokens", "completion_tokens", "wall_s"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        for f in ("cost_usd", "saved_usd"):
            a, b = getattr(self, f), getattr(other, f)
            setattr(self, f, None if a is None or b is None else a + b)
        self.statuses.update(other.statuses)
        for k, v in other.reasons.items():
            self.reasons.setdefault(k, v)
        self.batch_ids += other.batch_ids

    def causes(self) -> str:
        parts = []
        for status, n in self.statuses.most_common():
            if status != "ok":
                why = self.reasons.get(status)
                parts.append(f"{status} {n}" + (f" (e.g. {why})" if why else ""))
        return "; ".join(parts)

    def line(self) -> str:
        cost = "unknown" if self.cost_usd is None else f"${self.cost_usd:.4f}"
        text = (f"{self.total} requests: {self.ok} ok, {self.failed} failed, {self.from_journal} from the journal, "
                f"{self.sent} sent ({self.attempts} attempts, {self.retried} retried, {self.retried_gt2} retried >2x, "
                f"{self.rate_limited} rate-limited); tokens in {self.prompt_tokens} out {self.completion_tokens}; "
                f"est. cost {cost}")
        if self.saved_usd:
            text += f" (journal saved ${self.saved_usd:.4f})"
        causes = self.causes()
        return text + (f"; failures: {causes}" if causes else "")

    def metrics(self) -> dict[str, float]:
        m = {"requests": self.total, "requests_ok": self.ok, "requests_failed": self.failed,
             "requests_from_journal": self.from_journal, "requests_sent": self.sent, "attempts": self.attempts,
             "requests_retried": self.retried, "requests_retried_gt2": self.retried_gt2,
             "rate_limited": self.rate_limited, "prompt_tokens": self.prompt_tokens,
             "completion_tokens": self.completion_tokens,
             "cost_usd": self.cost_usd if self.cost_usd is not None else -1.0}
        for status in STATUSES[1:]:
            m[f"requests_{status}"] = self.statuses.get(status, 0)
        return m
