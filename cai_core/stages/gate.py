"""gate (Stage 8): the collapse gate between DPO and evaluation.

The models named in `models` (by default base, SFT and DPO) answer a fixed probe set
(the first `probes` held-out evaluation prompts, greedy, `max_new_tokens` long enough for
a loop to show). Each model's answers are measured with the collapse metrics of
`cai_core.metrics.repetition` and checked against the thresholds:

    rep-2 / rep-3 / rep-4 <= max_rep_n, tail-loop rate <= max_tail_loop_rate,
    distinct-2 >= min_distinct_2, share of empty answers <= max_empty_rate

and, against the base model's probe answers (when base is probed),

    distinct-2 >= min_distinct_2_vs_base x the base model's distinct-2

A threshold set to a negative number (a max) or 0 (a min) is off. Every model gets a verdict
(pass / fail) with one reason per failed check; the run's verdict is the `candidate`'s
(the DPO model): ``pass``, else ``fail`` (mode fail: the pipeline does not evaluate it, and
the report says why) or ``flag`` (mode flag: evaluated for the record, marked in the report).
Only ``pass`` promotes: a model that broke a threshold is never promoted, whatever the mode.

Outputs: `gate.json` (verdict, reasons, per-model metrics and checks, thresholds,
the worst looping answers), `probes_<model>.jsonl`. Metrics: `pass`, `promoted`,
`<model>.pass`, `<model>.<metric>`, `failed_checks`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Mapping

from cai_core import records
from cai_core.config.base import ConfigBase, require
from cai_core.errors import StageError
from cai_core.eval.answers import answer_all, worst_loops
from cai_core.llm.base import ChatModel, opened
from cai_core.metrics.repetition import collapse_metrics
from cai_core.runtime.artifacts import GATE
from cai_core.stages.base import StageResult

VERDICTS = ("pass", "fail", "flag")
#: (metric, config field, kind): a "max" check fails above the threshold, a "min" check below it.
CHECKS = (("rep_2", "max_rep_2", "max"), ("rep_3", "max_rep_3", "max"), ("rep_4", "max_rep_4", "max"),
          ("tail_loop_rate", "max_tail_loop_rate", "max"), ("distinct_2", "min_distinct_2", "min"),
          ("empty_rate", "max_empty_rate", "max"))


@dataclass(frozen=True)
class GateConfig(ConfigBase):
    #: fail: a candidate over a threshold is not evaluated; flag: it is evaluated, marked in the report. Neither
    #: is promoted: only a candidate that passes every check is.
    mode: Literal["fail", "flag"] = "fail"
    #: Models that answer the probes (each gets a verdict): any of base, sft, dpo.
    models: tuple[str, ...] = ("base", "sft", "dpo")
    #: The model whose verdict decides the run (the one to promote).
    candidate: str = "dpo"
    #: Probe prompts: the first this many held-out evaluation prompts.
    probes: int = 16
    #: Token limit of each probe answer (long enough for a loop to show).
    max_new_tokens: int = 128
    #: Prompts per model call (in-process models).
    batch_size: int = 16
    #: Highest rep-2 (1 - unique/total bigrams per answer, averaged) a model may show; negative = off.
    max_rep_2: float = 0.5
    #: Highest rep-3 a model may show; negative = off.
    max_rep_3: float = 0.4
    #: Highest rep-4 a model may show; negative = off.
    max_rep_4: float = 0.35
    #: Highest share of answers ending in a sentence or 4-gram they already said; negative = off.
    max_tail_loop_rate: float = 0.5
    #: Lowest distinct-2 (unique/total bigrams pooled over the probe answers); 0 = off.
    min_distinct_2: float = 0.1
    #: Highest share of empty answers; negative = off.
    max_empty_rate: float = 0.25
    #: Lowest distinct-2 as a share of the base model's (a collapse of variety that training caused); 0 = off.
    min_distinct_2_vs_base: float = 0.5
    #: Looping answers kept in gate.json and shown in the report.
    gallery: int = 4

    def validate(self) -> None:
        require(bool(self.models), "models", "name at least one model")
        unknown = [m for m in self.models if m not in ("base", "sft", "dpo")]
        require(not unknown, "models", f"unknown model(s) {unknown}; use base, sft, dpo")
        require(len(set(self.models)) == len(self.models), "models", "each model at most once")
        require(self.candidate in self.models, "candidate", f"must be one of models {list(self.models)}")
        require(self.probes >= 1, "probes", "must be >= 1")
        require(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        for _, name, kind in CHECKS:
            value = getattr(self, name)
            if kind == "min":
                require(0 <= value <= 1, name, "must be in [0, 1] (0 = off)")
            else:
                require(value <= 1, name, "must be <= 1 (negative = off)")
        require(0 <= self.min_distinct_2_vs_base <= 1, "min_distinct_2_vs_base", "must be in [0, 1] (0 = off)")
        require(self.gallery >= 0, "gallery", "must be >= 0")


@dataclass(frozen=True)
class _Probing:
    """How the models answer the probes (`answer_all`'s settings): greedy, one fixed seed."""

    max_new_tokens: int
    batch_size: int
    temperature: float = 0.0
    seed: int = 0


def probe_metrics(texts: list[str]) -> dict[str, float]:
    m = {k: float(v) for k, v in collapse_metrics(texts).items()}
    m["empty_rate"] = sum(not t.strip() for t in texts) / len(texts) if texts else 0.0
    return m


def check(cfg: GateConfig, metrics: Mapping[str, float], base: Mapping[str, float] | None = None) -> list[str]:
    """One reason per failed check, e.g. 'rep_3 0.62 > max_rep_3 0.4'; `base`: the base model's probe metrics."""
    reasons = []
    for metric, name, kind in CHECKS:
        limit, value = getattr(cfg, name), metrics.get(metric)
        if value is None:
            continue
        if kind == "max" and limit >= 0 and value > limit:
            reasons.append(f"{metric} {value:.3g} > {name} {limit:g}")
        elif kind == "min" and limit > 0 and value < limit:
            reasons.append(f"{metric} {value:.3g} < {name} {limit:g}")
    ratio, base_d2, d2 = cfg.min_distinct_2_vs_base, (base or {}).get("distinct_2"), metrics.get("distinct_2")
    if ratio > 0 and base_d2 and d2 is not None and d2 < ratio * base_d2:
        reasons.append(f"distinct_2 {d2:.3g} < min_distinct_2_vs_base {ratio:g} x base {base_d2:.3g}")
    return reasons


def run(cfg: GateConfig, prompts: Path, models: Mapping[str, str], out_dir: Path,
        load_model: Callable[[str], ChatModel]) -> StageResult:
    """Probe each model of `cfg.models` found in `models` (name -> path); the verdict is the candidate's."""
    if cfg.candidate not in models:
        raise StageError(f"gate: the candidate model '{cfg.candidate}' was not given (got {', '.join(models)})")
    rows = records.read_jsonl(prompts, records.PROMPT)[:cfg.probes]
    answer_cfg = _Probing(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    per_model: dict[str, dict] = {}
    outputs: dict[str, Path] = {}
    every: list[dict] = []
    for name in cfg.models:
        if name not in models:
            continue
        with opened(load_model(models[name])) as llm:
            answers = answer_all(answer_cfg, llm, rows, name, desc="gate")
        for a in answers:
            a["set"] = "gate"
        every += answers
        outputs[f"probes_{name}"] = out_dir / f"probes_{name}.jsonl"
        records.write_jsonl(outputs[f"probes_{name}"], answers)
        metrics = probe_metrics([a["response"] for a in answers])
        base = per_model["base"]["metrics"] if name != "base" and "base" in per_model else None
        reasons = check(cfg, metrics, base)
        per_model[name] = {"metrics": metrics, "pass": not reasons, "reasons": reasons}
    cand = per_model[cfg.candidate]
    verdict = "pass" if cand["pass"] else cfg.mode
    promoted = verdict == "pass"
    reasons = [f"{cfg.candidate}: {r}" for r in cand["reasons"]]
    summary = {"verdict": verdict, "promoted": promoted, "candidate": cfg.candidate, "mode": cfg.mode,
               "reasons": reasons, "probes": len(rows), "per_model": per_model,
               "thresholds": {name: getattr(cfg, name) for _, name, _ in CHECKS},
               "gallery": worst_loops(every, cfg.gallery)}
    outputs["gate"] = out_dir / GATE
    records.write_json(outputs["gate"], summary)
    metrics_out: dict[str, float] = {"pass": float(cand["pass"]), "promoted": float(promoted),
                                     "failed_checks": float(len(cand["reasons"])), "probes": float(len(rows))}
    for name, info in per_model.items():
        metrics_out[f"{name}.pass"] = float(info["pass"])
        for key in ("rep_2", "rep_3", "rep_4", "distinct_2", "tail_loop_rate", "empty_rate"):
            metrics_out[f"{name}.{key}"] = info["metrics"][key]
    return StageResult(outputs=outputs, metrics=metrics_out, details=summary)


def verdict_of(stage: Mapping) -> str:
    """The verdict recorded in a gate step's `_stage.json` content (details.verdict)."""
    verdict = stage.get("details", {}).get("verdict")
    if verdict not in VERDICTS:
        raise StageError(f"gate: no verdict in the step's record (got {verdict!r})")
    return verdict


__all__ = ["CHECKS", "GateConfig", "VERDICTS", "check", "probe_metrics", "run", "verdict_of"]
