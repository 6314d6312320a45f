"""discover's outputs: the discovered constitution (principles with accuracy and support) and the report.

The schema requires critique/revision pairs: with `critique_revision: derived` one pair is
derived from each principle; with `copy` they are copied from `base`. `few_shot` is copied
from `base` in both cases.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cai_core.constitution import Constitution, CritiquePair, JudgePrinciple
from cai_core.stages.discover.config import DiscoverConfig
from cai_core.stages.discover.inputs import SKIP_REASONS
from cai_core.tasks.discover import PROPOSE_STATUSES, REJECT_REASONS


def principle_id(text: str, taken: set[str]) -> str:
    """A kebab-case id from the principle's words ("Prefer the response that avoids emoji." -> avoids-emoji)."""
    filler = {"prefer", "the", "a", "an", "response", "answer", "reply", "that", "which", "is", "are", "with",
              "its", "it", "as", "to", "and", "of", "in", "for", "more", "one", "than", "other"}
    words = [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in filler]
    base = "-".join(words[:4]) or "principle"
    pid, i = base, 2
    while pid in taken:
        pid, i = f"{base}-{i}", i + 1
    taken.add(pid)
    return pid


def derived_pair(p: JudgePrinciple) -> CritiquePair:
    return CritiquePair(
        id=p.id,
        critique=(f"Hold the assistant's last reply against this principle: \"{p.principle}\" "
                  "Point out each place where the reply falls short of it, or say that it already follows it."),
        revision=(f"Rewrite the reply so that it follows the principle \"{p.principle}\", changing only what "
                  "the critique pointed out and keeping everything the reply already did well."),
    )


def build_constitution(cfg: DiscoverConfig, kept: list[dict], base: Constitution, source: str) -> Constitution:
    taken: set[str] = set()
    principles = tuple(JudgePrinciple(id=principle_id(r["text"], taken), principle=r["text"],
                                      accuracy=round(float(r["accuracy"]), 4), support=round(float(r["coverage"]), 4))
                       for r in kept)
    for r, p in zip(kept, principles):
        r["id"] = p.id
    pairs = tuple(derived_pair(p) for p in principles) if cfg.critique_revision == "derived" else base.critique_revision
    critiques = "derived from the principles" if cfg.critique_revision == "derived" else "copied from " + cfg.base
    description = (f"Discovered by `cai discover` from {len(kept)} principle(s) that reproduce the preferences in "
                   f"{Path(source).name}: proposed by a teacher model per pair, clustered, and each tested alone "
                   "on held-out pairs. accuracy: share of the decided held-out pairs where the principle picked "
                   "the originally chosen answer; support: share of held-out pairs it decided. "
                   f"critique_revision: {critiques}; "
                   f"few_shot: copied from {cfg.base}.")
    return Constitution(name=cfg.name, version=1, description=description, critique_revision=pairs,
                        judge=principles, few_shot=base.few_shot)


# ---------------------------------------------------------------- report


def _fmt(x: Any) -> str:
    if x is None:
        return "n/a"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def render_report(cfg: DiscoverConfig, source: str, metrics: dict, details: dict, reps: list[dict],
                  kept: list[dict], facts: dict) -> str:
    m = metrics
    lines = [
        "# Constitution discovery", "",
        f"Source: `{source}`, {int(m['pairs_in'])} rows, {int(m['pairs_usable'])} usable "
        f"(propose {int(m['propose_pairs'])}, test {int(m['test_pairs'])}, eval {int(m['eval_pairs'])}).",
        "Skipped: " + (", ".join(f"{r} {int(m[f'skipped_{r}'])}" for r in SKIP_REASONS if m[f'skipped_{r}'])
                        or "none") + ".",
        "Proposals: " + ", ".join(f"{s} {int(m[f'proposals_{s}'])}" for s in PROPOSE_STATUSES)
        + f"; {int(m['candidates'])} candidate principles ({int(m.get('candidates_distinct', 0))} distinct); "
        + "rejected lines: " + (", ".join(f"{r} {int(m[f'lines_rejected_{r}'])}" for r in REJECT_REASONS
                                          if m[f'lines_rejected_{r}']) or "none") + ".",
    ]
    if "clusters" in m:
        lines.append(f"Clusters: {int(m['clusters'])} (asked for {cfg.clusters}; embedder {facts.get('embedder')}; "
                     f"representative: {cfg.representative})"
                     + "".join(f"; k lowered from {r['from']} to {r['to']}: {r['reason']}"
                               for r in facts.get("reduced", []))
                     + ".")
    lines += ["", f"## Principles kept ({len(kept)} of {len(reps)} tested, top n = {cfg.n})", "",
              "| id | principle | accuracy | coverage (support) | decided | cluster size |",
              "|---|---|---|---|---|---|"]
    for r in kept:
        lines.append(f"| {r.get('id', '')} | {r['text']} | {_fmt(r['accuracy'])} | {_fmt(r['coverage'])} | "
                     f"{r['decided']}/{r['test_pairs']} | {r['size']} |")
    dropped = [r for r in reps if r.get("status") != "kept"]
    if dropped:
        lines += ["", "## Principles dropped", "", "| principle | reason | accuracy | coverage | note |",
                  "|---|---|---|---|---|"]
        for r in sorted(dropped, key=lambda r: (r["status"], -r["score"], r["text"])):
            note = f"duplicate of \"{r['duplicate_of']}\" ({r['duplicate_by']})" if r.get("duplicate_of") else ""
            lines.append(f"| {r['text']} | {r['status']} | {_fmt(r['accuracy'])} | {_fmt(r['coverage'])} | {note} |")
    lines += ["", "Kept when coverage >= {:.2f}, decided >= {}, accuracy >= {:.2f} and its Wilson lower bound "
              "(z = {}) > 0.5; ranked by (correct - wrong) / test pairs.".format(
                  cfg.min_coverage, cfg.min_decided, cfg.min_accuracy, cfg.chance_z)]
    evaluation = details.get("evaluation") or {}
    if evaluation:
        lines += ["", f"## Agreement with the original labels on the eval split ({int(m['eval_pairs'])} pairs)", "",
                  "| constitution | judged | agreement | coverage | accuracy on decided |", "|---|---|---|---|---|"]
        names = {"discovered": "discovered", "base": f"base ({cfg.base})"}
        ways = {"stage": "as the judge stage (one drawn principle per pair)", "whole": "whole (all principles at once)"}
        for who in ("discovered", "base"):
            for way in ("stage", "whole"):
                e = evaluation[who][way]
                lines.append(f"| {names[who]} | {ways[way]} | {e['agreement']:.3f} | {e['coverage']:.3f} | "
                             f"{e['accuracy']:.3f} |")
        lines += ["", "agreement = pairs where the judge's verdict matches the original label / all eval pairs "
                  "(undecided and order-inconsistent pairs count as not matching)."]
    return "\n".join(lines) + "\n"


__all__ = ["build_constitution", "derived_pair", "principle_id", "render_report"]
