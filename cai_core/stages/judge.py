"""judge (Stage 6): AI feedback on the pairs, position-debiased.

A principle from the constitution's `judge` section is drawn per pair (seeded).
The judge sees a multiple-choice prompt and answers A or B; the question is asked
in both orders. With log-probabilities (`mode: logprobs`) each order gives a
soft P(first option); otherwise (`mode: letter`) the reply's letter is parsed
(the prompt and the verdict of one reply: `cai_core.tasks.judge`).
The soft label is the mean of P(a preferred) over the two orders.

Every pair ends with one status (stable codes):
  ok                 kept as a preference
  undecided          |P(a) - 0.5| < min_margin
  order_inconsistent the two orders preferred different responses
  unparsed           a letter reply named neither A nor B
  identical          both responses are the same text
  empty_response     a response is empty
  request_failed     the model request failed (context too long, no choices, malformed
                     reply, retries exhausted, ...); the verdict's `reason` says which
Kept pairs are split into train/test deterministically by id.

A remote judge (`llm.remote`, e.g. OpenAIChatModel) gets all pairs of the stage, both orders,
in one call, so its client can keep its concurrency (or one Batch API job) full; an
in-process model gets `batch_size` pairs per call.

Calibration: before judging, the judge answers control pairs whose answer is known
(`cai_core.tasks.calibration`: a calm refusal vs. harmful compliance, a concise answer vs.
the same answer with a looping tail, a helpful answer vs. an off-topic one), each under a
principle drawn from the constitution, in both orders. Metrics control_pairs,
control_accuracy (order-averaged) and control_first_slot_rate. Below
`min_control_accuracy`, `calibration: fail` stops the step (its preferences would be
noise); `warn` goes on with `calibrated` = 0, which the report states at the top.

Metrics: flip_rate / position_bias_rate (share of pairs judged in both orders whose winner
changed with the order: the judge followed the slot, not the text), first_slot_rate (share
of single-order verdicts that picked option A; 0.5 = no slot preference), length_bias_rate
(share of kept pairs won by the longer response), and drops by reason (status_*).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cai_core import records
from cai_core.config.base import ConfigBase, require
from cai_core.constitution import load_constitution
from cai_core.errors import StageError
from cai_core.llm.base import ChatModel, Sampling, batches
from cai_core.progress import Progress, log
from cai_core.runtime.artifacts import PREFERENCES
from cai_core.stages.base import StageResult
from cai_core.tasks import calibration
from cai_core.tasks import judge as judge_task
from cai_core.tasks.judge import JudgeVerdict


@dataclass(frozen=True)
class JudgeConfig(ConfigBase):
    #: Constitution: "default" (bundled) or a YAML path; its `judge` section is used.
    constitution: str = "default"
    #: Ask in both orders (A/B and B/A) to cancel position bias.
    both_orders: bool = True
    #: logprobs: soft label from P(A) vs P(B); letter: parse the reply's letter.
    mode: Literal["logprobs", "letter"] = "logprobs"
    #: Pairs with |P(a) - 0.5| below this are dropped as undecided.
    min_margin: float = 0.1
    #: Drop pairs whose two orders prefer different responses.
    drop_inconsistent: bool = True
    #: Share of kept pairs held out as the test split.
    test_fraction: float = 0.1
    #: Seed for drawing principles and the split.
    seed: int = 0
    #: Pairs per model call.
    batch_size: int = 16
    #: Control pairs with known answers before judging: fail stops below min_control_accuracy, warn marks the run,
    #: off skips them.
    calibration: Literal["fail", "warn", "off"] = "fail"
    #: Lowest order-averaged accuracy on the control pairs for the judge's verdicts to count (0.5 is chance).
    min_control_accuracy: float = 0.75

    def validate(self) -> None:
        require(0 <= self.min_margin < 0.5, "min_margin", "must be in [0, 0.5)")
        require(0 <= self.min_control_accuracy <= 1, "min_control_accuracy", "must be in [0, 1]")
        require(0 <= self.test_fraction < 1, "test_fraction", "must be in [0, 1)")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")


def _text(row: dict, field: str) -> str:
    return row.get(f"{field}_cleaned", row[field])


def _p_first(cfg: JudgeConfig, llm: ChatModel, conversations: list[list[dict]]) -> list[JudgeVerdict]:
    """The verdict (P(option A preferred), or why there is none) of each conversation."""
    if cfg.mode == "logprobs":
        return [judge_task.parse_logprobs(lp) for lp in llm.choice_logprobs(conversations, list(judge_task.CHOICES))]
    replies = llm.chat(conversations, [Sampling(temperature=0.0, max_new_tokens=8)] * len(conversations))
    return [judge_task.parse_output(r) for r in replies]


def decide(cfg: JudgeConfig, p_ab: float, p_ba: float | None) -> tuple[str, float]:
    """(status, P(response_a preferred)) from P(A) in order (a, b) and P(A) in order (b, a)."""
    if p_ba is None:
        p = p_ab
    else:
        p = (p_ab + (1.0 - p_ba)) / 2.0
        if cfg.drop_inconsistent and (p_ab - 0.5) * ((1.0 - p_ba) - 0.5) < 0:
            return "order_inconsistent", p
    if abs(p - 0.5) < cfg.min_margin or p == 0.5:
        return "undecided", p
    return "ok", p


def calibrate(cfg: JudgeConfig, llm: ChatModel, constitution) -> dict[str, float]:
    """The judge's scores on the control pairs (good response first, then second), checked against the bar."""
    controls = calibration.control_pairs()
    convs_first, convs_second = [], []
    for pair in controls:
        principle = constitution.draw_principle(pair.id, cfg.seed)
        convs_first.append(judge_task.format_input(pair.prompt, pair.good, pair.bad, principle))
        convs_second.append(judge_task.format_input(pair.prompt, pair.bad, pair.good, principle))
    verdicts = _p_first(cfg, llm, convs_first + convs_second)
    p = [v.p_first for v in verdicts]
    metrics = calibration.score(p[:len(controls)], p[len(controls):])
    metrics["calibrated"] = float(metrics["control_accuracy"] >= cfg.min_control_accuracy)
    if not metrics["calibrated"] and cfg.calibration == "fail":
        raise StageError(
            f"judge: the judge ({llm.name}) picked the known-better response in "
            f"{metrics['control_accuracy']:.0%} of {len(controls)} control pairs asked in both orders (option A in "
            f"{metrics['control_first_slot_rate']:.0%} of its answers); it had to score at least "
            f"{cfg.min_control_accuracy:.0%}, so its preferences would be noise. Use a stronger judge (teacher), or set "
            "judge.calibration: warn to go on anyway")
    if not metrics["calibrated"]:
        log(f"judge: WARNING: the judge scored {metrics['control_accuracy']:.0%} on its control pairs (needs "
            f"{cfg.min_control_accuracy:.0%}); its preferences are close to noise (judge.calibration: warn)")
    return metrics


def run(cfg: JudgeConfig, pairs: Path, out_dir: Path, llm: ChatModel) -> StageResult:
    constitution = load_constitution(cfg.constitution)
    rows = records.read_jsonl(pairs, {"id": str, "prompt": str})
    control = calibrate(cfg, llm, constitution) if cfg.calibration != "off" else {}
    progress = Progress("judge", total=len(rows), unit="pairs")
    verdicts, status_counts = [], Counter()
    for batch in batches(llm, rows, cfg.batch_size):
        todo, conv_ab, conv_ba = [], [], []
        for row in batch:
            a, b = _text(row, "response_a"), _text(row, "response_b")
            principle = constitution.draw_principle(row["id"], cfg.seed)
            verdict = {"id": row["id"], "prompt": row["prompt"], "response_a": a, "response_b": b,
                       "principle_id": principle.id, "principle": principle.principle}
            verdicts.append(verdict)
            if not a.strip() or not b.strip():
                verdict["status"] = "empty_response"
            elif a == b:
                verdict["status"] = "identical"
            else:
                todo.append(verdict)
                conv_ab.append(judge_task.format_input(row["prompt"], a, b, principle))
                conv_ba.append(judge_task.format_input(row["prompt"], b, a, principle))
        if todo:
            # Both orders in one call: order (a, b) for every pair, then order (b, a).
            answers = _p_first(cfg, llm, conv_ab + conv_ba if cfg.both_orders else conv_ab)
            ab = answers[:len(todo)]
            ba = answers[len(todo):] if cfg.both_orders else [JudgeVerdict(None)] * len(todo)
            for verdict, (x, fx), (y, fy) in zip(todo, ab, ba):
                verdict["p_a_first"], verdict["p_a_second"] = x, y
                failure = fx or fy
                if failure:
                    verdict["status"], verdict["reason"] = "request_failed", str(failure)
                    continue
                if x is None or (cfg.both_orders and y is None):
                    verdict["status"] = "unparsed"
                    continue
                verdict["status"], verdict["p_a"] = decide(cfg, x, y)
        progress.update(len(batch))
    train, test = [], []
    for v in verdicts:
        status_counts[v["status"]] += 1
        if v["status"] != "ok":
            continue
        a_wins = v["p_a"] > 0.5
        pref = {"id": v["id"], "prompt": v["prompt"],
                "chosen": v["response_a"] if a_wins else v["response_b"],
                "rejected": v["response_b"] if a_wins else v["response_a"],
                "principle": v["principle"], "principle_id": v["principle_id"],
                "confidence": max(v["p_a"], 1 - v["p_a"])}
        in_test = int(records.row_id(cfg.seed, v["id"], "split")[:8], 16) / 0xFFFFFFFF < cfg.test_fraction
        (test if in_test else train).append(pref)
    out = {"train": out_dir / PREFERENCES, "test": out_dir / "test.jsonl", "verdicts": out_dir / "verdicts.jsonl"}
    records.write_jsonl(out["train"], train)
    records.write_jsonl(out["test"], test)
    records.write_jsonl(out["verdicts"], verdicts)
    metrics = judge_metrics(verdicts, status_counts, len(train), len(test))
    metrics.update(control)
    return StageResult(outputs=out, metrics=metrics, details={"calibration": {**control, "mode": cfg.calibration,
                                                                            "min_accuracy": cfg.min_control_accuracy}})


def judge_metrics(verdicts: list[dict], status_counts: Counter, n_train: int, n_test: int) -> dict[str, float]:
    judged = [v for v in verdicts if v.get("p_a_second") is not None and v.get("p_a_first") is not None]
    # A flip: the winner changed with the order, i.e. both orders picked the same slot (A both times or B both times).
    flips = sum((v["p_a_first"] > 0.5) == (v["p_a_second"] > 0.5) for v in judged)
    single = [p for v in verdicts for p in (v.get("p_a_first"), v.get("p_a_second")) if p is not None]
    kept = [v for v in verdicts if v["status"] == "ok"]
    longer_wins = sum((len(v["response_a"]) > len(v["response_b"])) == (v["p_a"] > 0.5)
                      for v in kept if len(v["response_a"]) != len(v["response_b"]))
    flip_rate = flips / len(judged) if judged else 0.0
    metrics = {"pairs": len(verdicts), "kept": len(kept), "train": n_train, "test": n_test,
               "flip_rate": flip_rate, "position_bias_rate": flip_rate,
               "first_slot_rate": sum(p > 0.5 for p in single) / len(single) if single else 0.0,
               "length_bias_rate": longer_wins / len(kept) if kept else 0.0,
               "mean_confidence": sum(max(v["p_a"], 1 - v["p_a"]) for v in kept) / len(kept) if kept else 0.0}
    for status in ("ok", "undecided", "order_inconsistent", "unparsed", "identical", "empty_response", "request_failed"):
        metrics[f"status_{status}"] = status_counts.get(status, 0)
    return metrics
