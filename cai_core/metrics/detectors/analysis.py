"""The analysis: character-level findings, then the sentence rules on the text with those blanked out."""
from __future__ import annotations

import gc
import operator
import re
from itertools import compress

from cai_core.metrics.detectors.characters import (
    _ANY_SCRIPT_RE,
    _EMOJI_CHAR_RE,
    _EMOJI_RUN_RE,
    _EMOTICON_FOLLOWERS,
    _EMOTICON_RUN_RE,
    _INVALID_RE,
    _ends_with_emoji,
    _may_have_emoticon,
    script_of,
)
from cai_core.metrics.detectors.codes import (
    ALL_CODES,
    EMOJI,
    FOREIGN_SCRIPT,
    INVALID_CHAR,
    MOJIBAKE,
    REPEATED_PLEASANTRY,
    REPEATED_SENTENCE,
    SIGNOFF_PILEUP,
    TRUNCATED_FRAGMENT,
    Finding,
)
from cai_core.metrics.detectors.configs import DetectorConfig
from cai_core.metrics.detectors.gopher import gopher_findings
from cai_core.metrics.detectors.markdown import (
    _QUOTE_RE,
    PROSE,
    _classify_lines,
    _frozen_spans,
    _Lines,
    _merge_runs,
    _SpanSet,
)
from cai_core.metrics.detectors.mojibake import may_have_mojibake, mojibake_findings
from cai_core.metrics.detectors.precheck import _Doubt, _has_odd_space, _sentences_settled
from cai_core.metrics.detectors.scripts import _GREEK_RE, _foreign_re, _prompt_scripts, _script_counts, _scripts_from
from cai_core.metrics.detectors.sentences import (
    _ABBREVIATIONS,
    _DANGLING,
    _PLAIN_RE,
    _REFRAIN_PROMPT_RE,
    _STRONG_CUT_END,
    _TERMINATORS,
    COMPLETE_END,
    _rare_chars,
    closing_kind,
    is_signoff,
)
from cai_core.metrics.detectors.units import _collect_units, _Units, _verse_paragraphs


def _char_findings(text: str, prompt: str | None, cfg: DetectorConfig, frozen: _SpanSet,
                   enabled: frozenset[str]) -> list[Finding]:
    out: list[Finding] = []
    rare = _rare_chars(text.encode("utf-8", "surrogatepass"))  # every character these rules look for
    repaired = None
    if MOJIBAKE in enabled and may_have_mojibake(text, rare):
        out += mojibake_findings(text, frozen)
        repaired = _SpanSet([f.span for f in out])
    if INVALID_CHAR in enabled and ("\ufffd" in rare or not rare.isprintable()):
        for m in _INVALID_RE.finditer(text):
            if repaired is None or not repaired.overlaps(*m.span()):  # ftfy's lossy mark goes with the repair
                out.append(Finding(INVALID_CHAR, m.span(), f"{m.end() - m.start()} invalid character(s)"))
    plain = text.isascii() or not _PLAIN_RE.search(rare)  # no emoji and no letters of other scripts
    if EMOJI in enabled:
        spans = _emoji_spans(text) if not plain else []
        if _may_have_emoticon(text):
            spans += _emoticon_spans(text)
        if spans:
            spans = sorted(sp for sp in spans if not frozen.overlaps(*sp))
            for s, e in _merge_runs(text, spans):
                out.append(Finding(EMOJI, (s, e), f"emoji/emoticon run {text[s:e]!r}"))
    if FOREIGN_SCRIPT in enabled and not plain and _ANY_SCRIPT_RE.search(rare):
        out += _foreign_findings(text, prompt, cfg, frozen)
    return out


def _emoji_spans(text: str) -> list[tuple[int, int]]:
    """Runs of emoji clusters, found from their emoji characters (a cheap scan) outwards."""
    spans: list[tuple[int, int]] = []
    pos = 0
    search = _EMOJI_CHAR_RE.search
    while (hit := search(text, pos)) is not None:
        p = hit.start()
        pos = p + 1
        for start in (p - 2, p - 1, p):  # a keycap or a text-style symbol starts before its selector
            if start < 0 or (spans and start < spans[-1][1]):
                continue
            m = _EMOJI_RUN_RE.match(text, start)
            if m and m.end() > p:
                spans.append(m.span())
                pos = m.end()
                break
    return spans


def _emoticon_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    for ch in _EMOTICON_FOLLOWERS:
        i = text.find(ch)
        while i != -1:
            m = _EMOTICON_RUN_RE.match(text, i)
            if m:
                spans.append(m.span())
                i = text.find(ch, m.end())
            else:
                i = text.find(ch, i + 1)
    spans.sort()
    return spans


def _quote_spans(text: str) -> "_SpanSet":
    """Quoted stretches ("...", curly, guillemets, CJK corner brackets) within one line."""
    if not any(q in text for q in "\"\u201c\u00ab\u201e\u300c\u300e"):
        return _SpanSet([])
    return _SpanSet([m.span() for m in _QUOTE_RE.finditer(text)])


def _foreign_findings(text: str, prompt: str | None, cfg: DetectorConfig, frozen: _SpanSet) -> list[Finding]:
    counts = _script_counts(text)
    allowed = _prompt_scripts(prompt, cfg.script_share) if prompt else None
    if allowed is None:  # no prompt, or one without letters: the text's own scripts are the target
        allowed = _scripts_from(None, counts, cfg.script_share)
    pattern = _foreign_re(allowed)
    if pattern is None or not pattern.search(text):
        return []
    quotes = _quote_spans(text)
    greek_ok = "greek" not in allowed and cfg.max_greek_run > 0
    spans = []
    foreign_letters = 0
    for m in pattern.finditer(text):
        s, e = m.span()
        foreign_letters += e - s
        if greek_ok and e - s <= cfg.max_greek_run and _GREEK_RE.fullmatch(text, s, e):
            continue
        if frozen.overlaps(s, e) or quotes.overlaps(s, e):
            continue
        spans.append((s, e))
    if not spans:
        return []
    letters = sum(counts.values())
    scripts = sorted({script_of(text[s]) for s, e in spans})
    if letters and foreign_letters > cfg.max_stray_share * letters:
        return [Finding(FOREIGN_SCRIPT, None,
                        f"answer mostly in {'/'.join(scripts)} ({foreign_letters}/{letters} letters); "
                        f"target scripts {sorted(allowed)}")]
    return [Finding(FOREIGN_SCRIPT, (s, e), f"stray {'/'.join(scripts)} text {text[s:e]!r}")
            for s, e in _merge_runs(text, spans)]


def _mask(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with the given ranges blanked by spaces (same length, so offsets still hold)."""
    if not spans:
        return text
    parts = []
    pos = 0
    for s, e in sorted(spans):
        if s < pos:
            s = pos
        if e <= s:
            continue
        parts.append(text[pos:s])
        parts.append(" " * (e - s))
        pos = e
    parts.append(text[pos:])
    return "".join(parts)


# Above this size the cyclic garbage collector is paused during the analysis: it would otherwise
# rescan the many small objects of a huge text again and again (nothing here makes cycles).
_GC_PAUSE_CHARS = 256 * 1024
_SHORTCUT_MAX_CHARS = 64 * 1024


def _analyze(text: str, prompt: str | None, cfg: DetectorConfig, gopher: bool,
             exhaustive: bool = False, doubt: _Doubt | None = None, repair_first: bool = False) -> list[Finding]:
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    if prompt is not None and not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string or None, got {type(prompt).__name__}")
    if len(text) > _GC_PAUSE_CHARS and gc.isenabled():
        gc.disable()
        try:
            return _analyze(text, prompt, cfg, gopher, exhaustive, doubt, repair_first)
        finally:
            gc.enable()
    findings: list[Finding] = []
    if not text.strip():
        return findings
    enabled = frozenset(cfg.enabled)
    lines = doubt.lines() if doubt is not None else _classify_lines(text)
    frozen = _SpanSet(_frozen_spans(text, lines))
    char_findings = _char_findings(text, prompt, cfg, frozen, enabled)
    if repair_first and any(f.code == MOJIBAKE for f in char_findings):
        return [f for f in char_findings if f.code == MOJIBAKE]
    findings += char_findings
    # mojibake stays visible to the sentence rules: it is text in the wrong codec, not noise to skip
    masked = _mask(text, [f.span for f in char_findings if f.span is not None and f.code != MOJIBAKE])
    # the shortcut pays on answer-sized texts; a huge one is almost always a loop that fails it
    known_unsettled = doubt is not None and doubt.sentences and masked is text
    if (exhaustive or len(text) > _SHORTCUT_MAX_CHARS or known_unsettled or _has_odd_space(masked)
            or not _sentences_settled(text, masked, cfg, lambda: lines)):
        findings += _sentence_findings(text, masked, prompt, cfg, lines, frozen, enabled)
    if gopher and "gopher" in enabled:
        findings += gopher_findings(text, cfg.gopher)
    findings.sort(key=lambda f: (f.span or (len(text), len(text)), ALL_CODES.index(f.code)))
    return findings


def _sentence_findings(text: str, masked: str, prompt: str | None, cfg: DetectorConfig, lines: _Lines,
                       frozen: _SpanSet, enabled: frozenset[str]) -> list[Finding]:
    want_repeat = REPEATED_SENTENCE in enabled
    want_pleasantry = REPEATED_PLEASANTRY in enabled
    want_signoff = SIGNOFF_PILEUP in enabled
    want_trunc = TRUNCATED_FRAGMENT in enabled
    if not (want_repeat or want_pleasantry or want_signoff or want_trunc):
        return []
    verse = _verse_paragraphs(text, lines)
    refrain_ok = bool(prompt) and bool(_REFRAIN_PROMPT_RE.search(prompt.lower()))
    quotes = _quote_spans(text)
    U = _collect_units(masked, lines, verse, quotes)
    n = len(U)
    if not n:
        return []
    keys, oks, starts, ends = U.key, U.ok, U.start, U.end
    code: dict[int, str] = {}  # unit index -> reason code
    findings: list[Finding] = []

    # ---- truncated final fragment
    body_n = n
    if want_trunc and _truncated(text, masked, U, lines, cfg, weak=not refrain_ok):
        body_n = n - 1
        s0, e0 = starts[-1], ends[-1]
        prior = masked[:s0].strip()
        findings.append(Finding(TRUNCATED_FRAGMENT, (s0, e0) if prior else None,
                                f"text ends mid-sentence: {_clip(text[s0:e0])!r}"))

    # ---- closing block: the trailing run of pleasantries / sign-offs (and a name under a sign-off)
    if want_pleasantry or want_signoff:
        block: list[int] = []
        j = body_n - 1
        while j >= 0 and oks[j]:
            if not keys[j] or U.kind(j) is not None:
                block.append(j)
            elif (j > 0 and oks[j - 1] and is_signoff(U.kind(j - 1)) and _name_line(text, starts[j], ends[j], keys[j])
                  and masked[starts[j - 1]:ends[j - 1]].rstrip().endswith(",")):
                block.append(j)
            else:
                break
            j -= 1
        block.reverse()
        seen_kinds: set[str] = set()
        signoffs = 0  # sign-offs kept, and the closings of other kinds kept after one
        signed = False  # a sign-off is kept: every closing after it piles onto it
        last_flagged = None
        for idx in block:
            kind = U.kind(idx)
            if kind is None:
                if last_flagged is not None and idx == last_flagged + 1 and keys[idx]:
                    code[idx] = code[last_flagged]  # the name under a removed sign-off goes with it
                continue
            c = None
            counts = signed or is_signoff(kind)
            if kind in seen_kinds:
                c = REPEATED_PLEASANTRY if want_pleasantry else None
            elif counts and signoffs >= cfg.max_signoffs:
                c = SIGNOFF_PILEUP if want_signoff else None
                if not is_signoff(kind):
                    seen_kinds.add(kind)  # said once, even if cut: its later copies are repeats
            else:
                seen_kinds.add(kind)
                signoffs += counts
                signed = signed or is_signoff(kind)
            if c:
                code[idx] = c
                last_flagged = idx
            else:
                last_flagged = None

    # ---- pleasantries said word for word again; back-to-back loops; far repeats
    if not refrain_ok:
        far: list[int] = []  # later copies of a sentence said earlier, not back to back
        kind_of_key = U.kind_of_key
        seen: set[str] = {""}  # units the rules skip have empty keys
        remember = seen.add
        ok_keys = [k if o else "" for k, o in zip(keys[:body_n], oks)]
        for idx in [i for i, k in enumerate(ok_keys) if k in seen or remember(k)]:
            key = ok_keys[idx]
            if not key or idx in code:
                continue
            if want_pleasantry and kind_of_key(key) is not None:
                code[idx] = REPEATED_PLEASANTRY
            elif want_repeat and key.count(" ") + 1 >= cfg.min_repeat_words:
                far.append(idx)
        if want_repeat:
            for idx in _tandem_repeats(U, body_n, cfg):
                if idx not in code:
                    pleasantry = want_pleasantry and kind_of_key(keys[idx]) is not None
                    code[idx] = REPEATED_PLEASANTRY if pleasantry else REPEATED_SENTENCE
            far_set = set(far)
            for idx in far:  # long sentences said twice are never intended
                if idx not in code and U.words(idx) >= cfg.min_far_repeat_words:
                    code[idx] = REPEATED_SENTENCE
            for idx in range(body_n - 1, -1, -1):  # shorter ones only where the text ends in a loop
                if idx in code or (oks[idx] and (not keys[idx] or U.kind(idx) is not None)):
                    continue
                if idx not in far_set:
                    break
                code[idx] = REPEATED_SENTENCE

    # one finding per run of consecutive units with the same code
    order = sorted(code)
    i = 0
    while i < len(order):
        j = i
        c = code[order[i]]
        while j + 1 < len(order) and order[j + 1] == order[j] + 1 and code[order[j + 1]] == c:
            j += 1
        s0, e0 = starts[order[i]], ends[order[j]]
        count = j - i + 1
        what = {REPEATED_SENTENCE: "repeated sentence", REPEATED_PLEASANTRY: "repeated pleasantry",
                SIGNOFF_PILEUP: "extra sign-off"}[c]
        detail = f"{what}: {_clip(text[starts[order[i]]:ends[order[i]]])!r}"
        if count > 1:
            detail += f" (+{count - 1} more)"
        findings.append(Finding(c, (s0, e0), detail))
        i = j + 1
    return findings


def _clip(s: str, limit: int = 80) -> str:
    return s if len(s) <= limit else s[:limit - 3] + "..."


def _name_line(text: str, start: int, end: int, key: str) -> bool:
    raw = text[start:end]
    return key.count(" ") < 4 and raw[-1] not in _TERMINATORS and (raw[0].isupper() or raw[0] in "[-\u2014")


def _tandem_repeats(U: _Units, n: int, cfg: DetectorConfig):
    """Indices (< n), in order, of units that repeat the block of sentences just before them (a loop)."""
    keys, oks = U.key, U.ok
    # units the rules skip get a distinct integer, so they never equal anything
    seq: list[object] = [k if (o and k) else i for i, (k, o) in enumerate(zip(keys[:n], oks[:n]))]
    present = [k for k in seq if isinstance(k, str)]
    if len(present) == len(set(present)):
        return ()
    marked = bytearray(n)
    for p in range(1, min(cfg.max_loop_period, n // 2) + 1):
        eq = bytes(map(operator.eq, seq[p:], seq))  # eq[i] is 1 when seq[i + p] == seq[i]
        for m in re.finditer(b"\x01{%d,}" % p, eq):
            first = m.start() + p  # position of the first unit of the first repeated copy
            if sum(U.words(k) for k in range(first, first + p)) < cfg.min_loop_words:
                continue
            marked[first:m.end() + p] = b"\x01" * (m.end() - m.start())
    return compress(range(n), marked)


def _truncated(text: str, masked: str, U: _Units, lines: _Lines, cfg: DetectorConfig,
               weak: bool = True) -> bool:
    """Whether the last unit is a fragment cut off mid-sentence."""
    last = len(U) - 1
    key = U.key[last]
    if not U.ok[last] or not key:
        return False
    tail = text.rstrip()
    if not tail or tail[-1] in COMPLETE_END or _ends_with_emoji(tail):
        return False
    raw = masked[U.start[last]:U.end[last]].rstrip()
    if not raw or raw[-1] in COMPLETE_END:
        return False
    words = key.split(" ")
    last_word = words[-1]
    if raw[-1] in _STRONG_CUT_END or last_word in _DANGLING:
        return True
    for other in set(U.key[:last]):  # units the rules skip have empty keys
        if len(other) > len(key) and other.startswith(key):
            return True  # a looping sentence cut short
    if not weak or len(words) < cfg.min_fragment_words or not last_word.isalpha() or last_word in _ABBREVIATIONS:
        return False
    if closing_kind(key) is not None:
        return False
    # weak evidence: only when a complete sentence precedes it in the same paragraph
    ln_index = U.line[last]
    same_line_before = last > 0 and U.line[last - 1] == ln_index
    continues_para = (ln_index > 0 and lines.kind[ln_index - 1] == PROSE
                      and lines.para[ln_index - 1] == lines.para[ln_index])
    return same_line_before or continues_para
