"""discover's clustering: candidate principles embedded and grouped by weighted k-means, one representative each.

k-means++ starts from a numpy Generator seeded by `seed`, `n_init` restarts, clusters numbered
by size, so the same input gives the same clusters everywhere.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from cai_core.embedding import cosine_matrix
from cai_core.errors import StageError
from cai_core.llm.base import ChatModel
from cai_core.progress import log
from cai_core.stages.discover.config import DiscoverConfig
from cai_core.stages.discover.proposals import summarise


def kmeans(x: np.ndarray, k: int, seed: int, weights: np.ndarray | None = None, n_init: int = 4,
           max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Weighted k-means (k-means++ start), deterministic for a seed: (labels, centroids).

    Clusters are renumbered by decreasing total weight, ties by their first member, so the
    numbering does not depend on which restart won.
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= points, got k={k} for {n} points")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    rng = np.random.default_rng(seed)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(n_init):
        centroids = _kmeanspp(x, k, w, rng)
        labels = np.full(n, -1)
        for _ in range(max_iter):
            d = _sq_dist(x, centroids)
            new = d.argmin(1)
            if np.array_equal(new, labels):
                break
            labels = new
            for c in range(k):
                members = labels == c
                if members.any():
                    centroids[c] = np.average(x[members], axis=0, weights=w[members])
                else:  # an empty cluster restarts at the point worst served
                    far = int((d.min(1) * w).argmax())
                    centroids[c] = x[far]
        d = _sq_dist(x, centroids)
        labels = d.argmin(1)
        inertia = float((d[np.arange(n), labels] * w).sum())
        if best is None or inertia < best[0] - 1e-12:
            best = (inertia, labels.copy(), centroids.copy())
    _, labels, centroids = best
    used = sorted(set(labels.tolist()), key=lambda c: (-w[labels == c].sum(), int(np.argmax(labels == c))))
    remap = {old: new for new, old in enumerate(used)}
    labels = np.array([remap[c] for c in labels.tolist()])
    return labels, centroids[used]


def _sq_dist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (n, k) without an (n, k, dim) temporary."""
    d = (x * x).sum(1)[:, None] - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _kmeanspp(x: np.ndarray, k: int, w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(x)
    first = int(rng.choice(n, p=w / w.sum()))
    centroids = [x[first]]
    d2 = ((x - x[first]) ** 2).sum(1)
    for _ in range(1, k):
        p = d2 * w
        if p.sum() <= 0:  # every point sits on a centroid already: take any unused point
            idx = int(rng.choice(n))
        else:
            idx = int(rng.choice(n, p=p / p.sum()))
        centroids.append(x[idx])
        d2 = np.minimum(d2, ((x - x[idx]) ** 2).sum(1))
    return np.array(centroids, dtype=np.float64)


def cluster_candidates(cfg: DiscoverConfig, candidates: list[dict], n_propose_pairs: int, embedder: Any,
                       llm: ChatModel) -> tuple[list[dict], dict[str, Any]]:
    """One representative per cluster: [{"text", "cluster", "size", "members"}], and clustering facts."""
    counts = Counter(c["text"] for c in candidates)
    texts = sorted(counts, key=lambda t: (-counts[t], t))
    facts: dict[str, Any] = {"clusters_requested": cfg.clusters, "candidates_distinct": len(texts), "reduced": []}
    k = cfg.clusters
    for limit, reason in ((n_propose_pairs, "fewer_pairs_than_clusters"),
                          (len(texts), "fewer_candidates_than_clusters")):
        if k > limit:
            if cfg.few_pairs == "error":
                raise StageError(f"discover: {reason.replace('_', ' ')}: {limit} for {cfg.clusters} clusters "
                                 "(lower discover.clusters, add pairs, or set discover.few_pairs: reduce)")
            log(f"discover: {reason}: k-means k lowered from {k} to {limit}")
            facts["reduced"].append({"reason": reason, "from": k, "to": limit})
            k = limit
    facts["clusters"] = k
    if hasattr(embedder, "fit"):
        embedder = embedder.fit(texts)
    vectors = embedder.embed(texts)
    weights = np.array([counts[t] for t in texts], dtype=np.float64)
    labels, centroids = kmeans(vectors, k, cfg.seed, weights, n_init=cfg.n_init)
    reps = []
    for c in range(k):
        idx = np.flatnonzero(labels == c)
        sims = cosine_matrix(vectors[idx], centroids[c:c + 1])[:, 0]
        order = sorted(range(len(idx)),
                       key=lambda j: (-round(float(sims[j]), 9), -counts[texts[idx[j]]], texts[idx[j]]))
        members = [texts[idx[j]] for j in order]
        reps.append({"cluster": c, "text": members[0], "size": int(weights[idx].sum()), "members": members,
                     "source": "centroid"})
    if cfg.representative == "summarise":
        facts["summary_status"] = summarise(cfg, reps, llm)
    return reps, {**facts, "embedder": getattr(embedder, "name", type(embedder).__name__), "_embedder": embedder}


__all__ = ["cluster_candidates", "kmeans"]
