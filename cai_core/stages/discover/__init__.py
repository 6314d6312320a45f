"""discover: learn a constitution from existing preference data (inverse constitutional AI).

Input: a JSONL file of preference pairs, one object per line with a prompt, the
chosen and the rejected answer (field names configurable; an `id` is kept as
`source_id`, the pair's own id is a hash of its content). Output: a constitution
YAML that the judge stage loads as it is (``judge.constitution: <path>``), with each
principle's measured `accuracy` and `support`, plus a report.

Method
------
0. **Split.** Usable pairs are ordered by a seeded hash of their id and cut into
   three disjoint parts: *eval* (`eval_fraction`, for the final comparison only),
   *test* (`test_fraction`, to measure each candidate principle) and *propose*
   (the rest, which the teacher reads). A principle is therefore never scored on
   the pairs it was written from, and the final comparison uses pairs that neither
   proposal nor selection saw.
1. **Propose.** For every propose pair the teacher gets our own prompt (see
   `cai_core.tasks.discover`): the request, the PREFERRED and the OTHER answer, and the
   task to write `per_pair` principles, one per line as ``- Prefer the response
   that ...``. Parsing is strict (`tasks.discover.parse_principles`): bullet lines only, each must
   start with "Prefer" and speak of the response (or answer, reply), 20-300
   characters; rejected lines are counted by reason. A reply with no valid line is `unparsed`, a failed request
   `request_failed`: both are counted, never fatal on their own.
2. **Cluster.** Candidates (identical texts merged, their count kept as a weight) are
   embedded (`cai_core.embedding`: the deterministic hashing embedder by default,
   MiniLM optionally) and clustered with weighted k-means (k-means++ start from a
   numpy Generator seeded by `seed`, `n_init` restarts, clusters numbered by size),
   so the same input gives the same clusters everywhere. One representative per
   cluster: by default the member closest to the centroid (`representative:
   centroid`: no extra calls, always a real proposal); with `summarise` the teacher
   writes one principle from the cluster's central members (parsed the same way;
   an unparsed summary falls back to the central member and is counted).
   Too few pairs or candidates for `clusters`: with `few_pairs: reduce` (default) k
   is lowered to the number of propose pairs (`fewer_pairs_than_clusters`) and then
   to the number of distinct candidates (`fewer_candidates_than_clusters`), both
   recorded in the metrics and the report; with `few_pairs: error` the stage stops
   with a StageError naming the counts.
3. **Test.** Each representative is handed alone, as the judge's principle, to the
   judge stage's own mechanics (`tasks.judge.format_input`, `judge._p_first`,
   `judge.decide`), on every test pair in both orders. A pair is *decided* when the
   two orders agree and the margin clears `min_margin` (logprobs) - the judge has no
   "not relevant" answer, so order-inconsistent or undecided verdicts are how a
   principle that does not apply shows. Per principle: coverage = decided / test
   pairs; accuracy = decided pairs won by the originally chosen answer / decided.
   Kept when coverage >= `min_coverage`, decided >= `min_decided`, accuracy >=
   `min_accuracy` and the Wilson lower bound of the accuracy (z = `chance_z`) is above
   0.5 (above chance, not by luck). Ranked by net score (correct - wrong) / test pairs
   (= coverage x (2 accuracy - 1): right often *and* relevant often), then accuracy.
   Walking down the ranking, a principle is dropped as a near-duplicate of one
   already kept when their embedding cosine >= `duplicate_threshold` (default: the
   embedder's own threshold), or when they behave alike: the pairs they decide
   overlap (Jaccard) >= `duplicate_overlap` and they agree on >= 95% of the shared
   ones. The top `n` survivors form the constitution.
4. **Write.** ``constitution.yaml``: the judge section holds the principles (kebab-case
   ids from their words) with `accuracy` (on decided test pairs) and `support` (=
   coverage, the share of test pairs the principle decided; counts are in
   principles.jsonl). The schema requires critique/revision pairs: with
   `critique_revision: derived` (default) one pair is derived from each principle,
   so the file states the data's values for Stage 1 too; with `copy` they are copied
   from `base` (e.g. the default constitution's safety critiques). `few_shot` is
   copied from `base` in both cases (it frames base models, whatever the principles).
5. **Report.** On the eval split the discovered constitution and the `base`
   constitution are compared, each judged two ways: as the judge stage does it (one
   principle drawn per pair, `judge.run` itself on the pairs written in random
   order) and whole (all principles in one prompt). agreement = pairs whose verdict
   matches the original label / eval pairs; coverage and accuracy on decided pairs
   as above. ``discover_report.md`` and ``metrics.json`` hold it all.

Bad input: a missing or mistyped field, invalid JSON or UTF-8 stops the stage with an
InputError naming file, line and field. Rows are skipped and counted (stable codes):
``empty_prompt``, ``empty_response`` (chosen or rejected blank), ``identical``
(chosen == rejected after trimming), ``duplicate_pair`` (same prompt, chosen and
rejected as an earlier row), ``over_max_pairs``. Fewer than 3 usable pairs, no
candidate principle, or no principle above chance: StageError with the counts
(the report and principles.jsonl are still written so the reason can be read).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from cai_core import records
from cai_core.constitution import load_constitution
from cai_core.embedding import load_embedder
from cai_core.errors import StageError
from cai_core.llm.base import ChatModel
from cai_core.progress import log
from cai_core.runtime.artifacts import CONSTITUTION
from cai_core.stages.base import StageResult
from cai_core.stages.discover.clustering import cluster_candidates, kmeans
from cai_core.stages.discover.config import DiscoverConfig
from cai_core.stages.discover.inputs import SKIP_REASONS, read_pairs, resolve_source, split_pairs
from cai_core.stages.discover.proposals import propose
from cai_core.stages.discover.report import build_constitution, render_report
from cai_core.stages.discover.scoring import (DROP_REASONS, agreement, evaluate_constitution, judge_pairs,
                                              score_principles, select_principles, wilson_lower)
from cai_core.tasks.discover import PROPOSE_STATUSES, REJECT_REASONS


def run(cfg: DiscoverConfig, pairs: Path | str, out_dir: Path, llm: ChatModel, embedder: Any = None) -> StageResult:
    """Discover a constitution from the preference pairs in `pairs` (any `cai_core.data.inputs` source); write it
    and the report to `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    embedder = embedder if embedder is not None else load_embedder(cfg.embedder)
    base = load_constitution(cfg.base)
    usable, skipped, rows_in = read_pairs(cfg, pairs)
    split = split_pairs(cfg, usable, str(pairs))
    metrics: dict[str, float] = {"pairs_in": rows_in, "pairs_usable": len(usable),
                                 **{f"skipped_{r}": skipped.get(r, 0) for r in SKIP_REASONS},
                                 **{f"{k}_pairs": len(v) for k, v in split.items()}}
    details: dict[str, Any] = {"skipped": dict(skipped)}
    log(f"discover: {len(usable)} usable pairs of {rows_in} ({dict(skipped) or 'none skipped'}); "
        f"propose {len(split['propose'])}, test {len(split['test'])}, eval {len(split['eval'])}")

    proposals, candidates, statuses, rejected = propose(cfg, split["propose"], llm)
    records.write_jsonl(out_dir / "proposals.jsonl", proposals)
    metrics.update({f"proposals_{s}": statuses.get(s, 0) for s in PROPOSE_STATUSES})
    metrics.update({f"lines_rejected_{r}": rejected.get(r, 0) for r in REJECT_REASONS})
    metrics["candidates"] = len(candidates)
    if not candidates:
        raise StageError(f"{pairs}: the teacher proposed no usable principle for any of the {len(split['propose'])} "
                         f"pairs ({dict(statuses)}; rejected lines: {dict(rejected) or 'none'}); see "
                         f"{out_dir / 'proposals.jsonl'}")

    reps, facts = cluster_candidates(cfg, candidates, len(split["propose"]), embedder, llm)
    embedder = facts.pop("_embedder")
    metrics.update({"candidates_distinct": facts["candidates_distinct"], "clusters_requested": cfg.clusters,
                    "clusters": facts["clusters"]})
    metrics.update({k: v for k, v in facts.get("summary_status", {}).items()})
    details["clusters_reduced"] = facts["reduced"]
    details["embedder"] = facts["embedder"]

    score_principles(cfg, reps, split["test"], llm)
    kept = select_principles(cfg, reps, embedder)
    drops = Counter(r["status"] for r in reps if r["status"] != "kept")
    metrics.update({"principles_tested": len(reps), "principles": len(kept),
                    **{f"dropped_{r}": drops.get(r, 0) for r in DROP_REASONS}})
    test_statuses = Counter()
    for r in reps:
        test_statuses.update(r["statuses"])
    metrics.update({f"test_{s}": c for s, c in sorted(test_statuses.items())})

    constitution = None
    evaluation: dict[str, dict[str, dict[str, float]]] = {}
    if kept:
        constitution = build_constitution(cfg, kept, base, str(pairs))
        metrics["mean_principle_accuracy"] = float(np.mean([r["accuracy"] for r in kept]))
        metrics["mean_principle_coverage"] = float(np.mean([r["coverage"] for r in kept]))
        tmp_yaml = out_dir / "eval" / "discovered.yaml"
        tmp_yaml.parent.mkdir(parents=True, exist_ok=True)
        records.atomic_write(tmp_yaml, constitution.to_yaml())
        evaluation["discovered"] = evaluate_constitution(cfg, constitution, str(tmp_yaml), split["eval"],
                                                         out_dir / "eval" / "discovered", llm)
        evaluation["base"] = evaluate_constitution(cfg, base, cfg.base, split["eval"], out_dir / "eval" / "base", llm)
        for who, ways in evaluation.items():
            for way, m in ways.items():
                for key in ("agreement", "coverage", "accuracy"):
                    metrics[f"eval_{who}_{way}_{key}"] = m[key]
    records.write_jsonl(out_dir / "principles.jsonl", [_public(r) for r in reps])
    details["evaluation"] = evaluation
    report = render_report(cfg, str(pairs), metrics, details, reps, kept, facts)
    records.atomic_write(out_dir / "discover_report.md", report)
    records.write_json(out_dir / "metrics.json", {"metrics": metrics, "details": details})
    outputs = {"report": out_dir / "discover_report.md", "metrics": out_dir / "metrics.json",
               "principles": out_dir / "principles.jsonl", "proposals": out_dir / "proposals.jsonl"}
    if constitution is None:
        best = max(reps, key=lambda r: (r["score"], r["text"]))
        failed = test_statuses.get("request_failed", 0)
        hint = ""
        if failed:
            reasons = Counter()
            for rep in reps:
                reasons.update(rep["failures"])
            hint = (f"; {failed} of {sum(test_statuses.values())} judge requests failed "
                    f"({', '.join(f'{k} {v}' for k, v in reasons.most_common(3))})")
            if "no_logprobs" in reasons:
                hint += "; the endpoint gives no logprobs: set discover.mode: letter"
        raise StageError(f"{pairs}: no candidate principle predicted the preferences above chance on the "
                         f"{len(split['test'])} test pairs ({dict(drops)}; best: {best['text']!r} with accuracy "
                         f"{best['accuracy'] if best['accuracy'] is not None else 'n/a'} on {best['decided']} decided"
                         f"{hint}); see {out_dir / 'discover_report.md'}")
    records.atomic_write(out_dir / CONSTITUTION, constitution.to_yaml())
    load_constitution(str(out_dir / CONSTITUTION))  # what we wrote must load as the judge loads it
    outputs = {"constitution": out_dir / CONSTITUTION, **outputs}
    log(f"discover: {len(kept)} principle(s) kept of {len(reps)} tested; eval agreement "
        f"{metrics.get('eval_discovered_whole_agreement', 0):.3f} (whole) vs base "
        f"{metrics.get('eval_base_whole_agreement', 0):.3f}")
    return StageResult(outputs=outputs, metrics=metrics, details=details)


def _public(r: dict) -> dict:
    return {k: v for k, v in r.items() if not k.startswith("_")}


__all__ = ["DROP_REASONS", "DiscoverConfig", "SKIP_REASONS", "agreement", "build_constitution", "cluster_candidates",
           "evaluate_constitution", "judge_pairs", "kmeans", "propose", "read_pairs", "resolve_source", "run",
           "score_principles", "select_principles", "split_pairs", "wilson_lower"]
