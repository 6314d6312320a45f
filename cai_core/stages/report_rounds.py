"""The report's view of the preference rounds (`dpo.iterations`): which rounds ran, how each did, and in words
which round's model was promoted. Pure functions of the steps' `_stage.json` contents and the DPO train logs;
cai_core.stages.report draws them.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from cai_core.runtime.steps import round_name, split_round

#: The DPO model's collapse metrics per round (the gate's probes), and the gate's own name for each.
COLLAPSE_KEYS = ("rep_3", "distinct_2", "tail_loop_rate")


def rounds_run(stages: Mapping[str, dict], rounds: int) -> list[int]:
    """The rounds of this run that reached DPO, in order. Round k counts only when round k-1's gate let it run,
    so a round left in the run root by an earlier run of the same id is not mistaken for this run's."""
    done = []
    for k in range(1, rounds + 1):
        if round_name("dpo", k) not in stages:
            break
        done.append(k)
        if _verdict(stages, k) == "fail":
            break
    return done


def stale_steps(stages: Mapping[str, dict], rounds: int) -> list[str]:
    """The later rounds' steps in `stages` that this run did not reach (a round after a failed gate, or beyond
    `rounds`): an earlier run of the same id left them, so they are not this run's results."""
    done = set(rounds_run(stages, rounds))
    return [name for name in stages if _round_of(name) > 1 and _round_of(name) not in done]


def _round_of(name: str) -> int:
    try:
        return split_round(name)[1]
    except KeyError:
        return 1


def _verdict(stages: Mapping[str, dict], k: int) -> str | None:
    return stages.get(round_name("gate", k), {}).get("details", {}).get("verdict")


def _metric(stages: Mapping[str, dict], step: str, key: str) -> float | None:
    value = stages.get(step, {}).get("metrics", {}).get(key)
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def summary_rows(stages: Mapping[str, dict], done: Sequence[int]) -> list[list[Any]]:
    """One row per round: pairs, judged pairs kept, DPO steps and last reward margin, the gate's verdict and the
    DPO model's collapse metrics on the probes."""
    rows = []
    for k in done:
        gate = round_name("gate", k)
        rows.append([k, _metric(stages, round_name("pairs", k), "rows"), _metric(stages, round_name("judge", k), "train"),
                     _metric(stages, round_name("dpo", k), "steps"),
                     _metric(stages, round_name("dpo", k), "rewards_margins_last"),
                     _verdict(stages, k) or "-"] + [_metric(stages, gate, f"dpo.{key}") for key in COLLAPSE_KEYS])
    return rows


def collapse_series(stages: Mapping[str, dict], done: Sequence[int]) -> dict[str, list[float | None]]:
    """metric -> [the SFT model's value (the start), round 1's DPO model, round 2's, ...], from the gates."""
    series = {}
    for key in COLLAPSE_KEYS:
        values = [_metric(stages, "gate", f"sft.{key}")] + [_metric(stages, round_name("gate", k), f"dpo.{key}")
                                                            for k in done]
        if any(v is not None for v in values):
            series[key] = values
    return series


def margin_series(train_logs: Mapping[int, list[dict]], key: str = "rewards/margins"
                  ) -> dict[str, tuple[list[float], list[float]]]:
    """`round k` -> (steps, reward margins) from each round's DPO train log."""
    out = {}
    for k, rows in sorted(train_logs.items()):
        points = [(r["step"], r[key]) for r in rows
                  if "step" in r and isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        if points:
            out[f"round {k}"] = ([p[0] for p in points], [p[1] for p in points])
    return out


def outcome(stages: Mapping[str, dict], rounds: int) -> str:
    """In words: how many rounds ran and each one's verdict, which one ended the loop and why, and which round's
    model is the candidate (the last round that passed when a later one failed)."""
    done = rounds_run(stages, rounds)
    if not done:
        return f"Preference rounds: {rounds} configured; none reached DPO."
    verdicts = {k: _verdict(stages, k) or "not gated" for k in done}
    text = (f"Preference rounds: {len(done)} of {rounds} ran (" +
            "; ".join(f"round {k}: {v}" for k, v in verdicts.items()) + ").")
    last = done[-1]
    if verdicts[last] == "fail":
        reasons = "; ".join(stages.get(round_name("gate", last), {}).get("details", {}).get("reasons", [])) or "none"
        text += f" Round {last} failed the collapse gate ({reasons}), which ended the loop."
        passed = [k for k in done if verdicts[k] == "pass"]
        text += (f" The model of round {passed[-1]}, the last round that passed, was evaluated and promoted."
                 if passed else " No round passed, so no model was promoted.")
    elif verdicts[last] == "pass":
        text += f" The model of round {last} passed the gate and was evaluated and promoted."
    else:  # gate mode flag: a broken threshold is recorded, the loop goes on, nothing it flags is promoted
        text += (f" The model of round {last} broke collapse thresholds; gate mode is flag, so the loop went on and "
                 "the model was evaluated for the record only, not promoted.")
    return text


__all__ = ["COLLAPSE_KEYS", "collapse_series", "margin_series", "outcome", "rounds_run", "stale_steps",
           "summary_rows"]
