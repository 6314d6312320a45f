"""clean (Stage 2): clean self-generated text before anything trains on it.

Used at two points of the pipeline: the final revisions before SFT, and both
responses of every pair before judging; `cai clean` (`clean_file`) runs it on
a user's own JSONL. Each cleaned field `f` gets `f_cleaned` (the text to use
downstream) and `f_cleanup`, the per-text record::

    {"variant": "hybrid", "changed": true, "reasons": ["repeated_pleasantry", "gopher_top_2gram"],
     "source": "llm", "sent_to_llm": true, "llm_trigger": ["gopher_top_2gram"],
     "verdict": {"ok": true, "reasons": [], "detail": ""}, "fallback": null, "flags": []}

* ``reasons``: stable codes of what was fixed: the detector codes
  (`cai_core.metrics.detectors`) the rules acted on, and those an accepted LLM
  edit made disappear; ``llm_edit`` for an accepted LLM edit no detector names;
* ``source``: where `f_cleaned` comes from: ``input`` (passed through), ``rule``
  or ``llm`` (an LLM edit that passed verification);
* ``verdict``: the verifier's verdict on the LLM reply (None when none was sent
  or none came back); ``fallback``: why the rule output was used instead of an
  LLM reply (a `cai_core.cleaning.verify` code, or ``too_long``: the text was
  too long to send), else None;
* ``flags``: input conditions: ``empty_input`` (an empty or blank text, passed
  through), ``oversized`` (longer than `max_text_chars`, passed through).

Variants:

* ``none``: pass through (the collapsing baseline);
* ``rule``: the deterministic cleaner of `cai_core.cleaning.rule`;
* ``llm``: every text goes to the teacher under the cleanup contract
  (`cai_core.tasks.clean_llm`), with no rule pass first; every reply is verified
  (`cai_core.cleaning.verify`), and a reply that fails falls back to the rule
  output of the text;
* ``hybrid``: the rules first; only texts on which a detector still fires
  (`hybrid_codes`) go to the LLM, whose verified edit replaces the rule output.

Identical requests (the same text and prompt, e.g. two equal responses of a
pair) are sent once. A remote teacher gets all requests of the stage in one
call (the client pipelines them); an in-process model `llm.batch_size` per call.

Bad input: every row is checked before anything is cleaned or sent, so a bad
row ends the stage with one error naming file, line and field and no output:
a missing field, a value that is not a string, a prompt that is neither a
string nor null; undecodable bytes and malformed JSON are named by line when
read. An empty text and a text over `max_text_chars` pass through with a flag;
a text too long for the LLM keeps its rule output (``fallback: too_long``).
Mixed scripts are the detectors' business (the prompt's scripts are the
target). Lone surrogates (valid JSON escapes, invalid UTF-8) are never sent to
the LLM (they cannot be encoded) and are written back
as escapes. Output files are written atomically: complete or not at all.

Stage metrics: rows, texts, changed (and changed_rate), emptied, ``reason_<code>``
counts, ``flag_<flag>`` counts, and for llm/hybrid: llm_sent (texts sent),
llm_share (their share of texts), llm_requests (distinct requests), llm_calls
(calls to the model), llm_accepted, llm_edited, llm_residual (accepted texts on
which an edit detector still fires), fallbacks (``fallback_<code>``),
``verify_failed_<code>`` (every failed check, several per reply possible),
llm_tokens_in / llm_tokens_out (the backend's usage when it reports one, else
estimated from characters; llm_tokens_estimated says which), and with the LLM
stance classifier llm_stance_requests.

A request that fails (the backend's failed-row marker) falls back as
``request_failed``; a problem with the endpoint itself (key, URL, model, error
budget) raises the backend's error and the stage writes nothing.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from cai_core import records
from cai_core.cleaning.rule import RuleCleanConfig, rule_clean
from cai_core.cleaning.stance import LLMStanceClassifier
from cai_core.cleaning.verify import REQUEST_FAILED, UNPARSED, Verdict, VerifyConfig, verify
from cai_core.config.base import ConfigBase, require
from cai_core.errors import ConfigError, InputError
from cai_core.llm.base import ChatModel, Sampling, batches
from cai_core.metrics.detectors import ALL_CODES, EDIT_CODES, detect
from cai_core.progress import Progress, log
from cai_core.runtime.artifacts import CLEANED
from cai_core.stages.base import StageResult
from cai_core.tasks import clean_llm

VARIANTS = ("none", "rule", "llm", "hybrid")
LLM_VARIANTS = ("llm", "hybrid")
LLM_EDIT = "llm_edit"
TOO_LONG = "too_long"
EMPTY_INPUT = "empty_input"
OVERSIZED = "oversized"


@dataclass(frozen=True)
class CleanConfig(ConfigBase):
    #: none (pass through, the collapsing baseline), rule (deterministic), llm (teacher under the cleanup contract, verified) or hybrid (rules, then the teacher where detectors still fire).
    variant: Literal["none", "rule", "llm", "hybrid"] = "rule"
    #: Settings of the rule cleaner.
    rule: RuleCleanConfig = RuleCleanConfig()
    #: Field holding the prompt (its language is the target language of the text); a row without it is cleaned without a prompt.
    prompt_field: str = "prompt"
    #: Settings of the LLM cleaner (variants llm and hybrid).
    llm: clean_llm.LLMCleanConfig = clean_llm.LLMCleanConfig()
    #: Checks every LLM reply must pass, else the rule output is kept (variants llm and hybrid).
    verify: VerifyConfig = VerifyConfig()
    #: hybrid: detector codes that, still firing on the rule output, send a text to the LLM.
    hybrid_codes: tuple[str, ...] = ALL_CODES
    #: Texts longer than this (characters) pass through uncleaned with the flag oversized (0: no limit).
    max_text_chars: int = 16_000_000
    #: Longest input row (one JSONL line) read, in bytes.
    max_row_bytes: int = 64 * 1024 * 1024

    def validate(self) -> None:
        require(bool(self.prompt_field), "prompt_field", "must not be empty")
        unknown = [c for c in self.hybrid_codes if c not in ALL_CODES]
        require(not unknown, "hybrid_codes", f"unknown reason code(s) {unknown}; known: {', '.join(ALL_CODES)}")
        require(self.max_text_chars >= 0, "max_text_chars", "must be >= 0 (0: no limit)")
        require(self.max_row_bytes >= 1024, "max_row_bytes", "must be >= 1024")

    @property
    def calls_teacher(self) -> bool:
        """The variant sends texts to the teacher (llm, hybrid)."""
        return self.variant in LLM_VARIANTS


# --------------------------------------------------------------------------- one text


@dataclass
class _Item:
    """One text of one row on its way through the cleaner."""

    row: int
    field: str
    text: str
    prompt: str | None
    record: dict
    cleaned: str = ""
    rule_text: str | None = None
    rule_reasons: tuple[str, ...] = ()
    llm_input: str | None = None       # what goes to the LLM (None: not sent)
    base: str = ""                     # what an LLM edit is measured against (the text, or its rule output)
    input_codes: frozenset = frozenset()  # detector codes firing on base
    request: int | None = None         # index into the distinct requests


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _sendable(text: str | None) -> str | None:
    """`text` without lone surrogates (invalid Unicode that cannot be sent as UTF-8)."""
    return _SURROGATE_RE.sub("", text) if text and _SURROGATE_RE.search(text) else text


def _record(variant: str) -> dict:
    return {"variant": variant, "changed": False, "reasons": [], "source": "input", "sent_to_llm": False,
            "llm_trigger": [], "verdict": None, "fallback": None, "flags": []}


def _codes(text: str, prompt: str | None, cfg: CleanConfig) -> frozenset:
    return frozenset(f.code for f in detect(text, prompt, cfg.rule.detector))


def _ordered(codes) -> list[str]:
    codes = set(codes)
    return [c for c in ALL_CODES if c in codes] + sorted(c for c in codes if c not in ALL_CODES)


def _check_rows(cfg: CleanConfig, rows: Sequence[Any], fields: tuple[str, ...], path: str) -> None:
    """Every row and field checked before anything is cleaned or sent: one error naming line and field."""
    if not fields:
        raise ConfigError("clean: name at least one field to clean")
    dup = sorted({f for f in fields if fields.count(f) > 1})
    if dup:
        raise ConfigError(f"clean: field(s) {dup} given twice")
    for line, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise InputError(f"expected a JSON object, got {type(row).__name__}", path=path, line=line)
        for f in fields:
            value = row.get(f)
            if not isinstance(value, str):
                raise InputError("missing" if f not in row else
                                 "is null, expected a string" if value is None else
                                 f"expected a string, got {type(value).__name__}", path=path, line=line, field=f)
        prompt = row.get(cfg.prompt_field)
        if prompt is not None and not isinstance(prompt, str):
            raise InputError(f"expected a string (or no prompt), got {type(prompt).__name__}", path=path, line=line,
                             field=cfg.prompt_field)


# --------------------------------------------------------------------------- the LLM pass


class _Usage:
    """Calls and tokens spent on the teacher: the backend's own usage when it reports one, else estimates."""

    def __init__(self, llm: ChatModel):
        self.llm = llm
        self.start = self._reported()
        self.calls = 0
        self.est_in = 0
        self.est_out = 0

    def _reported(self) -> tuple[int, int] | None:
        summary = getattr(self.llm, "summary", None)
        pin, pout = getattr(summary, "prompt_tokens", None), getattr(summary, "completion_tokens", None)
        return (pin, pout) if isinstance(pin, int) and isinstance(pout, int) else None

    def add(self, conversations: Sequence[Sequence[dict]], replies: Sequence[str]) -> None:
        self.calls += 1
        self.est_in += sum(clean_llm.estimate_tokens(m["content"]) for c in conversations for m in c)
        self.est_out += sum(clean_llm.estimate_tokens(r) for r in replies if isinstance(r, str))

    def metrics(self) -> dict[str, float]:
        end = self._reported()
        if self.start is not None and end is not None:
            tin, tout, est = end[0] - self.start[0], end[1] - self.start[1], 0
        else:
            tin, tout, est = self.est_in, self.est_out, 1
        return {"llm_calls": self.calls, "llm_tokens_in": tin, "llm_tokens_out": tout, "llm_tokens_estimated": est}


def _chat_all(llm: ChatModel, convs: list[list[dict]], sampling: list[Sampling], batch_size: int,
              usage: _Usage) -> list[str]:
    out: list[str] = []
    for c, s in zip(batches(llm, convs, batch_size), batches(llm, sampling, batch_size)):
        replies = list(llm.chat(c, s))
        if len(replies) != len(c):
            raise RuntimeError(f"the model returned {len(replies)} replies for {len(c)} conversations")
        usage.add(c, replies)
        out += replies
    return out


def _llm_pass(cfg: CleanConfig, items: list[_Item], llm: ChatModel, counts: Counter) -> dict[str, float]:
    """Send every item with an llm_input, verify the replies, set cleaned/record; returns usage metrics."""
    usage = _Usage(llm)
    todo = [it for it in items if it.llm_input is not None]
    requests: dict[tuple[str, str | None], int] = {}
    convs, sampling, nonces, inputs = [], [], [], []
    for it in todo:
        limit = clean_llm.reply_token_limit(it.llm_input, cfg.llm)
        if limit is None:
            it.record["fallback"] = TOO_LONG
            it.llm_input = None
            continue
        key = (it.llm_input, _sendable(it.prompt))
        if key not in requests:
            requests[key] = len(convs)
            conv = clean_llm.format_input(it.llm_input, key[1], cfg.llm.max_prompt_chars)
            convs.append(conv)
            nonces.append(clean_llm.nonce_of(conv))
            sampling.append(Sampling(temperature=0.0, top_p=1.0, max_new_tokens=limit, seed=cfg.llm.seed))
            inputs.append(it)
        it.request = requests[key]
        it.record["sent_to_llm"] = True
    counts["llm_sent"] += sum(1 for it in todo if it.request is not None)
    counts["llm_requests"] += len(convs)
    if convs:
        log(f"clean: {len(convs)} distinct texts to the LLM cleaner (model {getattr(llm, 'name', '?')})")
    replies = _chat_all(llm, convs, sampling, cfg.llm.batch_size, usage) if convs else []

    # parse, then (optionally) label stances with the LLM, then verify each distinct request once
    parsed = [clean_llm.parse_output(r, n) for r, n in zip(replies, nonces)]
    candidates: list[str | None] = []
    for p, it in zip(parsed, inputs):
        candidates.append(it.llm_input if p.status == "unchanged" else p.text)
    stances: list[tuple[str | None, str | None]] = [(None, None)] * len(convs)
    if cfg.verify.stance_classifier == "llm":
        ask = [i for i, c in enumerate(candidates) if c is not None and c.strip() != inputs[i].llm_input.strip()]
        if ask:
            clf = LLMStanceClassifier(llm, cfg.llm.batch_size, cfg.llm.seed)
            labels = clf.classify([inputs[i].llm_input for i in ask] + [candidates[i] for i in ask])
            usage.calls += clf.calls
            usage.est_in += int(clf.chars_in / 3.5)
            usage.est_out += clf.requests
            counts["llm_stance_requests"] += clf.requests
            for k, i in enumerate(ask):
                stances[i] = (labels[k], labels[len(ask) + k])
    verdicts: list[Verdict] = []
    for i, (p, cand, it) in enumerate(zip(parsed, candidates, inputs)):
        if p.status == "request_failed":
            verdicts.append(Verdict.failed(REQUEST_FAILED, detail=str(p.failure)[:300]))
        elif cand is None:
            verdicts.append(Verdict.failed(UNPARSED, detail=f"reply {p.status}"))
        else:
            before, after = stances[i]
            verdicts.append(verify(it.llm_input, cand, it.prompt, cfg.verify, stance_before=before, stance_after=after))

    for it in todo:
        rec = it.record
        if it.request is None:  # too long to send
            counts[f"fallback_{TOO_LONG}"] += 1
            counts["fallbacks"] += 1
            continue
        verdict = verdicts[it.request]
        rec["verdict"] = verdict.to_dict()
        if not verdict.ok:
            rec["fallback"] = verdict.primary
            counts["fallbacks"] += 1
            counts[f"fallback_{verdict.primary}"] += 1
            counts.update(f"verify_failed_{r}" for r in verdict.reasons)
            continue  # it.cleaned already holds the rule output
        cand = candidates[it.request]
        counts["llm_accepted"] += 1
        out = it.llm_input if cand.strip() == it.llm_input.strip() else cand
        if out is not it.llm_input:
            counts["llm_edited"] += 1
        if out == it.base:
            after, fixed = it.input_codes, set()
        else:
            after = _codes(out, it.prompt, cfg)
            fixed = set(it.input_codes - after) or {LLM_EDIT}
            rec["source"] = "llm"
        if cfg.variant == "llm":
            rec["source"] = "llm"
        if after & set(EDIT_CODES):
            counts["llm_residual"] += 1
        it.cleaned = out
        rec["reasons"] = _ordered(set(it.rule_reasons) | fixed) if cfg.variant == "hybrid" else _ordered(fixed)
    return usage.metrics()


# --------------------------------------------------------------------------- rows


def clean_rows(cfg: CleanConfig, rows: list[dict], fields: tuple[str, ...], path: str,
               llm: ChatModel | None = None) -> tuple[list[dict], dict]:
    """Clean `fields` of every row; returns (rows with <field>_cleaned and <field>_cleanup, counts).

    Every row is checked first (InputError naming line and field); llm is required for the
    llm and hybrid variants.
    """
    fields = tuple(fields)
    if cfg.variant in LLM_VARIANTS and llm is None:
        raise ConfigError(f"clean.variant {cfg.variant} needs a teacher model to clean with (llm=...): set "
                          "OPENAI_API_KEY or OPENAI_BASE_URL / --base-url, or use variant rule")
    _check_rows(cfg, rows, fields, path)
    counts: Counter = Counter()
    progress = Progress("clean", total=len(rows))
    items: list[_Item] = []
    for line, row in enumerate(rows, start=1):
        prompt = row.get(cfg.prompt_field)
        for f in fields:
            it = _Item(line - 1, f, row[f], prompt, _record(cfg.variant))
            it.cleaned = it.text
            _prepare(cfg, it)
            items.append(it)
        progress.update()
    usage: dict[str, float] = {}
    if cfg.variant in LLM_VARIANTS:
        usage = _llm_pass(cfg, items, llm, counts)

    out = [dict(row) for row in rows]
    for it in items:
        rec = it.record
        rec["changed"] = it.cleaned != it.text
        if not rec["changed"]:
            rec["reasons"] = []
        out[it.row][f"{it.field}_cleaned"] = it.cleaned
        out[it.row][f"{it.field}_cleanup"] = rec
        counts["texts"] += 1
        counts["changed"] += rec["changed"]
        counts.update(f"reason_{r}" for r in rec["reasons"])
        counts.update(f"flag_{f}" for f in rec["flags"])
        if not it.cleaned.strip() and it.text.strip():
            counts["emptied"] += 1
    result = {"rows": len(rows), **counts, **usage}
    if cfg.variant in LLM_VARIANTS:
        texts = counts.get("texts", 0)
        result.setdefault("llm_sent", 0)
        result.setdefault("fallbacks", 0)
        result["llm_share"] = result["llm_sent"] / texts if texts else 0.0
    return out, result


def _prepare(cfg: CleanConfig, it: _Item) -> None:
    """The rule pass of one text, and whether (and what) it sends to the LLM."""
    rec = it.record
    if not it.text.strip():
        rec["flags"].append(EMPTY_INPUT)
        return
    if cfg.max_text_chars and len(it.text) > cfg.max_text_chars:
        rec["flags"].append(OVERSIZED)
        return
    if cfg.variant == "none":
        return
    outcome = rule_clean(it.text, it.prompt, cfg.rule)
    it.rule_text, it.rule_reasons = outcome.text, outcome.reasons
    it.cleaned = outcome.text
    rec["source"] = "rule"
    rec["reasons"] = list(outcome.reasons)
    if cfg.variant == "rule":
        return
    if cfg.variant == "llm":
        it.llm_input = _sendable(it.text)
        it.base = it.text
        it.input_codes = _codes(it.text, it.prompt, cfg)
        return
    if not outcome.text.strip():
        return  # hybrid: the rules emptied it; nothing left to send
    codes = _codes(outcome.text, it.prompt, cfg)
    trigger = codes & set(cfg.hybrid_codes)
    if trigger:
        rec["llm_trigger"] = _ordered(trigger)
        it.llm_input = it.base = outcome.text  # the rules removed any lone surrogate (invalid_char)
        it.input_codes = codes


def clean_text(cfg: CleanConfig, text: str, prompt: str | None, llm: ChatModel | None = None) -> tuple[str, dict]:
    """Clean one text (answer to `prompt`): (cleaned text, its cleanup record)."""
    rows, _ = clean_rows(cfg.replace(prompt_field="prompt"), [{"prompt": prompt, "text": text}], ("text",), "<text>",
                         llm)
    return rows[0]["text_cleaned"], rows[0]["text_cleanup"]


# --------------------------------------------------------------------------- files


def stage_metrics(counts: dict) -> dict[str, float]:
    metrics = {k: float(v) for k, v in counts.items()}
    texts = counts.get("texts", 0)
    metrics["changed_rate"] = counts.get("changed", 0) / texts if texts else 0.0
    return metrics


def run(cfg: CleanConfig, rows_path: Path, out_dir: Path, fields: tuple[str, ...],
        llm: ChatModel | None = None) -> StageResult:
    """Clean `fields` of every row of `rows_path` into `out_dir/cleaned.jsonl`; llm is the teacher (llm/hybrid)."""
    if cfg.variant in LLM_VARIANTS and llm is None:
        raise ConfigError(f"clean.variant {cfg.variant} needs a teacher model (run(..., llm=load_teacher(...)))")
    rows = records.read_jsonl(rows_path, max_line_bytes=cfg.max_row_bytes)
    cleaned, counts = clean_rows(cfg, rows, fields, str(rows_path), llm)
    out = Path(out_dir) / CLEANED
    records.write_jsonl(out, cleaned)
    return StageResult(outputs={"rows": out}, metrics=stage_metrics(counts))


def clean_file(in_path: str | Path, out_path: str | Path, fields: Sequence[str], prompt_field: str = "prompt",
               variant: str = "rule", llm: ChatModel | None = None, cfg: CleanConfig | None = None) -> dict:
    """`cai clean`: clean `fields` of a JSONL file into `out_path` (atomically); returns the stage metrics.

    `cfg` (default CleanConfig()) gives every other setting; `variant` and `prompt_field` override it.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"clean: variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    cfg = (cfg or CleanConfig()).replace(variant=variant, prompt_field=prompt_field)
    if cfg.variant in LLM_VARIANTS and llm is None:
        raise ConfigError(f"cai clean --variant {variant} needs a teacher: --base-url / OPENAI_BASE_URL "
                          "(any OpenAI-compatible server) or OPENAI_API_KEY, and --model")
    rows = records.read_jsonl(in_path, max_line_bytes=cfg.max_row_bytes)
    cleaned, counts = clean_rows(cfg, rows, tuple(fields), str(in_path), llm)
    records.write_jsonl(out_path, cleaned)
    return stage_metrics(counts)


def to_sft_rows(rows: list[dict], field: str = "final") -> list[dict]:
    """(prompt, cleaned final revision) rows for SFT; rows whose text was emptied by cleaning are left out."""
    return [{"id": r["id"], "prompt": r["prompt"], "response": r[f"{field}_cleaned"]}
            for r in rows if r[f"{field}_cleaned"].strip()]
