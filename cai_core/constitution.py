"""The constitution: critique/revision requests, judge principles, few-shot examples.

A constitution is a YAML file (see ``constitutions/default.yaml``). Loading is
strict: every unknown key, missing or empty string, duplicate id and empty
section is refused with an error that names the file and the key path, e.g.
``my.yaml: critique_revision[3].critiqe: unknown key (did you mean 'critique'?)``.

Stages draw one entry per row with `draw_critique` / `draw_principle`. The
draw hashes (seed, row id, round) with sha256, so it is the same in every
process and Python version (unlike ``hash()``) and close to uniform.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from cai_core.errors import ConfigError, InputError

_ID_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_TOP_KEYS = ("name", "version", "description", "critique_revision", "judge", "few_shot")
_BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class CritiquePair:
    """A critique request and the revision request that goes with it (Stage 1)."""

    id: str
    critique: str
    revision: str


@dataclass(frozen=True)
class JudgePrinciple:
    """A principle phrased as a choice between two responses (judge stage).

    `accuracy` and `support` are optional numbers written by constitution
    discovery (how well the principle predicts known preferences, and on how
    much data); hand-written principles leave them out.
    """

    id: str
    principle: str
    accuracy: float | None = None
    support: float | None = None


@dataclass(frozen=True)
class FewShot:
    """A worked example (prompt, flawed answer, critique, revision) for base-model framing."""

    prompt: str
    response: str
    critique: str
    revision: str


@dataclass(frozen=True)
class Constitution:
    name: str
    version: int
    description: str
    critique_revision: tuple[CritiquePair, ...]
    judge: tuple[JudgePrinciple, ...]
    few_shot: tuple[FewShot, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain data in file order; optional judge metadata is left out when unset."""
        judge = []
        for p in self.judge:
            entry: dict[str, Any] = {"id": p.id, "principle": p.principle}
            for key in ("accuracy", "support"):
                if getattr(p, key) is not None:
                    entry[key] = getattr(p, key)
            judge.append(entry)
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "critique_revision": [dataclasses.asdict(c) for c in self.critique_revision],
            "judge": judge,
            "few_shot": [dataclasses.asdict(f) for f in self.few_shot],
        }

    def to_yaml(self) -> str:
        """YAML text that `load_constitution` reads back to an equal Constitution."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=100)

    def fingerprint(self) -> str:
        """16 hex chars of sha256 over the canonical content (independent of YAML layout)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def draw_critique(self, row_id: str, round_index: int, seed: int) -> CritiquePair:
        """The critique/revision pair for one row and round, fixed by (seed, row_id, round_index)."""
        return self.critique_revision[_draw_index("critique", seed, row_id, round_index, len(self.critique_revision))]

    def draw_principle(self, row_id: str, seed: int) -> JudgePrinciple:
        """The judge principle for one row, fixed by (seed, row_id)."""
        return self.judge[_draw_index("judge", seed, row_id, 0, len(self.judge))]


def _draw_index(kind: str, seed: int, row_id: str, round_index: int, n: int) -> int:
    # `kind` keeps critique and judge draws independent for the same row.
    # 64 bits modulo n has a bias of order n / 2**64: negligible.
    blob = json.dumps([kind, int(seed), str(row_id), int(round_index)], separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(blob.encode("utf-8")).digest()[:8], "big") % n


# ---------------------------------------------------------------- loading


def load_constitution(source: str | os.PathLike = "default") -> Constitution:
    """Load "default" / "builtin:<name>" (packaged) or a YAML file path, fully validated."""
    source = str(source)
    if source == "default" or source.startswith(_BUILTIN_PREFIX):
        name = source[len(_BUILTIN_PREFIX):] if source.startswith(_BUILTIN_PREFIX) else "default"
        ref = resources.files("cai_core.constitutions").joinpath(f"{name}.yaml")
        if not ref.is_file():
            known = sorted(p.name[:-5] for p in resources.files("cai_core.constitutions").iterdir()
                           if p.name.endswith(".yaml"))
            raise ConfigError(f"constitution: no built-in constitution {name!r} (built-in: {', '.join(known)})")
        return parse_constitution_text(ref.read_text(encoding="utf-8"), where=f"builtin:{name}")
    if not os.path.exists(source):
        raise InputError("constitution file not found", path=source)
    if os.path.isdir(source):
        raise InputError("is a directory, expected a constitution YAML file", path=source)
    try:
        with open(source, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise InputError(f"not valid UTF-8 (byte {exc.start})", path=source) from None
    return parse_constitution_text(text, where=source)


def parse_constitution_text(text: str, where: str = "<string>") -> Constitution:
    """Parse and validate constitution YAML text; `where` names the source in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"not valid YAML ({problem})", path=where, line=line) from None
    if data is None:
        raise InputError("empty constitution file", path=where)
    return parse_constitution(data, where)


def parse_constitution(data: Any, where: str = "<dict>") -> Constitution:
    """Validate plain data (as read from YAML) into a Constitution."""
    v = _Validator(where)
    top = v.mapping(data, "", _TOP_KEYS, required=("name", "version", "critique_revision", "judge"))
    version = top["version"]
    if isinstance(version, bool) or not isinstance(version, int):
        v.fail("version", f"expected an integer, got {version!r}")

    pairs = tuple(CritiquePair(**v.strings(entry, path, ("id", "critique", "revision")))
                  for path, entry in v.section(top, "critique_revision", min_len=1))
    judge = []
    for path, entry in v.section(top, "judge", min_len=1):
        fields = v.strings(entry, path, ("id", "principle"), optional=("accuracy", "support"))
        for key in ("accuracy", "support"):
            if key in entry:
                fields[key] = v.number(entry[key], f"{path}.{key}")
        judge.append(JudgePrinciple(**fields))
    shots = tuple(FewShot(**v.strings(entry, path, ("prompt", "response", "critique", "revision")))
                  for path, entry in v.section(top, "few_shot", min_len=0))

    v.unique_ids("critique_revision", pairs)
    v.unique_ids("judge", judge)
    return Constitution(
        name=v.string(top["name"], "name"),
        version=version,
        description=v.string(top.get("description", ""), "description", allow_empty=True),
        critique_revision=pairs,
        judge=tuple(judge),
        few_shot=shots,
    )


class _Validator:
    """Checks with errors of the form '<file>: <key path>: <problem>'."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, path: str, message: str) -> None:
        raise ConfigError(f"{self.where}: {path or '<top level>'}: {message}")

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            self.fail(path, f"expected a mapping, got {type(value).__name__}")
        for key in value:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else f" (allowed: {', '.join(allowed)})"
                self.fail(f"{path}.{key}" if path else str(key), "unknown key" + extra)
        for key in required:
            if key not in value:
                self.fail(f"{path}.{key}" if path else key, "missing")
        return value

    def section(self, top: dict, key: str, min_len: int) -> list[tuple[str, Any]]:
        value = top.get(key)
        if value is None:
            value = []
        if not isinstance(value, list):
            self.fail(key, f"expected a list, got {type(value).__name__}")
        if len(value) < min_len:
            self.fail(key, f"needs at least {min_len} entry, got none")
        return [(f"{key}[{i}]", entry) for i, entry in enumerate(value)]

    def strings(self, entry: Any, path: str, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
        self.mapping(entry, path, keys + optional, required=keys)
        out = {k: self.string(entry[k], f"{path}.{k}") for k in keys}
        if "id" in out and not _ID_RE.match(out["id"]):
            self.fail(f"{path}.id", f"expected a kebab-case id (lowercase letters, digits, '-'), got {out['id']!r}")
        return out

    def string(self, value: Any, path: str, allow_empty: bool = False) -> str:
        if not isinstance(value, str):
            self.fail(path, f"expected a string, got {type(value).__name__} {value!r}"[:200])
        if not allow_empty and not value.strip():
            self.fail(path, "must not be empty")
        return value.strip()

    def number(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(path, f"expected a finite number, got {value!r}")
        return float(value)

    def unique_ids(self, section: str, entries: Any) -> None:
        seen: dict[str, int] = {}
        for i, entry in enumerate(entries):
            if entry.id in seen:
                self.fail(f"{section}[{i}].id", f"duplicate id {entry.id!r} (first used at {section}[{seen[entry.id]}])")
            seen[entry.id] = i
