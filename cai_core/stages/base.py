"""What every stage returns."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StageResult:
    """Paths a stage wrote and its scalar metrics (counts, rates, losses)."""

    outputs: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # non-scalar summaries (per-reason counts, tables)

    def finite_metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
