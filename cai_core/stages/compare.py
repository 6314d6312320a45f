"""compare: one report over the cleaning ablation (variants x seeds).

Each ablation member is a whole pipeline run with its own run root holding
`metrics.json` ({step: {metric: value}}). For every variant the stage reports,
per chosen metric, the mean across seeds and a 95% confidence interval
(Student t; no interval from a single seed), as `ablation.json`,
`ablation.md` and `ablation.html`.
"""
from __future__ import annotations

import html
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cai_core import records, storage
from cai_core.config.base import ConfigBase, require
from cai_core.errors import StageError
from cai_core.runtime.artifacts import ABLATION_HTML, ABLATION_JSON, ABLATION_MD, METRICS
from cai_core.stages.base import StageResult

# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]


@dataclass(frozen=True)
class CompareConfig(ConfigBase):
    #: Cleaning variants the ablation runs the whole pipeline for.
    variants: tuple[str, ...] = ("none", "rule", "llm", "hybrid")
    #: Seeds per variant (every stage seed is set to it); confidence intervals need >= 2.
    seeds: tuple[int, ...] = (0, 1)
    #: Metrics to compare, as step.metric; a trailing * matches every metric with that prefix.
    metrics: tuple[str, ...] = (
        "evaluate.dpo.*", "evaluate.sft.*", "judge.kept", "judge.position_bias_rate", "judge.length_bias_rate",
        "clean_revisions.changed_rate", "clean_pairs.changed_rate")
    #: Title of the comparison report.
    title: str = "cai cleaning ablation"

    def validate(self) -> None:
        require(len(self.metrics) > 0, "metrics", "name at least one step.metric")
        require(len(self.variants) > 0, "variants", "name at least one cleaning variant")
        require(len(self.seeds) > 0 and len(set(self.seeds)) == len(self.seeds), "seeds", "give distinct seeds")


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high) of a 95% t interval; low == high == mean for a single value."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    half = _T975[min(len(values) - 1, len(_T975)) - 1] * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def _select(metrics: dict, patterns: Sequence[str]) -> dict[str, float]:
    flat = {f"{step}.{k}": v for step, m in metrics.items() if isinstance(m, dict) for k, v in m.items()
            if isinstance(v, (int, float)) and math.isfinite(v)}
    out = {}
    for pattern in patterns:
        if pattern.endswith("*"):
            out.update({k: v for k, v in flat.items() if k.startswith(pattern[:-1])})
        elif pattern in flat:
            out[pattern] = flat[pattern]
    return out


def run(cfg: CompareConfig, members: Sequence[dict], out_dir: Path) -> StageResult:
    """`members`: [{"variant", "seed", "run_root"}] of completed pipeline runs."""
    by_variant: dict[str, list[dict[str, float]]] = {}
    for member in members:
        path = storage.join(member["run_root"], METRICS)
        if not storage.exists(path):
            raise StageError(f"ablation member {member['variant']}/seed {member['seed']}: no metrics.json at {path}")
        selected = _select(json.loads(storage.read_text(path)), cfg.metrics)
        by_variant.setdefault(member["variant"], []).append(selected)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for variant, runs in by_variant.items():
        keys = sorted(set().union(*runs))
        table[variant] = {}
        for key in keys:
            values = [r[key] for r in runs if key in r]
            mean, low, high = mean_ci(values)
            table[variant][key] = {"mean": mean, "ci_low": low, "ci_high": high, "n": len(values)}
    records.write_json(out_dir / ABLATION_JSON, table)
    md, page = _render(cfg.title, table)
    records.atomic_write(out_dir / ABLATION_MD, md)
    records.atomic_write(out_dir / ABLATION_HTML, page)
    metrics = {f"{v}.{k}": s["mean"] for v, rows in table.items() for k, s in rows.items()}
    return StageResult(outputs={"json": out_dir / ABLATION_JSON, "markdown": out_dir / ABLATION_MD,
                                "html": out_dir / ABLATION_HTML},
                       metrics={"variants": len(table), "members": len(members), **metrics},
                       details={"table": table})


def _render(title: str, table: dict) -> tuple[str, str]:
    variants = list(table)
    keys = sorted(set().union(*(rows.keys() for rows in table.values())))

    def cell(v: str, k: str) -> str:
        s = table[v].get(k)
        if not s:
            return ""
        if s["n"] < 2:
            return f"{s['mean']:.4g}"
        return f"{s['mean']:.4g} [{s['ci_low']:.4g}, {s['ci_high']:.4g}]"

    md = [f"# {title}\n", "Mean over seeds with a 95% confidence interval [low, high].\n",
          "| metric | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    md += ["| " + k + " | " + " | ".join(cell(v, k) for v in variants) + " |" for k in keys]
    head = "".join(f"<th>{html.escape(v)}</th>" for v in variants)
    body = "".join(f"<tr><td>{html.escape(k)}</td>" + "".join(f"<td>{html.escape(cell(v, k))}</td>" for v in variants)
                   + "</tr>" for k in keys)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
            f"<h1>{html.escape(title)}</h1><p>Mean over seeds with a 95% confidence interval [low, high].</p>"
            f"<table border='1' cellpadding='4'><thead><tr><th>metric</th>{head}</tr></thead><tbody>{body}"
            f"</tbody></table></body></html>\n")
    return "\n".join(md) + "\n", page
