"""prepare: read the user's prompts, check them, give every row a stable id.

A source is anything `cai_core.data.inputs` opens: a JSONL file (local or s3://), ``builtin:<name>``, a
saved dataset directory, parquet/arrow files, or ``hf:<id>[@split]``. `format` maps each row to a prompt
(`cai_core.data.formats`: plain, hh, messages, or auto). `mix` reads several sources by counts or weights.
Reading stops once `max_prompts` prompts are kept, so a large streamed dataset is not read to the end.

Output rows are {"id", "prompt", "category"} (plus "train_overlap" on a flagged evaluation prompt). Rows are
dropped only with a reason code, each counted as ``dropped_<code>``: `no_user_turn`, `empty_prompt`,
`duplicate_prompt`, `train_overlap` (evaluation prompts that occur among the training prompts),
`over_mix_share` (a weighted mix read beyond a source's share), `over_max_prompts` (rows after the cap).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cai_core import records
from cai_core.config.base import ConfigBase, require
from cai_core.data import formats, inputs
from cai_core.data.overlap import OverlapIndex
from cai_core.errors import InputError
from cai_core.progress import log
from cai_core.runtime.artifacts import PROMPTS
from cai_core.stages.base import StageResult

BUILTIN_SETS = ("prompts", "eval_prompts")
DROP_REASONS = ("no_user_turn", "empty_prompt", "duplicate_prompt", "train_overlap", "over_mix_share",
                "over_max_prompts")
Format = Literal["auto", "plain", "hh", "messages"]


@dataclass(frozen=True)
class MixSource(ConfigBase):
    #: The source: a path, s3:// URI, dataset directory, parquet/arrow file, hf:<id>[@split] or builtin:<name>.
    source: str = ""
    #: Take this many prompts from it (0 = set weight instead).
    count: int = 0
    #: Its share of the mix (weights are normalised; 0 = set count instead).
    weight: float = 0.0
    #: Row recipe: auto, plain, hh (HH-RLHF transcript: first human turn) or messages (chat list: first user turn).
    format: Format = "auto"
    #: Field holding the prompt (or the transcript / message list).
    prompt_field: str = "prompt"
    #: Category of its rows; empty: the row's category field, else "unknown".
    category: str = ""
    #: Name in the metrics (mix.<name>.rows); empty: its position (0, 1, ...).
    name: str = ""

    def validate(self) -> None:
        require(bool(self.source), "source", "must not be empty")
        require(self.count >= 0, "count", "must be >= 0")
        require(self.weight >= 0, "weight", "must be >= 0")
        require((self.count > 0) != (self.weight > 0), "count", "set exactly one of count and weight (> 0)")
        require(bool(self.prompt_field), "prompt_field", "must not be empty")


@dataclass(frozen=True)
class PrepareConfig(ConfigBase):
    #: Prompts: a local JSONL path or s3:// URI, builtin:prompts / builtin:eval_prompts, a saved dataset directory
    #: (`<dir>@<split>`), parquet/arrow files, or hf:<id>[@split][?name=<config>&revision=<rev>&data_dir=<dir>].
    source: str = "builtin:prompts"
    #: Row recipe: auto (decided from the first row, logged and counted as format_<name>), plain (the prompt field),
    #: hh (HH-RLHF transcript: the first human turn) or messages (chat list: the first user turn).
    format: Format = "auto"
    #: Field of each row that holds the prompt (hh / messages also try transcript / messages, chosen, ...).
    prompt_field: str = "prompt"
    #: Optional field holding a category label (e.g. red_team / helpful); absent -> "unknown".
    category_field: str = "category"
    #: Keep at most this many prompts (0 = all), taken in source order after de-duplication; reading stops there.
    max_prompts: int = 0
    #: Several sources instead of `source`, each {source, count or weight, format, prompt_field, category, name};
    #: weights share max_prompts (0: as many as the scarcest source allows); counts are taken as they are.
    mix: tuple[MixSource, ...] = ()

    def validate(self) -> None:
        require(self.max_prompts >= 0, "max_prompts", "must be >= 0 (0 keeps every prompt)")
        require(bool(self.prompt_field), "prompt_field", "must not be empty")
        if self.mix:
            by_count = {m.count > 0 for m in self.mix}
            require(len(by_count) == 1, "mix", "give every source a count, or every source a weight, not both kinds")
            names = [m.name or str(i) for i, m in enumerate(self.mix)]
            require(len(set(names)) == len(names), "mix", f"source names must be unique, got {names}")

    def sources(self) -> tuple[str, ...]:
        """Every source string this section reads."""
        return tuple(m.source for m in self.mix) if self.mix else (self.source,)


@dataclass(frozen=True)
class EvalPromptsConfig(PrepareConfig):
    #: Held-out prompts: a source as for prompts.source.
    source: str = "builtin:eval_prompts"
    #: Evaluation prompts that also occur among the training prompts (exactly or near-exactly): drop them
    #: (counted as dropped_train_overlap), flag them (a train_overlap field on the row), or off (no check).
    overlap: Literal["drop", "flag", "off"] = "drop"
    #: Near-duplicate threshold: Jaccard similarity of the normalised texts' word n-grams (1.0 = exact only).
    overlap_threshold: float = 0.8
    #: Words per n-gram of the overlap check.
    overlap_ngram: int = 3

    def validate(self) -> None:
        super().validate()
        require(0 < self.overlap_threshold <= 1, "overlap_threshold", "must be in (0, 1]")
        require(self.overlap_ngram >= 1, "overlap_ngram", "must be >= 1")

    @property
    def checks_overlap(self) -> bool:
        """The step reads the training prompts (the `prompts` section) to check the overlap."""
        return self.overlap != "off"


@dataclass
class _Reader:
    """Shared state while reading one section's sources: seen prompts, counts, the overlap check."""

    category_field: str
    counts: Counter
    overlap: OverlapIndex | None = None
    overlap_mode: str = "off"
    #: Log what `auto` chose and the mix (the stage does; a check before a run does not).
    verbose: bool = False
    seen: set = None  # type: ignore[assignment]
    details: dict = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.seen, self.details = set(), {"formats": {}}

    def read(self, source: str, fmt: str, prompt_field: str, category: str, want: int,
             rest: str = "over_max_prompts") -> list[dict]:
        """Usable rows of `source`; stops once `want` (> 0) are kept (the unread rows of a file count as `rest`)."""
        opened = inputs.open_rows(source, builtins=BUILTIN_SETS)
        rows: list[dict] = []
        recipe = field = None
        read = 0
        for line, row in opened.rows():
            read += 1
            if recipe is None:
                recipe, field = formats.resolve(fmt, row, prompt_field)
                self._record_format(opened.where, fmt, recipe, field)
            text = formats.extract(recipe, field, row, opened.where, line)
            label = category or row.get(self.category_field, "unknown")
            if not isinstance(label, str):
                raise InputError(f"expected a string, got {type(label).__name__}", path=opened.where, line=line,
                                 field=self.category_field)
            if text is None:
                self.counts["dropped_no_user_turn"] += 1
                continue
            prompt = text.strip()
            if not prompt:
                self.counts["dropped_empty_prompt"] += 1
                continue
            if prompt in self.seen:
                self.counts["dropped_duplicate_prompt"] += 1
                continue
            self.seen.add(prompt)
            out = {"id": records.row_id(prompt), "prompt": prompt, "category": label}
            if self.overlap is not None:
                self.counts["overlap_checked"] += 1
                match = self.overlap.match(prompt)
                if match is not None:
                    self.counts[f"overlap_{match.kind}"] += 1
                    if self.overlap_mode == "drop":
                        self.counts["dropped_train_overlap"] += 1
                        continue
                    self.counts["flagged_train_overlap"] += 1
                    out["train_overlap"] = {"train_id": match.train_id, "similarity": match.similarity,
                                            "kind": match.kind}
            rows.append(out)
            if want and len(rows) >= want:
                break
        if opened.length is not None:  # a file read to its end anyway: the rest is counted, not silently lost
            self.counts[f"dropped_{rest}"] += opened.length - read
        self.counts["rows_in"] += opened.length if opened.length is not None else read
        if read == 0:
            raise InputError("no rows", path=opened.where)
        return rows

    def _record_format(self, where: str, asked: str, recipe: str, field: str) -> None:
        self.counts[f"format_{recipe}"] += 1
        self.details["formats"][where] = {"format": recipe, "field": field, "asked": asked}
        if asked == "auto" and self.verbose:
            log(f"prepare: {where}: format auto -> {recipe} (field '{field}')")


def load_prompts(cfg: PrepareConfig, workdir: Path | None = None, train: PrepareConfig | None = None
                 ) -> tuple[list[dict], dict[str, float]]:
    """The usable prompt rows of `cfg` and the counts; `train` (with an EvalPromptsConfig) checks the overlap.

    `workdir` is accepted for callers of the former signature; downloads go to temporary folders.
    """
    rows, counts, _ = _load(cfg, train)
    return rows, counts


def _load(cfg: PrepareConfig, train: PrepareConfig | None, verbose: bool = False
          ) -> tuple[list[dict], dict[str, float], dict]:
    counts: Counter = Counter({f"dropped_{r}": 0 for r in DROP_REASONS})
    counts["rows_in"] = 0
    reader = _Reader(cfg.category_field, counts, verbose=verbose)
    checks = isinstance(cfg, EvalPromptsConfig) and cfg.checks_overlap and train is not None
    if checks:
        train_rows, _, _ = _load(train, None)
        reader.overlap = OverlapIndex(((r["id"], r["prompt"]) for r in train_rows), cfg.overlap_threshold,
                                      cfg.overlap_ngram)
        reader.overlap_mode = cfg.overlap
        counts["overlap_checked"] = counts["overlap_exact"] = counts["overlap_near"] = 0
        counts[f"{'dropped' if cfg.overlap == 'drop' else 'flagged'}_train_overlap"] += 0
        counts["train_prompts"] = len(train_rows)
    if cfg.mix:
        rows = _mix(cfg, reader)
    else:
        rows = reader.read(cfg.source, cfg.format, cfg.prompt_field, "", cfg.max_prompts)
    if not rows:
        where = ", ".join(cfg.sources())
        raise InputError(f"no usable prompts in field '{cfg.prompt_field}' (all empty, duplicates"
                         f"{', overlapping the training prompts' if checks else ''} or without a user turn)",
                         path=where)
    counts["rows_out"] = len(rows)
    if checks:
        overlapping = counts["overlap_exact"] + counts["overlap_near"]
        counts["overlap_rate"] = overlapping / counts["overlap_checked"] if counts["overlap_checked"] else 0.0
        log(f"prepare: {overlapping} of {counts['overlap_checked']} evaluation prompts overlap the "
            f"{counts['train_prompts']} training prompts ({cfg.overlap})")
    return rows, dict(counts), reader.details


def _shares(weights: list[float], total: int) -> list[int]:
    """`total` split by `weights` (largest remainder, ties to the earlier source)."""
    raw = [total * w / sum(weights) for w in weights]
    out = [int(x) for x in raw]
    for i in sorted(range(len(raw)), key=lambda i: (-(raw[i] - out[i]), i))[:total - sum(out)]:
        out[i] += 1
    return out


def _mix(cfg: PrepareConfig, reader: _Reader) -> list[dict]:
    names = [m.name or str(i) for i, m in enumerate(cfg.mix)]
    by_count = cfg.mix[0].count > 0
    if by_count:
        targets = [m.count for m in cfg.mix]
    elif cfg.max_prompts:
        targets = _shares([m.weight for m in cfg.mix], cfg.max_prompts)
    else:
        targets = [0] * len(cfg.mix)  # read every source, then cut to the ratio the scarcest allows
    parts = [reader.read(m.source, m.format, m.prompt_field, m.category, t, rest="over_mix_share")
             for m, t in zip(cfg.mix, targets)]
    if not by_count and not cfg.max_prompts:
        total_w = sum(m.weight for m in cfg.mix)
        n = min(len(p) / (m.weight / total_w) for p, m in zip(parts, cfg.mix))
        targets = _shares([m.weight for m in cfg.mix], int(n + 1e-9))
        for i, part in enumerate(parts):
            reader.counts["dropped_over_mix_share"] += max(0, len(part) - targets[i])
            parts[i] = part[:targets[i]]
    for name, part, target in zip(names, parts, targets):
        reader.counts[f"mix.{name}.rows"] = len(part)
        reader.counts[f"mix.{name}.target"] = target
        if len(part) < target:
            reader.counts[f"mix.{name}.short"] = target - len(part)
            log(f"prepare: mix source {name} gave {len(part)} of the {target} prompts asked")
    # interleave in proportion (each source's k-th row at (k + 0.5) / n), so any prefix keeps the ratio
    keyed = [((k + 0.5) / len(part), i, row) for i, part in enumerate(parts) for k, row in enumerate(part)]
    rows = [row for _, _, row in sorted(keyed, key=lambda x: (x[0], x[1]))]
    if cfg.max_prompts and len(rows) > cfg.max_prompts:
        reader.counts["dropped_over_max_prompts"] += len(rows) - cfg.max_prompts
        rows = rows[:cfg.max_prompts]
    if reader.verbose:
        log("prepare: mix " + ", ".join(f"{n}={int(reader.counts[f'mix.{n}.rows'])}" for n in names))
    return rows


def run(cfg: PrepareConfig, out_dir: Path, train: PrepareConfig | None = None) -> StageResult:
    """Write the checked prompts; `train`: the training prompts' section, for an evaluation set's overlap check."""
    rows, counts, details = _load(cfg, train, verbose=True)
    out = Path(out_dir) / PROMPTS
    records.write_jsonl(out, rows)
    return StageResult(outputs={"prompts": out}, metrics=counts, details=details)


def source_fingerprints(cfg: Any) -> list[str]:
    """What the data behind a prepare section's sources is now (see `inputs.fingerprint`)."""
    return [inputs.fingerprint(s, BUILTIN_SETS) for s in cfg.sources()]


__all__ = ["BUILTIN_SETS", "DROP_REASONS", "EvalPromptsConfig", "MixSource", "PrepareConfig", "load_prompts", "run",
           "source_fingerprints"]
