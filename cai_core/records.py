"""Row schemas and JSONL io.

Reading is schema-checked: every error names the file, the 1-based line and
the field. Writing is atomic: rows go to a temporary file that is renamed into
place only once complete, so a crash never leaves a half-written artifact.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from cai_core.errors import InputError

#: Lines longer than this are refused (a runaway generation or a binary file).
MAX_LINE_BYTES = 4 * 1024 * 1024

# Schemas: field -> type (or tuple of types). Extra fields are kept as they are.
PROMPT = {"id": str, "prompt": str}
REVISION = {"id": str, "prompt": str, "response": str, "revisions": list, "final": str}
SFT_ROW = {"id": str, "prompt": str, "response": str}
PAIR = {"id": str, "prompt": str, "response_a": str, "response_b": str}
PREFERENCE = {"id": str, "prompt": str, "chosen": str, "rejected": str, "principle": str, "confidence": float}
ANSWER = {"id": str, "prompt": str, "response": str}


def row_id(*parts: Any) -> str:
    """A stable id from row content, so reruns and joins are deterministic."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _type_label(tp: Any) -> str:
    names = {str: "a string", float: "a number", int: "an integer", list: "a list", dict: "an object", bool: "true/false"}
    if isinstance(tp, tuple):
        return " or ".join(names.get(t, t.__name__) for t in tp)
    return names.get(tp, tp.__name__)


def check_row(row: Any, schema: Mapping[str, Any], path: str, line: int) -> dict:
    if not isinstance(row, dict):
        raise InputError(f"expected a JSON object, got {type(row).__name__}", path=path, line=line)
    for field, tp in schema.items():
        if field not in row:
            raise InputError("missing", path=path, line=line, field=field)
        value = row[field]
        ok_types = tp if isinstance(tp, tuple) else (tp,)
        if float in ok_types:
            ok_types = ok_types + (int,)
        if isinstance(value, bool) and bool not in ok_types or not isinstance(value, ok_types):
            raise InputError(f"expected {_type_label(tp)}, got {type(value).__name__} {str(value)[:40]!r}",
                             path=path, line=line, field=field)
    return row


def iter_jsonl(path: str | os.PathLike, schema: Mapping[str, Any] | None = None,
               max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[dict]:
    """Yield the rows of a JSONL file, checked against `schema`; blank lines are skipped."""
    path = str(path)
    if not os.path.exists(path):
        raise InputError("file not found", path=path)
    if os.path.isdir(path):
        raise InputError("is a directory, expected a JSONL file", path=path)
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if len(raw) > max_line_bytes:
                raise InputError(f"line is {len(raw) / 1e6:.1f} MB, above the {max_line_bytes / 1e6:.1f} MB limit per row",
                                 path=path, line=lineno)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"not valid UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 4]!r})",
                                 path=path, line=lineno) from None
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(f"not valid JSON ({exc.msg} at column {exc.colno})", path=path, line=lineno) from None
            yield check_row(row, schema or {}, path, lineno)


def read_jsonl(path: str | os.PathLike, schema: Mapping[str, Any] | None = None, *, allow_empty: bool = False,
               max_line_bytes: int = MAX_LINE_BYTES) -> list[dict]:
    rows = list(iter_jsonl(path, schema, max_line_bytes))
    if not rows and not allow_empty:
        raise InputError("no rows (the file is empty)", path=str(path))
    return rows


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write `data` to `path` through a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_line(row: Mapping[str, Any]) -> bytes:
    """One JSONL line as UTF-8; a row holding a lone surrogate (read from a JSON escape) keeps it escaped."""
    line = json.dumps(row, ensure_ascii=False)
    try:
        return (line + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(row, ensure_ascii=True) + "\n").encode("ascii")


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write rows atomically (complete or not at all); return how many were written."""
    lines = [json_line(row) for row in rows]
    atomic_write(path, b"".join(lines))
    return len(lines)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise InputError("file not found", path=str(path)) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg})", path=str(path), line=exc.lineno) from None
