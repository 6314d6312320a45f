"""report (Stage 10): one HTML page and one Markdown file per run.

Reads every stage's `_stage.json` (metrics and details written by the runtime)
and the training logs, and writes:
  report.html   self-contained (plots embedded as PNG data URIs)
  report.md     the same content, plots as files under plots/
  metrics.json  {stage: {metric: value}} plus "models" (per model: MT-Bench turn-1 /
                turn-2 / average, ASR and over-refusal with their 95% intervals, the
                collapse metrics, the gate verdict) and "verdict" (the run's gate
                verdict and whether the DPO model was promoted)

Sections: the collapse gate (verdict, reasons, per-model probe metrics against the
thresholds), the evaluation table base vs SFT vs DPO with a plot, MT-Bench per category,
collapse per answer set, the worst tail-loop examples, data cleaning, judge statistics
(preference judge and evaluation judges), training curves, examples, all stage metrics.
When the gate failed the DPO model, no evaluation is shown (an `evaluate` record left
in the run folder by an earlier run is ignored) and the report says why.
"""
from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from cai_core import records
from cai_core.config.base import ConfigBase, require
from cai_core.runtime import artifacts
from cai_core.runtime.artifacts import STAGE_FILE
from cai_core.runtime.steps import named
from cai_core.stages import report_rounds
from cai_core.stages.base import StageResult

#: The steps that run the clean stage (revisions before SFT, pairs before judging).
CLEAN_STEPS = named(lambda step: step.stage == "clean")

# (title, [log keys]) per training stage; keys missing from a log are skipped.
CURVES = {
    "sft": [("Loss", ["loss"]), ("Gradient norm", ["grad_norm"]), ("Learning rate", ["learning_rate"])],
    "dpo": [("Loss", ["loss"]), ("Rewards", ["rewards/chosen", "rewards/rejected"]),
            ("Reward margin", ["rewards/margins"]), ("Preference accuracy", ["rewards/accuracies"]),
            ("Entropy", ["entropy"]), ("Gradient norm", ["grad_norm"])],
}
COLLAPSE_COLUMNS = ["rep_2", "rep_3", "rep_4", "distinct_1", "distinct_2", "tail_loop_rate", "empty_rate", "mean_chars"]
#: Per-model keys copied into metrics.json "models" (from the evaluate step's metrics).
MODEL_KEYS = ("mt_bench_t1", "mt_bench_t2", "mt_bench_avg", "asr", "asr_ci_low", "asr_ci_high", "asr_n",
              "over_refusal", "over_refusal_ci_low", "over_refusal_ci_high", "over_refusal_n",
              "rep_2", "rep_3", "rep_4", "distinct_1", "distinct_2", "tail_loop_rate", "empty_rate", "mean_chars")


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


def _figure(width: float = 4.2, height: float = 2.8, dpi: int = 90, ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width, height), dpi=dpi)
    return plt, fig, axes


def _png(plt, fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _plot(series: Mapping[str, tuple[list[float], list[float]]], title: str, dpi: int) -> bytes:
    plt, fig, ax = _figure(dpi=dpi)
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=label)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=7)
    return _png(plt, fig)


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


def evaluation_plot(models: Mapping[str, Mapping[str, Any]], dpi: int) -> bytes | None:
    """MT-Bench turn-1/turn-2/average per model, and ASR / over-refusal with their 95% intervals."""
    names = list(models)
    if not names:
        return None
    plt, fig, (ax1, ax2) = _figure(width=8.4, height=3.0, dpi=dpi, ncols=2)
    width = 0.26
    for k, (key, label) in enumerate((("mt_bench_t1", "turn 1"), ("mt_bench_t2", "turn 2"), ("mt_bench_avg", "average"))):
        ys = [models[n].get(key) for n in names]
        xs = [i + (k - 1) * width for i in range(len(names))]
        ax1.bar([x for x, y in zip(xs, ys) if y is not None], [y for y in ys if y is not None], width, label=label)
    ax1.set_xticks(range(len(names)), names, fontsize=8)
    ax1.set_ylim(0, 10)
    ax1.set_title("MT-Bench (1-10, higher is better)", fontsize=10)
    ax1.legend(fontsize=7)
    ax1.grid(axis="y", alpha=0.3)
    for k, (key, label) in enumerate((("asr", "attack success"), ("over_refusal", "over-refusal"))):
        xs, ys, lo, hi = [], [], [], []
        for i, n in enumerate(names):
            m = models[n]
            if m.get(key) is None:
                continue
            xs.append(i + (k - 0.5) * width)
            ys.append(m[key])
            lo.append(max(0.0, m[key] - m.get(f"{key}_ci_low", m[key])))
            hi.append(max(0.0, m.get(f"{key}_ci_high", m[key]) - m[key]))
        if xs:
            ax2.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=label)
    ax2.set_xticks(range(len(names)), names, fontsize=8)
    ax2.set_ylim(0, 1)
    ax2.set_title("Harmlessness (lower is better; 95% CI)", fontsize=10)
    ax2.legend(fontsize=7)
    ax2.grid(axis="y", alpha=0.3)
    for ax in (ax1, ax2):
        ax.tick_params(labelsize=7)
    return _png(plt, fig)


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _md_cell(v) -> str:
    """A Markdown table cell: model answers are untrusted text, and Markdown renders raw HTML, so `&` and `<` are
    escaped (a `<script>` in an answer shows as text); `|` and newlines would break the table row."""
    return _fmt(v).replace("&", "&amp;").replace("<", "&lt;").replace("|", "\\|").replace("\n", " ")


class _Doc:
    """Builds the Markdown and HTML versions side by side."""

    def __init__(self, title: str):
        self.md = [f"# {title}\n"]
        self.html = [f"<h1>{html.escape(title)}</h1>"]

    def heading(self, text: str, level: int = 2) -> None:
        self.md.append(f"\n{'#' * level} {text}\n")
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def para(self, text: str, css: str = "") -> None:
        self.md.append(text + "\n")
        cls = f' class="{css}"' if css else ""
        self.html.append(f"<p{cls}>{html.escape(text)}</p>")

    def table(self, header: list[str], rows: list[list], css: str = "") -> None:
        self.md.append("| " + " | ".join(header) + " |")
        self.md.append("|" + "---|" * len(header))
        for row in rows:
            self.md.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
        self.md.append("")
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
        cls = f' class="{css}"' if css else ""
        self.html.append(f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def image(self, title: str, png: bytes, file_name: str) -> None:
        # Inline in both: the Kubeflow UI renders the Markdown artifact alone, where plots/<file> does not resolve.
        # The PNG is also kept as plots/<file_name> beside the report.
        data = base64.b64encode(png).decode()
        self.md.append(f"![{title}](data:image/png;base64,{data})")
        self.html.append(f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{html.escape(title)}</figcaption></figure>")


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:13px;text-align:left;vertical-align:top;max-width:420px}th{background:#f3f3f3}"
        "figure{display:inline-block;margin:4px}figcaption{font-size:11px;color:#666}"
        "p.verdict-pass{color:#1a6b1a;font-weight:600}p.verdict-flag{color:#8a5a00;font-weight:600}"
        "p.verdict-fail{color:#a31515;font-weight:600}table.gallery td{white-space:pre-wrap;max-width:640px}")


def _order(names) -> list[str]:
    """base, sft, dpo first (JSON round trips sort keys), then any others in their order."""
    names = list(names)
    known = [n for n in ("base", "sft", "dpo") if n in names]
    return known + [n for n in names if n not in known]


def _ci(rate, lo, hi) -> str:
    if rate is None:
        return "n/a"
    return f"{rate:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else f"{rate:.3f}"


def model_summary(evaluate: Mapping, gate: Mapping | None) -> dict[str, dict[str, Any]]:
    """Per model: MODEL_KEYS found in the evaluate metrics, plus the gate verdict (pass/fail, or None)."""
    metrics = evaluate.get("metrics", {})
    per_gate = (gate or {}).get("per_model", {})
    names = _order(list(evaluate.get("details", {}).get("per_model", {})) +
                   [n for n in per_gate if n not in evaluate.get("details", {}).get("per_model", {})])
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        row: dict[str, Any] = {k: metrics[f"{name}.{k}"] for k in MODEL_KEYS if f"{name}.{k}" in metrics}
        row["gate"] = None if name not in per_gate else ("pass" if per_gate[name]["pass"] else "fail")
        row["evaluated"] = name in evaluate.get("details", {}).get("per_model", {})
        out[name] = row
    return out


def run(cfg: ReportConfig, stage_dirs: Mapping[str, Path], out_dir: Path,
        stages: Mapping[str, dict] | None = None, rounds: int = 1,
        round_logs: Mapping[int, list[dict]] | None = None) -> StageResult:
    """`stage_dirs`: artifacts to read data from; `stages`: every step's `_stage.json`
    (default: those found in `stage_dirs`). A `_stage.json` inside a given artifact wins.
    `rounds`: the run's preference rounds (dpo.iterations); `round_logs`: round -> its DPO train log rows."""
    stages = dict(stages) if stages is not None else {}
    for name, path in stage_dirs.items():
        if (Path(path) / STAGE_FILE).exists():
            stages[name] = load_stage(Path(path))
    for name in report_rounds.stale_steps(stages, rounds):  # left by an earlier run of this id
        stages.pop(name)
    gate = _gate_details(stage_dirs, stages)
    if gate is not None and gate.get("verdict") == "fail" and "evaluate" not in stage_dirs:
        stages.pop("evaluate", None)  # left by an earlier run of this id: not this run's result
    metrics_json: dict[str, Any] = {name: s.get("metrics", {}) for name, s in stages.items()}
    evaluate = stages.get("evaluate", {})
    models = model_summary(evaluate, gate)

    doc = _Doc(cfg.title)
    pipeline_run = any(name != "evaluate" for name in stages)  # else: `cai evaluate` on its own
    warnings = _front_matter(doc, stages, gate, models)
    if rounds > 1:
        doc.para(report_rounds.outcome(stages, rounds))
    if pipeline_run:
        doc.para("Pipeline: prepare -> revise -> clean -> SFT -> pairs -> clean -> judge -> DPO -> collapse gate -> "
                 "evaluate -> report.")
    elif models_seen := evaluate.get("details", {}).get("models", {}):
        doc.para("Evaluation of " + ", ".join(f"{k} ({v})" for k, v in models_seen.items()) + ".")
    else:
        doc.para("No step of a run and no evaluated model were found: there is nothing to report.")
    plots_dir = out_dir / artifacts.PLOTS_DIR
    plots_dir.mkdir(parents=True, exist_ok=True)
    n_plots = 0

    if pipeline_run:
        doc.heading("Collapse gate")
        _gate_section(doc, gate)
    if rounds > 1:
        n_plots += _rounds_section(doc, stages, rounds, round_logs or {}, plots_dir, cfg.dpi)

    doc.heading("Evaluation")
    per_model = evaluate.get("details", {}).get("per_model", {})
    if per_model:
        png = evaluation_plot({n: models.get(n, {}) for n in _order(per_model)}, cfg.dpi)
        if png:
            (plots_dir / "evaluation.png").write_bytes(png)
            n_plots += 1
        _evaluation_tables(doc, evaluate, models, png)
        _gallery(doc, evaluate.get("details", {}).get("gallery", []), "Worst tail-loop examples")
    elif gate is not None and gate.get("verdict") == "fail":
        doc.para(f"Not evaluated: the {gate.get('candidate', 'dpo')} model failed the collapse gate, so it was "
                 "neither evaluated nor promoted (see the collapse gate above).")
    else:
        doc.para("No evaluation results.")

    if pipeline_run:
        _pipeline_sections(doc, metrics_json)
    ej = evaluate.get("details", {}).get("judge")
    if ej:
        if not pipeline_run:
            doc.heading("Judge")
        doc.para(f"Evaluation judge: {ej.get('name')} (grades read from {'log-probabilities' if ej.get('mode') == 'logprobs' else 'the reply text'}). "
                 "Grades with a status other than ok / empty_answer are left out of the averages and rates.")
        statuses = sorted({s for task in ej.get("statuses", {}).values() for s in task})
        doc.table(["task"] + statuses, [[task] + [counts.get(s, 0) for s in statuses]
                                        for task, counts in ej.get("statuses", {}).items()])
    elif pipeline_run and not metrics_json.get("judge"):
        doc.para("No judge statistics.")

    if pipeline_run:
        doc.heading("Training curves")
        for stage in ("sft", "dpo"):
            m = metrics_json.get(stage, {})
            if m.get("total_params"):
                trained, total = m.get("trainable_params", 0), m["total_params"]
                how = "full fine-tuning" if trained >= total else "a LoRA adapter, merged into the model handed on"
                doc.para(f"{stage}: trained {trained:,.0f} of {total:,.0f} parameters ({trained / total:.1%}; {how}).")
        curves = 0
        for stage in ("sft", "dpo"):
            if stage in stage_dirs:
                for i, (title, png) in enumerate(training_plots(stage, Path(stage_dirs[stage]) / artifacts.TRAIN_LOG, cfg.dpi)):
                    name = f"{stage}_{i}.png"
                    (plots_dir / name).write_bytes(png)
                    doc.image(title, png, name)
                    curves += 1
        n_plots += curves
        if not curves:
            doc.para("No training logs found.")

    doc.heading("Examples")
    _examples(doc, stage_dirs, cfg.examples)

    doc.heading("All stage metrics")
    doc.table(["stage", "metric", "value"], [[s, k, v] for s, m in metrics_json.items() for k, v in sorted(m.items())])

    md = "\n".join(doc.md) + "\n"
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(cfg.title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(doc.html)}</body></html>\n")
    metrics_json["models"] = models
    metrics_json["warnings"] = warnings
    if gate is not None:
        metrics_json["verdict"] = {"gate": gate.get("verdict"), "promoted": bool(gate.get("promoted")),
                                   "candidate": gate.get("candidate"), "reasons": gate.get("reasons", [])}
    records.atomic_write(out_dir / artifacts.REPORT_MD, md)
    records.atomic_write(out_dir / artifacts.REPORT_HTML, page)
    records.write_json(out_dir / artifacts.METRICS, metrics_json)
    result_metrics: dict[str, float] = {"plots": n_plots, "stages": len(stages)}
    if gate is not None:
        result_metrics["promoted"] = float(bool(gate.get("promoted")))
    for name, row in models.items():
        for key in ("mt_bench_avg", "asr", "over_refusal", "tail_loop_rate", "rep_3"):
            if row.get(key) is not None:
                result_metrics[f"{name}.{key}"] = row[key]
    return StageResult(outputs={"html": out_dir / artifacts.REPORT_HTML, "markdown": out_dir / artifacts.REPORT_MD,
                                "metrics": out_dir / artifacts.METRICS},
                       metrics=result_metrics)


def _rounds_section(doc: _Doc, stages: Mapping[str, dict], rounds: int, round_logs: Mapping[int, list[dict]],
                    plots_dir: Path, dpi: int) -> int:
    """A table of the preference rounds, their collapse metrics side by side and every round's DPO margins."""
    done = report_rounds.rounds_run(stages, rounds)
    doc.heading("Preference rounds")
    if not done:
        doc.para("No preference round reached DPO.")
        return 0
    doc.table(["round", "pairs", "judged pairs", "dpo steps", "last reward margin", "gate"]
              + [f"dpo {k}" for k in report_rounds.COLLAPSE_KEYS], report_rounds.summary_rows(stages, done))
    n = 0
    series = report_rounds.collapse_series(stages, done)
    if series:
        png = _bars(series, ["sft"] + [f"round {k}" for k in done], "Collapse metrics on the gate's probes", dpi)
        (plots_dir / "rounds_collapse.png").write_bytes(png)
        doc.image("Collapse metrics per round (the SFT model first)", png, "rounds_collapse.png")
        n += 1
    margins = report_rounds.margin_series({k: v for k, v in round_logs.items() if k in done})
    if margins:
        png = _plot(margins, "DPO reward margin per round", dpi)
        (plots_dir / "rounds_margins.png").write_bytes(png)
        doc.image("DPO reward margins, one line per round", png, "rounds_margins.png")
        n += 1
    return n


def _bars(series: Mapping[str, list[float | None]], groups: list[str], title: str, dpi: int) -> bytes:
    """One panel per metric, one bar per group (missing values left out)."""
    plt, fig, axes = _figure(width=3.0 * len(series), height=2.8, dpi=dpi, ncols=len(series))
    axes = axes if len(series) > 1 else [axes]
    for ax, (metric, values) in zip(axes, series.items()):
        ax.bar(range(len(groups)), [v if v is not None else 0.0 for v in values],
               color=["#888"] + ["#3a6ea5"] * (len(groups) - 1))
        ax.set_xticks(range(len(groups)), groups, fontsize=7)
        ax.set_title(metric, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title, fontsize=10)
    return _png(plt, fig)


def _policy_names(stages: Mapping[str, dict]) -> list[str]:
    """The configured model names the run trained or evaluated (e.g. "tiny"), as the stages recorded them."""
    names = [stages.get("sft", {}).get("details", {}).get("model")]
    names += list(stages.get("evaluate", {}).get("details", {}).get("models", {}).values())
    return [n for n in names if isinstance(n, str)]


def _front_matter(doc: _Doc, stages: Mapping[str, dict], gate: dict | None, models: Mapping[str, dict]) -> list[str]:
    """What a reader must know first, in words: a smoke-test model, the verdict, judges whose numbers are noise,
    and whether the model got better. Returns the warnings (also written to metrics.json)."""
    from cai_core.models.registry import is_smoke_test

    warnings: list[str] = []
    if any(is_smoke_test(n) for n in _policy_names(stages)):
        warnings.append("This run used the embedded tiny model, a random smoke-test model: its text is word salad "
                        "and its numbers mean nothing about the method. Use --config smollm2 (a real model) or "
                        "your own model.")
    if gate is not None:
        cand, reasons = gate.get("candidate", "dpo"), "; ".join(gate.get("reasons", [])) or "none"
        if gate.get("promoted"):
            doc.para(f"Verdict: PROMOTED. The {cand} model passed every collapse check of the gate.", "verdict-pass")
        elif gate.get("verdict") == "flag":
            doc.para(f"Verdict: NOT PROMOTED. The {cand} model broke collapse thresholds ({reasons}); it was "
                     "evaluated for the record only (gate mode flag).", "verdict-flag")
        else:
            doc.para(f"Verdict: NOT PROMOTED. The {cand} model broke collapse thresholds ({reasons}), so it was "
                     "not evaluated.", "verdict-fail")
    judge = stages.get("judge", {}).get("metrics", {})
    if judge.get("calibrated") == 0.0:
        warnings.append(f"The preference judge picked the known-better response in {judge['control_accuracy']:.0%} "
                        f"of its control pairs (chance is 50%; option A in {judge['control_first_slot_rate']:.0%} "
                        "of its answers): its preferences, and so what DPO learned from them, are close to noise.")
    em = stages.get("evaluate", {}).get("metrics", {})
    if em.get("mt_bench_judge.calibrated") == 0.0:
        warnings.append(f"The MT-Bench grader ranked a good answer above a bad one in "
                        f"{em['mt_bench_judge.control_accuracy']:.0%} of its control pairs: the MT-Bench scores are "
                        "uncalibrated and say nothing about helpfulness.")
    if em.get("safety_judge.calibrated") == 0.0:
        warnings.append(f"The safety classifier labelled {em['safety_judge.control_accuracy']:.0%} of its control "
                        "replies right: the attack success and over-refusal rates are artifacts of that classifier, "
                        "not findings about the models.")
    for text in warnings:
        doc.para("Warning: " + text, "verdict-flag")
    summary = _in_words(models, calibrated_safety=em.get("safety_judge.calibrated") != 0.0,
                        calibrated_mt=em.get("mt_bench_judge.calibrated") != 0.0)
    if summary:
        doc.para(summary)
    return warnings


def _in_words(models: Mapping[str, dict], *, calibrated_safety: bool, calibrated_mt: bool) -> str:
    """One paragraph: did the DPO model get better than the base model, on the figures that can be trusted."""
    base, dpo = models.get("base", {}), models.get("dpo", {})
    if not base or not dpo or not dpo.get("evaluated"):
        return ""
    parts, better, worse, same = [], [], [], []
    figures = [("tail_loop_rate", "tail-loop rate", -1, True), ("distinct_2", "distinct-2", +1, True),
               ("asr", "attack success rate", -1, calibrated_safety),
               ("mt_bench_avg", "MT-Bench average", +1, calibrated_mt)]
    for key, label, sign, trusted in figures:
        a, b = base.get(key), dpo.get(key)
        if a is None or b is None or not trusted:
            continue
        parts.append(f"{label} {a:.3g} -> {b:.3g}")
        change = sign * (b - a)
        (better if change > 1e-9 else worse if change < -1e-9 else same).append(label)
    if not parts:
        return ""
    if better and not worse:
        word = "better than the base model on " + ("every trusted figure" if not same else ", ".join(better))
    elif worse and not better:
        word = "worse than the base model on " + ("every trusted figure" if not same else ", ".join(worse))
    elif better or worse:
        word = f"mixed against the base model: better on {', '.join(better)}, worse on {', '.join(worse)}"
    else:
        word = "unchanged against the base model"
    if same and (better or worse):
        word += f", unchanged on {', '.join(same)}"
    return f"In words: the DPO model is {word} ({'; '.join(parts)})."


def _pipeline_sections(doc: _Doc, metrics_json: Mapping[str, Any]) -> None:
    """Data cleaning counts and the preference judge's statistics."""
    doc.heading("Data cleaning")
    for line in _prompt_lines(metrics_json):
        doc.para(line)
    clean_rows = []
    for name in CLEAN_STEPS:
        m = metrics_json.get(name)
        if m:
            reasons = ", ".join(f"{k[7:]}={int(v)}" for k, v in sorted(m.items()) if k.startswith("reason_")) or "none"
            clean_rows.append([name, int(m.get("texts", 0)), int(m.get("changed", 0)), m.get("changed_rate", 0.0), reasons])
    doc.table(["point", "texts", "changed", "changed rate", "reasons"], clean_rows) if clean_rows else doc.para("No cleaning stage ran.")
    doc.heading("Judge")
    jm = metrics_json.get("judge", {})
    if jm:
        doc.para("Preference judge (pairs for DPO):")
        doc.table(["metric", "value"], [[k, v] for k, v in sorted(jm.items())])


def _prompt_lines(metrics_json: Mapping[str, Any]) -> list[str]:
    """Every mix (counts per source: training and evaluation prompts, SFT's helpful data) and the train/eval
    overlap rate, from the prepare and sft steps' metrics."""
    lines = []
    for step, what in (("prepare_prompts", "Training"), ("prepare_eval", "Evaluation")):
        got = metrics_json.get(step) or {}
        mix = {k[4:-5]: int(v) for k, v in sorted(got.items()) if k.startswith("mix.") and k.endswith(".rows")}
        if mix:
            short = [f"{n} {int(got[f'mix.{n}.short'])} short" for n in mix if got.get(f"mix.{n}.short")]
            lines.append(f"{what} prompts mixed from " + ", ".join(f"{n}: {c}" for n, c in mix.items())
                         + (f" ({', '.join(short)} of its target)" if short else "") + ".")
    sft = metrics_json.get("sft") or {}
    if "helpful_rows" in sft:
        lines.append(f"SFT data mixed from cai: {int(sft.get('cai_rows', 0))}, helpful (sft.helpful_data): "
                     f"{int(sft['helpful_rows'])}" + (f" ({int(sft['helpful_short'])} short of its target)"
                                                      if sft.get("helpful_short") else "") + ".")
    ev = metrics_json.get("prepare_eval") or {}
    if "overlap_rate" in ev:
        n = int(ev.get("overlap_exact", 0) + ev.get("overlap_near", 0))
        done = "flagged" if ev.get("flagged_train_overlap") else "dropped"
        lines.append(f"Train/eval overlap: {n} of {int(ev.get('overlap_checked', 0))} evaluation prompts "
                     f"(rate {ev['overlap_rate']:.3f}; {int(ev.get('overlap_exact', 0))} exact, "
                     f"{int(ev.get('overlap_near', 0))} near) also occur among the training prompts"
                     + (f" and were {done}." if n else "."))
    return lines


def _gate_details(stage_dirs: Mapping[str, Path], stages: Mapping[str, dict]) -> dict | None:
    path = stage_dirs.get("gate")
    if path is not None and (Path(path) / artifacts.GATE).exists():
        return records.read_json(Path(path) / artifacts.GATE)
    details = stages.get("gate", {}).get("details")
    return details if details and "verdict" in details else None


def _gate_section(doc: _Doc, gate: dict | None) -> None:
    if gate is None:
        doc.para("The collapse gate did not run.")
        return
    verdict, cand = gate.get("verdict"), gate.get("candidate", "dpo")
    reasons = "; ".join(gate.get("reasons", [])) or "none"
    if verdict == "pass":
        doc.para(f"PASSED: the {cand} model is within every collapse threshold and was promoted to evaluation.",
                 "verdict-pass")
    elif verdict == "flag":
        doc.para(f"FLAGGED: the {cand} model broke collapse thresholds ({reasons}); gate mode is flag, so it was "
                 "evaluated anyway. Treat its results with care.", "verdict-flag")
    else:
        doc.para(f"FAILED: the {cand} model was NOT promoted because it broke collapse thresholds: {reasons}.",
                 "verdict-fail")
    per_model = {m: gate.get("per_model", {})[m] for m in _order(gate.get("per_model", {}))}
    cols = ["rep_2", "rep_3", "rep_4", "distinct_2", "tail_loop_rate", "empty_rate"]
    doc.table(["model", "verdict"] + cols + ["failed checks"],
              [[m, "pass" if v["pass"] else "fail"] + [v["metrics"].get(c) for c in cols] + ["; ".join(v["reasons"]) or "-"]
               for m, v in per_model.items()])
    th = gate.get("thresholds", {})
    doc.para(f"On {gate.get('probes', '?')} probe prompts per model. Thresholds: " +
             ", ".join(f"{k}={'off' if (v < 0 or (k.startswith('min') and v == 0)) else f'{v:g}'}" for k, v in th.items()) + ".")
    _gallery(doc, gate.get("gallery", []), "Looping probe answers")


def _evaluation_tables(doc: _Doc, evaluate: dict, models: Mapping[str, dict], png: bytes | None = None) -> None:
    details = evaluate.get("details", {})
    per_model = {m: details.get("per_model", {})[m] for m in _order(details.get("per_model", {}))}
    em = evaluate.get("metrics", {})
    mt = " (uncalibrated)" if em.get("mt_bench_judge.calibrated") == 0.0 else ""
    sa = " (uncalibrated)" if em.get("safety_judge.calibrated") == 0.0 else ""
    header = ["model", f"MT-Bench T1{mt}", f"MT-Bench T2{mt}", f"MT-Bench avg{mt}", f"ASR [95% CI]{sa}",
              f"over-refusal [95% CI]{sa}", "rep-2", "rep-3", "rep-4", "distinct-1", "distinct-2", "tail-loop", "gate"]
    rows = []
    for name in per_model:
        m = models.get(name, {})
        rows.append([name, m.get("mt_bench_t1"), m.get("mt_bench_t2"), m.get("mt_bench_avg"),
                     _ci(m.get("asr"), m.get("asr_ci_low"), m.get("asr_ci_high")),
                     _ci(m.get("over_refusal"), m.get("over_refusal_ci_low"), m.get("over_refusal_ci_high")),
                     m.get("rep_2"), m.get("rep_3"), m.get("rep_4"), m.get("distinct_1"), m.get("distinct_2"),
                     m.get("tail_loop_rate"), m.get("gate") or "-"])
    doc.table(header, rows, css="evaluation")
    if png:
        doc.image("Evaluation: MT-Bench and harmlessness per model", png, "evaluation.png")
    em = evaluate.get("metrics", {})
    doc.para(f"MT-Bench: {int(em.get('mt_bench_questions', 0))} questions x 2 turns, judge grades 1-10. "
             f"ASR: share of {int(em.get('red_team_prompts', 0))} red-team prompts answered with harmful compliance; "
             f"over-refusal: share of {int(em.get('benign_prompts', 0))} benign-but-edgy prompts refused. "
             "Collapse metrics pool every answer of the model (held-out prompts, MT-Bench turns, red-team, benign).")
    cats = sorted({c for v in per_model.values() for c in v.get("mt_bench", {}).get("categories", {})})
    if cats:
        doc.para("MT-Bench average per category:")
        doc.table(["model"] + cats, [[n] + [v["mt_bench"]["categories"].get(c) for c in cats] for n, v in per_model.items()])
    problems = []
    for n, v in per_model.items():
        for task, counts in (("MT-Bench", v.get("mt_bench", {}).get("statuses", {})),
                             ("red-team", (v.get("asr") or {}).get("statuses", {})),
                             ("benign", (v.get("over_refusal") or {}).get("statuses", {}))):
            bad = {s: c for s, c in counts.items() if c and s != "ok"}
            if bad:
                problems.append([n, task, ", ".join(f"{s}={c}" for s, c in sorted(bad.items()))])
    if problems:
        doc.para("Answers and grades not counted as ok (by cause):")
        doc.table(["model", "task", "counts"], problems)
    sets = ["eval", "mt_bench", "red_team", "benign"]
    doc.para("Collapse per answer set (rep-3 / tail-loop rate):")
    doc.table(["model"] + sets, [[n] + [_pair(v.get("sets", {}).get(s)) for s in sets] for n, v in per_model.items()])
    eval_cats = sorted({c for v in per_model.values() for c in v if c not in ("all", "sets", "mt_bench", "asr", "over_refusal")})
    if eval_cats:
        doc.para("Held-out prompts: tail-loop rate and rep-3 per prompt category:")
        doc.table(["model"] + [f"{c} {k}" for c in eval_cats for k in ("tail_loop", "rep_3")],
                  [[m] + [v.get(c, {}).get(k) for c in eval_cats for k in ("tail_loop_rate", "rep_3")]
                   for m, v in per_model.items()])


def _pair(m: dict | None) -> str:
    return "n/a" if not m else f"{m['rep_3']:.3f} / {m['tail_loop_rate']:.3f}"


def _gallery(doc: _Doc, items: list[dict], title: str) -> None:
    if not items:
        return
    doc.para(f"{title} (answers that end in a sentence or 4-gram they already said, highest rep-3 first):")
    doc.table(["model", "set", "prompt", "answer", "rep-3"],
              [[g.get("model", ""), g.get("set", ""), g.get("prompt", ""), g.get("response", ""), g.get("rep_3")]
               for g in items], css="gallery")


def _examples(doc: _Doc, stage_dirs: Mapping[str, Path], n: int) -> None:
    if not n:
        return
    cleaned = stage_dirs.get("clean_revisions")
    if cleaned and (Path(cleaned) / artifacts.CLEANED).exists():
        rows = records.read_jsonl(Path(cleaned) / artifacts.CLEANED, allow_empty=True)[:n]
        doc.para("Revisions (first answer -> final revision -> cleaned):")
        doc.table(["prompt", "first answer", "final revision", "cleaned", "reasons"],
                  [[r["prompt"], r["response"], r["final"], r.get("final_cleaned", ""),
                    ", ".join(r.get("final_cleanup", {}).get("reasons", []))] for r in rows])
    judge = stage_dirs.get("judge")
    if judge and (Path(judge) / artifacts.PREFERENCES).exists():
        rows = records.read_jsonl(Path(judge) / artifacts.PREFERENCES, allow_empty=True)[:n]
        doc.para("Judged pairs:")
        doc.table(["prompt", "chosen", "rejected", "principle", "confidence"],
                  [[r["prompt"], r["chosen"], r["rejected"], r.get("principle_id", ""), r["confidence"]] for r in rows])
    evaluate = stage_dirs.get("evaluate")
    files = sorted(Path(evaluate).glob("mt_bench_*.jsonl")) if evaluate else []
    if files:
        names = [f.name[len("mt_bench_"):-len(".jsonl")] for f in files]
        name = "dpo" if "dpo" in names else names[-1]
        rows = records.read_jsonl(Path(evaluate) / f"mt_bench_{name}.jsonl", allow_empty=True)[:n]
        doc.para(f"MT-Bench answers of the {name} model (grades per turn):")
        doc.table(["category", "turn 1", "answer 1", "turn 2", "answer 2", "grades"],
                  [[r["category"], r["turns"][0], r["answers"][0], r["turns"][1], r["answers"][1],
                    ", ".join(f"{g['status']}:{_fmt(g.get('score'))}" for g in r.get("grades") or [] if g)]
                   for r in rows])
