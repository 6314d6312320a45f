"""discover's testing: each principle judged alone on held-out pairs, then filtered, ranked and de-duplicated;
and the final comparison of whole constitutions on the eval split.

A pair is *decided* when both orders agree and the margin clears `min_margin`; coverage =
decided / test pairs, accuracy = decided pairs won by the originally chosen answer / decided.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from cai_core import records
from cai_core.constitution import Constitution
from cai_core.embedding import cosine_matrix
from cai_core.llm.base import ChatModel, batches
from cai_core.progress import Progress
from cai_core.stages import judge as judge_stage
from cai_core.stages.discover.config import DiscoverConfig
from cai_core.tasks import discover as task

DROP_REASONS = ("low_coverage", "too_few_decided", "not_above_chance", "near_duplicate", "over_n")


def judge_pairs(cfg: DiscoverConfig, llm: ChatModel, jobs: list[tuple[str, dict]]) -> list[dict]:
    """Judge (principle text, pair) jobs in both orders with the judge stage's mechanics.

    Returns per job {"status", "p_chosen"}: status is a judge status (ok, undecided,
    order_inconsistent, unparsed, request_failed); p_chosen = P(chosen preferred).
    """
    jcfg = cfg.judge_config()
    out: list[dict] = []
    progress = Progress("discover judge", total=len(jobs), unit="pairs")
    for batch in batches(llm, jobs, cfg.batch_size):
        ab = [task.format_test_input(pair, text, chosen_first=True) for text, pair in batch]
        ba = [task.format_test_input(pair, text, chosen_first=False) for text, pair in batch]
        answers = judge_stage._p_first(jcfg, llm, ab + ba)
        for first, second in zip(answers[:len(ab)], answers[len(ab):]):
            test = task.parse_test_output(first, second)
            if test.status == "request_failed":
                out.append({"status": "request_failed", "reason": test.reason})
            elif test.status == "unparsed":
                out.append({"status": "unparsed"})
            else:
                status, p = judge_stage.decide(jcfg, test.p_chosen_first, test.p_chosen_second)
                out.append({"status": status, "p_chosen": p})
        progress.update(len(ab))
    return out


def wilson_lower(correct: int, n: int, z: float) -> float:
    """Lower end of the Wilson score interval of a proportion (0 when n = 0)."""
    if n == 0:
        return 0.0
    p = correct / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def score_principles(cfg: DiscoverConfig, reps: list[dict], test: list[dict], llm: ChatModel) -> list[dict]:
    """Test every representative on every test pair; add coverage/accuracy/verdicts to each."""
    jobs = [(r["text"], pair) for r in reps for pair in test]
    results = judge_pairs(cfg, llm, jobs)
    n = len(test)
    for i, rep in enumerate(reps):
        verdicts = results[i * n:(i + 1) * n]
        decided = {pair["id"]: v["p_chosen"] > 0.5 for pair, v in zip(test, verdicts) if v["status"] == "ok"}
        correct = sum(decided.values())
        statuses = Counter(v["status"] for v in verdicts)
        failures = Counter(v["reason"].split(":", 1)[0] for v in verdicts if v["status"] == "request_failed")
        rep.update({"failures": dict(failures),
            "decided": len(decided), "correct": correct, "wrong": len(decided) - correct, "test_pairs": n,
            "coverage": len(decided) / n if n else 0.0,
            "accuracy": correct / len(decided) if decided else None,
            "accuracy_lower": wilson_lower(correct, len(decided), cfg.chance_z),
            "score": (2 * correct - len(decided)) / n if n else 0.0,
            "statuses": dict(sorted(statuses.items())), "_decided": decided,
        })
    return reps


def select_principles(cfg: DiscoverConfig, reps: list[dict], embedder: Any) -> list[dict]:
    """Filter, rank and de-duplicate tested principles; sets `status` (kept or a drop reason) on each."""
    for r in reps:
        if r["coverage"] < cfg.min_coverage:
            r["status"] = "low_coverage"
        elif r["decided"] < cfg.min_decided:
            r["status"] = "too_few_decided"
        elif r["accuracy"] < cfg.min_accuracy or r["accuracy_lower"] <= 0.5:
            r["status"] = "not_above_chance"
        else:
            r["status"] = "candidate"
    ranked = sorted((r for r in reps if r["status"] == "candidate"),
                    key=lambda r: (-r["score"], -r["accuracy"], -r["size"], r["text"]))
    threshold = (cfg.duplicate_threshold if cfg.duplicate_threshold is not None
                 else getattr(embedder, "duplicate_threshold", 0.9))
    vectors = embedder.embed([r["text"] for r in ranked]) if ranked else np.zeros((0, 1))
    sims = cosine_matrix(vectors) if ranked else np.zeros((0, 0))
    kept: list[int] = []
    for i, r in enumerate(ranked):
        dup = next((j for j in kept if sims[i, j] >= threshold), None)
        if dup is not None:
            r["status"], r["duplicate_of"], r["duplicate_by"] = "near_duplicate", ranked[dup]["text"], "embedding"
            r["similarity"] = float(sims[i, dup])
            continue
        dup = next((j for j in kept if _behaves_alike(cfg, r, ranked[j])), None)
        if dup is not None:
            r["status"], r["duplicate_of"], r["duplicate_by"] = "near_duplicate", ranked[dup]["text"], "verdicts"
            r["similarity"] = float(sims[i, dup])
            continue
        if len(kept) >= cfg.n:
            r["status"] = "over_n"
            continue
        r["status"] = "kept"
        kept.append(i)
    return [ranked[i] for i in kept]


def _behaves_alike(cfg: DiscoverConfig, a: dict, b: dict) -> bool:
    if cfg.duplicate_overlap <= 0:
        return False
    da, db = a["_decided"], b["_decided"]
    union = set(da) | set(db)
    shared = set(da) & set(db)
    if not union or len(shared) / len(union) < cfg.duplicate_overlap:
        return False
    return sum(da[k] == db[k] for k in shared) >= 0.95 * len(shared)


# ---------------------------------------------------------------- evaluation


def agreement(results: list[dict]) -> dict[str, float]:
    n = len(results)
    decided = [r for r in results if r["status"] == "ok"]
    correct = sum(r["p_chosen"] > 0.5 for r in decided)
    return {"agreement": correct / n if n else 0.0, "coverage": len(decided) / n if n else 0.0,
            "accuracy": correct / len(decided) if decided else 0.0, "pairs": n, "decided": len(decided),
            "correct": correct}


def evaluate_whole(cfg: DiscoverConfig, constitution: Constitution, pairs: list[dict],
                   llm: ChatModel) -> dict[str, float]:
    """Agreement with the original labels when the judge sees all principles in one prompt."""
    text = task.whole_principle(constitution)
    return agreement(judge_pairs(cfg, llm, [(text, p) for p in pairs]))


def evaluate_stage(cfg: DiscoverConfig, constitution_path: str, pairs: list[dict], work: Path,
                   llm: ChatModel) -> dict[str, float]:
    """Agreement with the original labels of `judge.run` itself (one drawn principle per pair)."""
    rows, a_is_chosen = [], {}
    for p in pairs:
        first = int(records.row_id(cfg.seed, p["id"], "discover-order")[:8], 16) % 2 == 0
        a_is_chosen[p["id"]] = first
        a, b = (p["chosen"], p["rejected"]) if first else (p["rejected"], p["chosen"])
        rows.append({"id": p["id"], "prompt": p["prompt"], "response_a": a, "response_b": b})
    records.write_jsonl(work / "pairs.jsonl", rows)
    jcfg = cfg.judge_config().replace(constitution=constitution_path)
    result = judge_stage.run(jcfg, work / "pairs.jsonl", work, llm)
    results = []
    for v in records.read_jsonl(result.outputs["verdicts"]):
        if v["status"] == "ok":
            a_wins = v["p_a"] > 0.5
            results.append({"status": "ok", "p_chosen": 1.0 if a_wins == a_is_chosen[v["id"]] else 0.0})
        else:
            results.append({"status": v["status"]})
    return agreement(results)


def evaluate_constitution(cfg: DiscoverConfig, constitution: Constitution, path: str, pairs: list[dict],
                          work: Path, llm: ChatModel) -> dict[str, dict[str, float]]:
    work.mkdir(parents=True, exist_ok=True)
    return {"stage": evaluate_stage(cfg, path, pairs, work, llm),
            "whole": evaluate_whole(cfg, constitution, pairs, llm)}


__all__ = ["DROP_REASONS", "agreement", "evaluate_constitution", "judge_pairs", "score_principles",
           "select_principles", "wilson_lower"]
