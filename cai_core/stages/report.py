"""report (Stage 10): one HTML page and one Markdown file per run.

Reads every stage's `_stage.json` (metrics and details written by the runtime)
and the training logs, and writes:
  report.html   self-contained (plots embedded as PNG data URIs)
  report.md     the same content, plots as files under plots/
  metrics.json  {stage: {metric: value}}
"""
from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from cai_core import records
from cai_core.configbase import ConfigBase, require
from cai_core.stages.base import StageResult

STAGE_FILE = "_stage.json"

# (title, [log keys]) per training stage; keys missing from a log are skipped.
CURVES = {
    "sft": [("Loss", ["loss"]), ("Gradient norm", ["grad_norm"]), ("Learning rate", ["learning_rate"])],
    "dpo": [("Loss", ["loss"]), ("Rewards", ["rewards/chosen", "rewards/rejected"]),
            ("Reward margin", ["rewards/margins"]), ("Preference accuracy", ["rewards/accuracies"]),
            ("Entropy", ["entropy"]), ("Gradient norm", ["grad_norm"])],
}
COLLAPSE_COLUMNS = ["rep_2", "rep_3", "rep_4", "distinct_1", "distinct_2", "tail_loop_rate", "empty_rate", "mean_chars"]


@dataclass(frozen=True)
class ReportConfig(ConfigBase):
    #: Title at the top of the report.
    title: str = "cai run report"
    #: Example rows shown per section (revisions, judged pairs, answers).
    examples: int = 3
    #: Resolution of the plots.
    dpi: int = 90

    def validate(self) -> None:
        require(self.examples >= 0, "examples", "must be >= 0")
        require(20 <= self.dpi <= 400, "dpi", "must be in [20, 400]")


def load_stage(stage_dir: Path) -> dict:
    path = stage_dir / STAGE_FILE
    return records.read_json(path) if path.exists() else {"metrics": {}, "details": {}}


def _plot(series: Mapping[str, tuple[list[float], list[float]]], title: str, dpi: int) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 2.8), dpi=dpi)
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=label)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def training_plots(stage: str, log_path: Path, dpi: int) -> list[tuple[str, bytes]]:
    if not log_path.exists():
        return []
    rows = [r for r in records.read_jsonl(log_path, allow_empty=True) if "step" in r]
    plots = []
    for title, keys in CURVES.get(stage, []):
        series = {}
        for key in keys:
            points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
            if points:
                series[key] = ([p[0] for p in points], [p[1] for p in points])
        if series:
            plots.append((f"{stage}: {title}", _plot(series, f"{stage.upper()} {title.lower()}", dpi)))
    return plots


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class _Doc:
    """Builds the Markdown and HTML versions side by side."""

    def __init__(self, title: str):
        self.md = [f"# {title}\n"]
        self.html = [f"<h1>{html.escape(title)}</h1>"]

    def heading(self, text: str) -> None:
        self.md.append(f"\n## {text}\n")
        self.html.append(f"<h2>{html.escape(text)}</h2>")

    def para(self, text: str) -> None:
        self.md.append(text + "\n")
        self.html.append(f"<p>{html.escape(text)}</p>")

    def table(self, header: list[str], rows: list[list]) -> None:
        self.md.append("| " + " | ".join(header) + " |")
        self.md.append("|" + "---|" * len(header))
        for row in rows:
            self.md.append("| " + " | ".join(_fmt(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |")
        self.md.append("")
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
        self.html.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def image(self, title: str, png: bytes, file_name: str) -> None:
        self.md.append(f"![{title}](plots/{file_name})")
        data = base64.b64encode(png).decode()
        self.html.append(f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{html.escape(title)}</figcaption></figure>")


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:13px;text-align:left;vertical-align:top;max-width:420px}th{background:#f3f3f3}"
        "figure{display:inline-block;margin:4px}figcaption{font-size:11px;color:#666}")


def run(cfg: ReportConfig, stage_dirs: Mapping[str, Path], out_dir: Path,
        stages: Mapping[str, dict] | None = None) -> StageResult:
    """`stage_dirs`: artifacts to read data from; `stages`: every step's `_stage.json`
    (default: those found in `stage_dirs`)."""
    if stages is None:
        stages = {name: load_stage(path) for name, path in stage_dirs.items()}
    metrics_json = {name: s.get("metrics", {}) for name, s in stages.items()}
    doc = _Doc(cfg.title)
    doc.para("Pipeline: prepare -> revise -> clean -> SFT -> pairs -> clean -> judge -> DPO -> evaluate.")

    doc.heading("Evaluation")
    per_model = stages.get("evaluate", {}).get("details", {}).get("per_model", {})
    if per_model:
        doc.table(["model"] + COLLAPSE_COLUMNS,
                  [[m] + [v["all"].get(c, "") for c in COLLAPSE_COLUMNS] for m, v in per_model.items()])
        cats = sorted({c for v in per_model.values() for c in v if c != "all"})
        if cats:
            doc.para("Tail-loop rate and rep-3 per prompt category:")
            doc.table(["model"] + [f"{c} {k}" for c in cats for k in ("tail_loop", "rep_3")],
                      [[m] + [v.get(c, {}).get(k, "") for c in cats for k in ("tail_loop_rate", "rep_3")]
                       for m, v in per_model.items()])
    else:
        doc.para("No evaluation results.")

    doc.heading("Data cleaning")
    clean_rows = []
    for name in ("clean_revisions", "clean_pairs"):
        m = metrics_json.get(name)
        if m:
            reasons = ", ".join(f"{k[7:]}={int(v)}" for k, v in sorted(m.items()) if k.startswith("reason_")) or "none"
            clean_rows.append([name, int(m.get("texts", 0)), int(m.get("changed", 0)), m.get("changed_rate", 0.0), reasons])
    doc.table(["point", "texts", "changed", "changed rate", "reasons"], clean_rows) if clean_rows else doc.para("No cleaning stage ran.")

    doc.heading("Judge")
    jm = metrics_json.get("judge", {})
    if jm:
        doc.table(["metric", "value"], [[k, v] for k, v in sorted(jm.items())])

    doc.heading("Training curves")
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    n_plots = 0
    for stage in ("sft", "dpo"):
        if stage in stage_dirs:
            for i, (title, png) in enumerate(training_plots(stage, stage_dirs[stage] / "train_log.jsonl", cfg.dpi)):
                name = f"{stage}_{i}.png"
                (plots_dir / name).write_bytes(png)
                doc.image(title, png, name)
                n_plots += 1
    if not n_plots:
        doc.para("No training logs found.")

    doc.heading("Examples")
    _examples(doc, stage_dirs, cfg.examples)

    doc.heading("All stage metrics")
    doc.table(["stage", "metric", "value"], [[s, k, v] for s, m in metrics_json.items() for k, v in sorted(m.items())])

    md = "\n".join(doc.md) + "\n"
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(cfg.title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(doc.html)}</body></html>\n")
    records.atomic_write(out_dir / "report.md", md)
    records.atomic_write(out_dir / "report.html", page)
    records.write_json(out_dir / "metrics.json", metrics_json)
    return StageResult(outputs={"html": out_dir / "report.html", "markdown": out_dir / "report.md",
                                "metrics": out_dir / "metrics.json"},
                       metrics={"plots": n_plots, "stages": len(stages)})


def _examples(doc: _Doc, stage_dirs: Mapping[str, Path], n: int) -> None:
    if not n:
        return
    cleaned = stage_dirs.get("clean_revisions")
    if cleaned and (cleaned / "cleaned.jsonl").exists():
        rows = records.read_jsonl(cleaned / "cleaned.jsonl", allow_empty=True)[:n]
        doc.para("Revisions (first answer -> final revision -> cleaned):")
        doc.table(["prompt", "first answer", "final revision", "cleaned", "reasons"],
                  [[r["prompt"], r["response"], r["final"], r.get("final_cleaned", ""),
                    ", ".join(r.get("final_cleanup", {}).get("reasons", []))] for r in rows])
    judge = stage_dirs.get("judge")
    if judge and (judge / "train.jsonl").exists():
        rows = records.read_jsonl(judge / "train.jsonl", allow_empty=True)[:n]
        doc.para("Judged pairs:")
        doc.table(["prompt", "chosen", "rejected", "principle", "confidence"],
                  [[r["prompt"], r["chosen"], r["rejected"], r.get("principle_id", ""), r["confidence"]] for r in rows])

