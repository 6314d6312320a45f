"""Scripts: which ones a text uses, and which ones an answer may use (its target scripts)."""
from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

from cai_core.metrics.detectors.characters import (
    _ANY_LANGUAGE_RE,
    _LANGUAGE_RE,
    _LANGUAGE_SCRIPTS,
    _SCRIPT_NAMES,
    _SCRIPTS,
    _ascii_letters,
    _script_runs,
)


def _script_counts(text: str) -> Counter:
    counts: Counter = Counter()
    for s, e, name in _script_runs(text):
        counts[name] += e - s
    counts["latin"] = _ascii_letters(text)  # accented Latin letters are not counted: close enough for shares
    return counts


def target_scripts(prompt: str | None, text: str, share: float = 0.15) -> frozenset[str]:
    """Scripts an answer may use: Latin, the prompt's own scripts (the text's when there is no
    prompt with letters) and the scripts of languages the prompt names."""
    if prompt:
        allowed = _prompt_scripts(prompt, share)
        if allowed is not None:
            return allowed
    return _scripts_from(None, _script_counts(text), share)


@lru_cache(maxsize=4096)
def _prompt_scripts(prompt: str, share: float) -> frozenset[str] | None:
    counts = _script_counts(prompt)
    return _scripts_from(prompt, counts, share) if sum(counts.values()) else None


def _scripts_from(prompt: str | None, counts: Counter, share: float) -> frozenset[str]:
    total = sum(counts.values())
    allowed = {"latin"} | {s for s, c in counts.items() if c and c >= share * total}
    if prompt:
        low = prompt.lower()
        if _ANY_LANGUAGE_RE.search(low):
            return frozenset(_SCRIPT_NAMES) | {"latin"}
        for name in _LANGUAGE_RE.findall(low):
            allowed.update(_LANGUAGE_SCRIPTS[name])
    if "hangul" in allowed:
        allowed.add("cjk")  # Korean text may carry hanja
    return frozenset(allowed)


@lru_cache(maxsize=64)
def _foreign_re(allowed: frozenset[str]) -> re.Pattern | None:
    ranges = "".join(r for name, r in _SCRIPTS.items() if name not in allowed)
    return re.compile(f"[{ranges}]+") if ranges else None


_GREEK_RE = re.compile(f"[{_SCRIPTS['greek']}]+")
