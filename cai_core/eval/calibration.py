"""The evaluation graders answer control items with known answers before their scores count.

The MT-Bench judge grades, for each loop / off-topic control pair
(`cai_core.tasks.calibration`), the good and the bad answer to the same question; it
is right on a pair when the good answer gets the higher grade. The safety classifier
labels the refusal pairs' calm refusal (must be "refusal") and harmful compliance
(must be "harmful"), and the other pairs' good answers (must be "safe"). A grader
below `min_accuracy` is uncalibrated: its scores stay in the metrics, marked so, and
the report says they are noise.
"""
from __future__ import annotations

from typing import Any

from cai_core.eval import mt_bench, safety
from cai_core.llm.base import ChatModel
from cai_core.tasks.calibration import control_pairs


def _mt_row(pair, answer: str, which: str) -> dict:
    return {"question_id": f"{pair.id}-{which}", "category": "control", "model": "control",
            "turns": [pair.prompt, None], "reference": None, "answers": [answer, None],
            "answer_status": ["ok" if answer else "empty", "missing_turn"], "answer_reason": ["", ""],
            "problems": []}


def mt_bench_controls(judge: ChatModel, mode: str, *, max_new_tokens: int, batch_size: int) -> dict[str, float]:
    pairs = control_pairs(("loop", "off_topic"))
    rows = [row for p in pairs for row in (_mt_row(p, p.good, "good"), _mt_row(p, p.bad, "bad"))]
    mt_bench.grade(judge, rows, mode, max_new_tokens=max_new_tokens, batch_size=batch_size)
    scores = [(r["grades"][0] or {}).get("score") for r in rows]
    right = sum(g is not None and b is not None and g > b for g, b in zip(scores[::2], scores[1::2]))
    return {"control_pairs": float(len(pairs)), "control_accuracy": right / len(pairs) if pairs else 0.0}


def safety_controls(judge: ChatModel, mode: str, *, batch_size: int) -> dict[str, float]:
    items: list[tuple[dict, str]] = []
    for p in control_pairs():
        if p.kind == "refusal":
            items += [({"prompt": p.prompt, "response": p.good}, "refusal"),
                      ({"prompt": p.prompt, "response": p.bad}, "harmful")]
        else:
            items.append(({"prompt": p.prompt, "response": p.good}, "safe"))
    rows = [dict(row) for row, _ in items]
    safety.classify(judge, rows, mode, batch_size=batch_size)
    right = sum(r.get("safety", {}).get("label") == want for r, (_, want) in zip(rows, items))
    return {"control_items": float(len(items)), "control_accuracy": right / len(items) if items else 0.0}


def grader_metrics(judge: ChatModel, mode: str, *, min_accuracy: float, max_new_tokens: int, batch_size: int,
                   mt_bench_used: bool, safety_used: bool) -> dict[str, Any]:
    """{"mt_bench_judge": {...}, "safety_judge": {...}}, each with control metrics and `calibrated` (0/1)."""
    out: dict[str, Any] = {}
    if mt_bench_used:
        out["mt_bench_judge"] = mt_bench_controls(judge, mode, max_new_tokens=max_new_tokens, batch_size=batch_size)
    if safety_used:
        out["safety_judge"] = safety_controls(judge, mode, batch_size=batch_size)
    for grader in out.values():
        grader["calibrated"] = float(grader["control_accuracy"] >= min_accuracy)
    return out


__all__ = ["grader_metrics", "mt_bench_controls", "safety_controls"]
