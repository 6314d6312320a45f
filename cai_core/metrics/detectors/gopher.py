"""Gopher (MassiveText) repetition statistics; reported only, never cleaned."""
from __future__ import annotations

import re
from collections import Counter

from cai_core.metrics.detectors.codes import GOPHER_STATS, Finding
from cai_core.metrics.detectors.configs import GopherThresholds

_WORD_RE = re.compile(r"\w+")
_PARA_SPLIT_RE = re.compile(r"\n[ \t\r]*\n")


def _dup_shares(items: list[str]) -> tuple[float, float]:
    seen: set[str] = set()
    dup = dup_chars = total_chars = 0
    for item in items:
        total_chars += len(item)
        if item in seen:
            dup += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    return (dup / len(items) if items else 0.0, dup_chars / total_chars if total_chars else 0.0)


def gopher_stats(text: str, max_chars: int = 200_000) -> dict[str, float]:
    """The Gopher repetition statistics of `text` (its first `max_chars` characters); also ``words``."""
    t = text[:max_chars]
    lines = [s for s in (ln.strip() for ln in t.split("\n")) if s]
    paras = [s for s in (p.strip() for p in _PARA_SPLIT_RE.split(t)) if s]
    stats: dict[str, float] = {}
    stats["dup_line_frac"], stats["dup_line_chars"] = _dup_shares(lines)
    stats["dup_para_frac"], stats["dup_para_chars"] = _dup_shares(paras)
    words = _WORD_RE.findall(t.lower())
    # intern words as small ints: cheaper tuples to hash
    ids: dict[str, int] = {}
    seq = [ids.setdefault(w, len(ids)) for w in words]
    id_len = [0] * len(ids)
    for w, i in ids.items():
        id_len[i] = len(w)
    lens = [id_len[i] for i in seq]
    total = sum(lens)
    n_words = len(seq)
    for n in (2, 3, 4):
        share = 0.0
        if n_words >= n and total:
            grams = Counter(zip(*(seq[i:] for i in range(n))))
            top = max(grams.values())
            if top > 1:  # the longest of the most frequent n-grams, so ties do not depend on order
                chars = max(sum(id_len[i] for i in g) for g, c in grams.items() if c == top)
                share = min(1.0, top * chars / total)
        stats[f"top_{n}gram"] = share
    for n in range(5, 11):
        share = 0.0
        if n_words >= 2 * n and total:
            grams = list(zip(*(seq[i:] for i in range(n))))
            counts = Counter(grams)
            if len(counts) < len(grams):
                covered = bytearray(n_words)
                ones = b"\x01" * n
                for start, g in enumerate(grams):
                    if counts[g] > 1:
                        covered[start:start + n] = ones
                share = sum(l for l, c in zip(lens, covered) if c) / total
        stats[f"dup_{n}gram"] = share
    stats["words"] = float(n_words)
    return stats


def gopher_findings(text: str, thresholds: GopherThresholds = GopherThresholds()) -> list[Finding]:
    """One `gopher_<stat>` finding per statistic above its threshold (texts of enough words only)."""
    stats = gopher_stats(text, thresholds.max_chars)
    if stats["words"] < thresholds.min_words:
        return []
    return [Finding(f"gopher_{name}", None, f"{name} = {stats[name]:.3f} > {getattr(thresholds, name):.2f}")
            for name in GOPHER_STATS if stats[name] > getattr(thresholds, name)]
