"""The deterministic rule cleaner (clean variant ``rule``).

`rule_clean(text, prompt)` removes exactly the spans the detectors of
`cai_core.metrics.detectors` report (a mojibake finding carries its repaired
text, which takes the span's place) and repairs the spacing and punctuation
the removals leave behind; it never rewrites, reorders or adds words. What it
fixes:

* repeated or looping sentences and closing pleasantries, kept once;
* sign-off pile-ups, cut to the first sign-off;
* emoji and emoticons;
* letters of scripts the answer should not contain (the prompt's language is
  the target; a French answer to a French prompt is left alone);
* a final fragment cut off mid-sentence, when something complete precedes it;
* invalid characters (lone surrogates, U+FFFD, control characters);
* mojibake (UTF-8 read as Latin-1 or cp1252, once or more), repaired with
  ftfy, or removed where it cannot be decoded. It is repaired first; the
  other rules then judge the repaired text (a decoded emoji is still an
  emoji).

Gopher repetition statistics are reported by `detect` only: they measure a
text, they do not say what to cut, so the cleaner does not act on them.

A text with nothing to fix comes back as the very same string with
``changed=False`` and no reasons. Most texts are clean, so a fast path first
runs cheap checks (`nothing_to_fix`) that prove no rule can fire; only texts
that fail them get the full analysis. Code, tables, lists, quotes, verse and
markdown structure are never edited by the sentence rules (see the detectors).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cai_core.config.base import ConfigBase, require
from cai_core.metrics.detectors import (
    EDIT_CODES,
    MOJIBAKE,
    DetectorConfig,
    Finding,
    edit_findings,
    prechecked_edit_findings,
)

__all__ = ["RuleCleanConfig", "CleanOutcome", "rule_clean", "remove_spans", "apply_edits", "repair_mojibake"]


@dataclass(frozen=True)
class RuleCleanConfig(ConfigBase):
    """Settings of the deterministic rule cleaner."""

    #: Reason codes the cleaner acts on (a subset of the detectors' edit codes).
    fix: tuple[str, ...] = EDIT_CODES
    #: Run cheap checks first and skip the analyses they prove useless (false: run everything, same result).
    fast_path: bool = True
    #: Detector settings (thresholds, enabled detectors).
    detector: DetectorConfig = field(default_factory=DetectorConfig)

    def validate(self) -> None:
        unknown = [c for c in self.fix if c not in EDIT_CODES]
        require(not unknown, "fix", f"unknown reason code(s) {unknown}; known: {', '.join(EDIT_CODES)}")


@dataclass(frozen=True)
class CleanOutcome:
    """The cleaned text, whether it differs from the input, and the reason codes of the edits made."""

    text: str
    changed: bool
    reasons: tuple[str, ...] = ()


_DEFAULT = RuleCleanConfig()

# Punctuation that attaches to the word before it (no space in front).
_ATTACHING = frozenset(".,;:!?)]}\u2026\u3002\u3001\uff0c\uff01\uff1f\uff1b\uff1a\uff09\u300d\u300f")
# Punctuation left orphaned when what stood between it and an earlier mark is removed.
_ORPHAN = frozenset(".,;:!?\u3002\u3001\uff0c\uff01\uff1f")
_ENDS_CLAUSE = frozenset(".,;:!?\u2026\u3002\uff01\uff1f")


def _newline_unit(ws: str) -> str:
    return "\r\n" if "\r\n" in ws else "\n"


def _junction(left: str, right: str) -> tuple[str, str, str]:
    """Repair the seam where something was cut between `left` and `right`.

    Returns (left, glue, right): `left` and `right` trimmed of the whitespace and
    orphaned punctuation at the seam, and the whitespace to put between them.
    """
    while True:
        core_l = left.rstrip()
        core_r = right.lstrip()
        if core_l.endswith("(") and core_r.startswith(")"):  # an emptied "( )"
            left, right = core_l[:-1], core_r[1:]
            continue
        break
    ws_l = left[len(core_l):]
    ws_r = right[:len(right) - len(core_r)]
    if not core_l:  # the cut was at the very start
        return "", "", core_r.lstrip("".join(_ORPHAN)).lstrip()
    if not core_r:  # the cut was at the very end: keep the text's own trailing whitespace
        return core_l, "", right if not right.strip() else ""
    if core_r[0] in _ORPHAN and core_l[-1] in _ENDS_CLAUSE:
        i = 0
        while i < len(core_r) and core_r[i] in _ORPHAN:
            i += 1
        rest = core_r[i:]
        core_r = rest.lstrip()
        if not core_r:
            return core_l, "", rest
        ws_r += rest[:len(rest) - len(core_r)]
    newlines = max(ws_l.count("\n"), ws_r.count("\n"))
    if newlines:
        unit = _newline_unit(ws_l + ws_r)
        indent = ws_r.rsplit("\n", 1)[1] if "\n" in ws_r else ws_l.rsplit("\n", 1)[1]
        return core_l, unit * newlines + indent, core_r
    if core_r[0] in _ATTACHING:
        return core_l, "", core_r
    if ws_l or ws_r:
        return core_l, (ws_l or ws_r), core_r
    if core_r[0].isalnum() and (core_l[-1].isalnum() or core_l[-1] in ".!?,;:"):
        return core_l, " ", core_r
    return core_l, "", core_r


def remove_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` without the given character ranges, with the seams repaired.

    Ranges that overlap or are separated only by whitespace are cut as one.
    """
    merged: list[list[int]] = []
    for s, e in sorted(spans):
        if merged and (s <= merged[-1][1] or not text[merged[-1][1]:s].strip()):
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    if not merged:
        return text
    # kept pieces between cuts; each seam is repaired against its neighbours
    kept = [text[:merged[0][0]]] + [text[merged[i][1]:merged[i + 1][0]] for i in range(len(merged) - 1)]
    kept.append(text[merged[-1][1]:])
    out: list[str] = [kept[0]]
    for right in kept[1:]:
        left = out.pop()
        while out and not left.strip():  # an earlier seam consumed the whole piece: look further left
            left = out.pop() + left
        left_done, glue, right_rest = _junction(left, right)
        out += [left_done, glue, right_rest]
    return "".join(out)


def apply_edits(text: str, findings: list[Finding]) -> str:
    """`text` with each finding's span replaced by its `replacement`; the spans of removals
    (empty replacement) are cut with `remove_spans`, seams repaired. A removal that overlaps a
    replacement is dropped (the replacement already rewrites that text)."""
    repairs = sorted((f.span, f.replacement) for f in findings if f.replacement and f.span is not None)
    removals = [f.span for f in findings if not f.replacement and f.span is not None]
    if not repairs:
        return remove_spans(text, removals)
    parts: list[str] = []
    shift: list[tuple[int, int]] = []  # (end of a repaired span, total length change up to there)
    pos = delta = 0
    for (s, e), new in repairs:
        parts += [text[pos:s], new]
        pos = e
        delta += len(new) - (e - s)
        shift.append((e, delta))
    parts.append(text[pos:])
    moved = []
    for s, e in removals:
        if any(rs < e and s < re_ for (rs, re_), _ in repairs):
            continue
        d = 0
        for end, total in shift:
            if end > s:
                break
            d = total
        moved.append((s + d, e + d))
    return remove_spans("".join(parts), moved)


def _findings(text: str, prompt: str | None, cfg: RuleCleanConfig, repair_first: bool) -> list[Finding]:
    """The findings `cfg` fixes; `repair_first`: only the mojibake ones where there are any."""
    if cfg.fast_path:
        found = prechecked_edit_findings(text, prompt, cfg.detector, repair_first=repair_first)
        if found is None:  # `nothing_to_fix` holds
            return []
    else:
        found = edit_findings(text, prompt, cfg.detector, exhaustive=True, repair_first=repair_first)
    fix = cfg.fix
    return [f for f in found if f.code in fix]


_MOJIBAKE_ONLY = DetectorConfig(enabled=(MOJIBAKE,))


def repair_mojibake(text: str) -> str:
    """`text` with its mojibake repaired (or removed where it does not decode), nothing else changed."""
    repairs = prechecked_edit_findings(text, None, _MOJIBAKE_ONLY)
    return apply_edits(text, repairs) if repairs else text


def rule_clean(text: str, prompt: str | None = None, cfg: RuleCleanConfig = _DEFAULT) -> CleanOutcome:
    """Clean `text` (an answer to `prompt`) with the deterministic rules; see the module docstring."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    findings = _findings(text, prompt, cfg, MOJIBAKE in cfg.fix)
    if not findings:
        return CleanOutcome(text, False, ())
    present = set()
    source = text
    repairs = [f for f in findings if f.code == MOJIBAKE]
    if repairs:  # decode first, then judge the decoded text with the other rules
        source = apply_edits(text, repairs)
        present.add(MOJIBAKE)
        findings = [f for f in _findings(source, prompt, cfg, False) if f.code != MOJIBAKE]
    cleaned = apply_edits(source, findings)
    present |= {f.code for f in findings}
    reasons = tuple(c for c in EDIT_CODES if c in present)
    if cleaned == text:
        return CleanOutcome(text, False, ())
    return CleanOutcome(cleaned, True, reasons)
