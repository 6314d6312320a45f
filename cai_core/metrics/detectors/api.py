"""The public entry points: `detect`, `edit_findings`, `prechecked_edit_findings`, `nothing_to_fix`."""
from __future__ import annotations

from cai_core.metrics.detectors.analysis import _analyze
from cai_core.metrics.detectors.codes import Finding
from cai_core.metrics.detectors.configs import DetectorConfig
from cai_core.metrics.detectors.precheck import _precheck


def detect(text: str, prompt: str | None = None, cfg: DetectorConfig = DetectorConfig(), *,
           exhaustive: bool = False) -> list[Finding]:
    """Every finding in `text` (answer to `prompt`, whose scripts are the target), in text order.

    `exhaustive` runs every sentence rule even where a cheap check proves it cannot fire (same
    result, slower: for tests and benchmarks).
    """
    return _analyze(text, prompt, cfg, gopher=True, exhaustive=exhaustive)


def edit_findings(text: str, prompt: str | None = None, cfg: DetectorConfig = DetectorConfig(), *,
                  exhaustive: bool = False, repair_first: bool = False) -> list[Finding]:
    """The findings of `detect` a cleaner can act on (those with a span), without the Gopher statistics.

    `repair_first`: where the text has mojibake, only the mojibake findings (a cleaner repairs
    them first and judges the repaired text with the other rules, so it need not analyse this one).
    """
    found = _analyze(text, prompt, cfg, gopher=False, exhaustive=exhaustive, repair_first=repair_first)
    return [f for f in found if f.span is not None]


def prechecked_edit_findings(text: str, prompt: str | None = None, cfg: DetectorConfig = DetectorConfig(), *,
                             repair_first: bool = False) -> list[Finding] | None:
    """None when `nothing_to_fix(text, cfg)` holds, else `edit_findings(text, prompt, cfg, repair_first=...)`,
    whose analysis then reuses what the pre-check computed."""
    doubt = _precheck(text, cfg)
    if doubt is None:
        return None
    return [f for f in _analyze(text, prompt, cfg, gopher=False, doubt=doubt, repair_first=repair_first)
            if f.span is not None]


def nothing_to_fix(text: str, cfg: DetectorConfig = DetectorConfig()) -> bool:
    """Cheap pre-check: True only when `edit_findings` is certainly empty.

    It looks for the raw material of every edit rule: characters that are not
    printable or not plain Latin text (invalid characters, emoji, letters of
    other scripts), emoticon-like character pairs, an unpunctuated ending, any
    sentence key that occurs twice, and closing pleasantries at the end that
    repeat a kind or pile up sign-offs. When none is there, no rule can fire;
    when one is, the full analysis decides (it usually finds nothing either).
    """
    return _precheck(text, cfg) is None
