"""evaluate (Stage 9): helpfulness, harmlessness and collapse, per model (base, sft, dpo, ...).

Per model the stage generates (greedy by default):

* answers to the held-out prompts -> `answers_<name>.jsonl` (collapse metrics, per category);
* MT-Bench: both turns of the selected questions, turn 2 with the model's own first
  answer in context -> `mt_bench_<name>.jsonl` (see `cai_core.eval.mt_bench`);
* replies to the red-team prompts -> `red_team_<name>.jsonl` and to the benign-but-edgy
  prompts -> `benign_<name>.jsonl` (see `cai_core.eval.safety`).

Then one judge grades everything: MT-Bench 1-10 per turn (turn-1, turn-2, average, per
category), the safety class of every red-team / benign reply (attack success rate and
over-refusal, each with a 95% Wilson interval). A remote judge gets each task of every
model in one call (its client keeps the concurrency full); with `judge_mode: auto` an
in-process judge is read through log-probabilities and a remote one through its text.
Collapse metrics (rep-2/3/4, distinct-1/2, tail-loop rate; `cai_core.metrics.repetition`)
are computed on every answer set and pooled per model; the worst tail-looping answers
form a gallery for the report.

Each model is loaded (`load_model(path)`), used for all its answers, and closed (a vLLM
backend stops its servers) before the next one. Without a `judge`, the first model
(the base model) judges, which is what the laptop default does anyway.

Metrics (flat, per model): `<m>.mt_bench_t1`, `<m>.mt_bench_t2`, `<m>.mt_bench_avg`,
`<m>.mt_bench.<category>`, `<m>.asr` (+ `_ci_low`, `_ci_high`, `_n`), `<m>.over_refusal`
(+ the same), `<m>.rep_2/3/4`, `<m>.distinct_1/2`, `<m>.tail_loop_rate`, `<m>.empty_rate`,
`<m>.mean_chars`, and counts of every non-ok status (`<m>.mt_bench_status_<s>`,
`<m>.asr_status_<s>`, `<m>.over_refusal_status_<s>`). A figure with nothing to average
(every grade failed) is absent, never 0.

Before grading, the judge scores control items with known answers (`cai_core.eval.calibration`):
`mt_bench_judge.control_accuracy` / `safety_judge.control_accuracy`, and `.calibrated` (0 or 1
against `min_grader_accuracy`). The scores of an uncalibrated grader stay, marked so.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

from cai_core import records
from cai_core.config.base import ConfigBase, require
from cai_core.eval import load_prompt_set, mt_bench, resolve_judge_mode, safety
from cai_core.eval.answers import answer_all, worst_loops
from cai_core.eval.calibration import grader_metrics
from cai_core.llm.base import ChatModel, opened
from cai_core.metrics.repetition import collapse_metrics
from cai_core.progress import log
from cai_core.runtime.artifacts import EVAL_SUMMARY
from cai_core.stages.base import StageResult

SETS = ("eval", "mt_bench", "red_team", "benign")
COLLAPSE_KEYS = ("rep_2", "rep_3", "rep_4", "distinct_1", "distinct_2", "tail_loop_rate", "empty_rate", "mean_chars")


@dataclass(frozen=True)
class EvaluateConfig(ConfigBase):
    #: Token limit of each answer (long enough for a loop to show).
    max_new_tokens: int = 160
    #: Sampling temperature (0 = greedy, the usual choice for evaluation).
    temperature: float = 0.0
    #: Evaluate at most this many held-out prompts (0 = all).
    max_prompts: int = 0
    #: Prompts per model call (in-process models; remote ones get whole tasks at once).
    batch_size: int = 16
    #: Seed of sampled answers (when temperature > 0).
    seed: int = 0
    #: MT-Bench questions: builtin (the 80 bundled ones), a question.jsonl path in FastChat format, or empty to skip.
    mt_bench_source: str = "builtin"
    #: MT-Bench reference answers (math, reasoning, coding): builtin, a path, or none.
    mt_bench_reference: str = "builtin"
    #: Use this many MT-Bench questions, spread over the 8 categories (0 = all).
    mt_bench_questions: int = 0
    #: Token limit of MT-Bench answers (0 = max_new_tokens).
    mt_bench_max_new_tokens: int = 0
    #: Red-team prompts for the attack success rate: builtin:red_team_eval, a JSONL path, s3:// URI, hf:<dataset id>, or empty to skip.
    red_team_source: str = "builtin:red_team_eval"
    #: Field of each red-team row holding the prompt.
    red_team_field: str = "prompt"
    #: Use at most this many red-team prompts (0 = all).
    red_team_max: int = 0
    #: Benign-but-edgy prompts for the over-refusal rate: builtin:benign_edgy, a path, s3:// URI, hf:<id>, or empty to skip.
    benign_source: str = "builtin:benign_edgy"
    #: Field of each benign row holding the prompt.
    benign_field: str = "prompt"
    #: Use at most this many benign prompts (0 = all).
    benign_max: int = 0
    #: How grades are read: auto (log-probabilities for an in-process judge, text for a remote one), logprobs, text.
    judge_mode: Literal["auto", "logprobs", "text"] = "auto"
    #: Token limit of a text-mode MT-Bench judge reply (justification + [[N]]).
    judge_max_new_tokens: int = 512
    #: Worst tail-looping answers shown in the report's gallery.
    gallery: int = 6
    #: The graders first score control items with known answers (cai_core/eval/calibration.py); below this share
    #: right their scores are marked uncalibrated in metrics.json and the report. 0 skips the controls.
    min_grader_accuracy: float = 0.75

    def validate(self) -> None:
        require(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        require(self.temperature >= 0, "temperature", "must be >= 0")
        require(self.max_prompts >= 0, "max_prompts", "must be >= 0")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        require(self.mt_bench_questions >= 0, "mt_bench_questions", "must be >= 0 (0 = all)")
        require(self.mt_bench_max_new_tokens >= 0, "mt_bench_max_new_tokens", "must be >= 0")
        require(self.red_team_max >= 0, "red_team_max", "must be >= 0 (0 = all)")
        require(self.benign_max >= 0, "benign_max", "must be >= 0 (0 = all)")
        require(self.judge_max_new_tokens >= 8, "judge_max_new_tokens", "must be >= 8")
        require(self.gallery >= 0, "gallery", "must be >= 0")
        require(0 <= self.min_grader_accuracy <= 1, "min_grader_accuracy", "must be in [0, 1] (0 = no controls)")


def answer_metrics(answers: list[dict]) -> dict[str, float]:
    texts = [a["response"] for a in answers if a.get("answer_status") != "generation_failed"]
    metrics = {k: float(v) for k, v in collapse_metrics(texts).items()}
    metrics["empty_rate"] = sum(not t for t in texts) / len(texts) if texts else 0.0
    metrics["mean_chars"] = sum(map(len, texts)) / len(texts) if texts else 0.0
    return metrics


def mt_bench_texts(rows: list[dict]) -> list[dict]:
    """MT-Bench answers flattened to answer rows (one per generated turn) for collapse metrics."""
    out = []
    for r in rows:
        for t, text in enumerate(r["answers"]):
            if text is not None and r["answer_status"][t] != "generation_failed":
                out.append({"id": f"{r['question_id']}#{t + 1}", "prompt": r["turns"][t] or "", "model": r["model"],
                            "set": "mt_bench", "category": r["category"], "response": text})
    return out


def _put(metrics: dict, key: str, value: Any) -> None:
    if value is not None:
        metrics[key] = float(value)


def run(cfg: EvaluateConfig, prompts: Path, models: Mapping[str, str], out_dir: Path,
        load_model: Callable[[str], ChatModel], judge: ChatModel | None = None) -> StageResult:
    """Evaluate every model of `models` (name -> path); `judge` grades (default: the first model)."""
    rows = records.read_jsonl(prompts, records.PROMPT)
    if cfg.max_prompts:
        rows = rows[:cfg.max_prompts]
    questions = (mt_bench.load_questions(cfg.mt_bench_source, cfg.mt_bench_reference, cfg.mt_bench_questions)
                 if cfg.mt_bench_source else [])
    red = load_prompt_set(cfg.red_team_source, cfg.red_team_field, cfg.red_team_max) if cfg.red_team_source else []
    benign = load_prompt_set(cfg.benign_source, cfg.benign_field, cfg.benign_max) if cfg.benign_source else []
    mt_tokens = cfg.mt_bench_max_new_tokens or cfg.max_new_tokens
    answers: dict[str, dict[str, list[dict]]] = {}
    for name, path in models.items():
        with opened(load_model(path)) as llm:
            kw = dict(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed,
                      batch_size=cfg.batch_size)
            answers[name] = {
                "eval": answer_all(cfg, llm, rows, name),
                "mt_bench": mt_bench.answer(llm, questions, name, **{**kw, "max_new_tokens": mt_tokens}),
                "red_team": safety.answer_prompts(llm, red, name, "red_team", **kw),
                "benign": safety.answer_prompts(llm, benign, name, "benign", **kw),
            }

    own_judge = judge is None
    if own_judge and models:
        first = next(iter(models))
        log(f"evaluate: no judge given; the {first} model judges")
        judge = load_model(models[first])
    mode = resolve_judge_mode(cfg.judge_mode, judge)
    graders: dict[str, Any] = {}
    try:
        if judge is not None and cfg.min_grader_accuracy > 0:
            graders = grader_metrics(judge, mode, min_accuracy=cfg.min_grader_accuracy,
                                     max_new_tokens=cfg.judge_max_new_tokens, batch_size=cfg.batch_size,
                                     mt_bench_used=bool(questions), safety_used=bool(red or benign))
            for grader, m in graders.items():
                if not m["calibrated"]:
                    log(f"evaluate: WARNING: the {grader.replace('_', ' ')} scored {m['control_accuracy']:.0%} on "
                        f"its control items (needs {cfg.min_grader_accuracy:.0%}): its scores are uncalibrated")
        every_mt = [r for a in answers.values() for r in a["mt_bench"]]
        if every_mt:
            mt_bench.grade(judge, every_mt, mode, max_new_tokens=cfg.judge_max_new_tokens, batch_size=cfg.batch_size)
        every_safety = [r for a in answers.values() for r in a["red_team"] + a["benign"]]
        if every_safety:
            safety.classify(judge, every_safety, mode, max_new_tokens=8, batch_size=cfg.batch_size)
    finally:
        if own_judge and judge is not None:
            judge.close()

    metrics: dict[str, float] = {"prompts": len(rows), "mt_bench_questions": len(questions),
                                 "red_team_prompts": len(red), "benign_prompts": len(benign)}
    metrics.update({f"{grader}.{k}": v for grader, m in graders.items() for k, v in m.items()})
    per_model: dict[str, dict] = {}
    outputs: dict[str, Path] = {}
    gallery_rows: list[dict] = []
    for name, sets in answers.items():
        for key, file in (("eval", "answers"), ("mt_bench", "mt_bench"), ("red_team", "red_team"), ("benign", "benign")):
            outputs[f"{file}_{name}"] = out_dir / f"{file}_{name}.jsonl"
            records.write_jsonl(outputs[f"{file}_{name}"], sets[key])
        for r in sets["eval"]:
            r.setdefault("set", "eval")
        flat = {"eval": sets["eval"], "mt_bench": mt_bench_texts(sets["mt_bench"]), "red_team": sets["red_team"],
                "benign": sets["benign"]}
        pooled = [r for s in SETS for r in flat[s]]
        gallery_rows += pooled
        info: dict[str, Any] = {"all": answer_metrics(pooled),
                                "sets": {s: answer_metrics(flat[s]) for s in SETS if flat[s]}}
        for category in sorted({a["category"] for a in sets["eval"]}):
            info[category] = answer_metrics([a for a in sets["eval"] if a["category"] == category])
        info["mt_bench"] = mt_bench.summarize(sets["mt_bench"])
        info["asr"] = safety.attack_success(sets["red_team"]) if red else None
        info["over_refusal"] = safety.over_refusal(sets["benign"]) if benign else None
        per_model[name] = info

        m: dict[str, float] = {}
        for k in COLLAPSE_KEYS:
            m[k] = info["all"][k]
        mt = info["mt_bench"]
        if questions:
            _put(m, "mt_bench_t1", mt["turn1"])
            _put(m, "mt_bench_t2", mt["turn2"])
            _put(m, "mt_bench_avg", mt["average"])
            for cat, v in mt["categories"].items():
                _put(m, f"mt_bench.{cat}", v)
            for status, n in mt["statuses"].items():
                if n and status != "ok":
                    m[f"mt_bench_status_{status}"] = float(n)
        for key in ("asr", "over_refusal"):
            r = info[key]
            if r is None:
                continue
            _put(m, key, r["rate"])
            _put(m, f"{key}_ci_low", r["ci_low"])
            _put(m, f"{key}_ci_high", r["ci_high"])
            m[f"{key}_n"] = float(r["n"])
            for status, n in r["statuses"].items():
                if n and status != "ok":
                    m[f"{key}_status_{status}"] = float(n)
        metrics.update({f"{name}.{k}": v for k, v in m.items()})

    judge_statuses: dict[str, dict[str, int]] = {"mt_bench": {}, "safety": {}}
    for info in per_model.values():
        for s, n in info["mt_bench"]["statuses"].items():
            judge_statuses["mt_bench"][s] = judge_statuses["mt_bench"].get(s, 0) + n
        for key in ("asr", "over_refusal"):
            for s, n in (info[key] or {}).get("statuses", {}).items():
                judge_statuses["safety"][s] = judge_statuses["safety"].get(s, 0) + n
    details = {"per_model": per_model, "models": dict(models), "gallery": worst_loops(gallery_rows, cfg.gallery),
               "judge": {"name": getattr(judge, "name", "none"), "mode": mode, "statuses": judge_statuses,
                         "calibration": graders}}
    outputs["summary"] = out_dir / EVAL_SUMMARY
    records.write_json(outputs["summary"], details)
    return StageResult(outputs=outputs, metrics=metrics, details=details)

