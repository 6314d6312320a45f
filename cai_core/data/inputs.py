"""One input resolver: every place cai reads rows from a user's data goes through `open_rows`.

Used by prepare (`prompts.source`, `eval_prompts.source`, `prompts.mix`), discover (`discover.source`,
`cai discover --pairs`), `cai metrics --in` and `cai clean --in`. A source is one string:

* ``hf:<id>[@<split>][?name=<config>&revision=<rev>&data_dir=<dir>]`` - a Hugging Face Hub dataset,
  streamed (``datasets.load_dataset(..., streaming=True)``), so ``max_prompts`` rows are read, not the
  whole set; e.g. ``hf:Anthropic/hh-rlhf@train?data_dir=red-team-attempts``,
  ``hf:HuggingFaceH4/ultrafeedback_binarized@train_prefs``. The token is ``HF_TOKEN`` (as for `datasets`).
* a local dataset directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
  (``<dir>@<split>`` picks a split of a DatasetDict; default ``train``, else its only split), or a folder of
  parquet / arrow / JSONL / CSV files;
* a ``.parquet``, ``.arrow`` or ``.csv`` file (through `datasets`), local or ``s3://``;
* a ``.jsonl`` file, local or ``s3://``, read by `cai_core.records` (errors name the line);
* ``builtin:<name>`` - a set bundled in cai_core/data.

Rows come as ``(n, row)``: n is the 1-based line of a JSONL file, else the 1-based row number. Every
failure is an `InputError` with one line: the file or dataset, and what is wrong (no such file, unknown
dataset, split or config, no network, ``HF_HUB_OFFLINE=1`` with nothing cached, a gated dataset without a
token). `fingerprint(source)` changes whenever the data may have: file bytes, a saved dataset's own
fingerprints (and file sizes), an S3 object's ETag, or the commit the Hub serves for the revision.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qsl

from cai_core import records, storage
from cai_core.errors import CaiError, InputError

#: Files read through `datasets`, by suffix -> the `datasets` packaged builder.
DATASET_FILES = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv"}
JSONL_FILES = (".jsonl", ".json", ".ndjson")
#: Options of an ``hf:`` source after ``?``.
HF_OPTIONS = ("name", "revision", "data_dir")


@dataclass(frozen=True)
class Source:
    """A parsed source string."""

    #: builtin | jsonl | files (parquet/arrow/csv/a folder of them) | disk (save_to_disk) | hf
    kind: str
    #: The path, URI, built-in name or Hub id.
    location: str
    split: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    #: The string the user wrote (used in messages).
    text: str = ""


def parse(source: str, builtins: tuple[str, ...] = ()) -> Source:
    """Parse a source string (no I/O except looking at local paths)."""
    text = source
    if not source or not source.strip():
        raise InputError("empty source (set it to a file, a dataset directory, hf:<id>, s3:// or builtin:<name>)")
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        if builtins and name not in builtins:
            raise InputError(f"unknown built-in prompt set '{name}' (known: {', '.join(builtins)})", path=source)
        return Source("builtin", name, text=text)
    if source.startswith("hf:"):
        rest, _, query = source[3:].partition("?")
        dataset_id, _, split = rest.partition("@")
        options = dict(parse_qsl(query, keep_blank_values=False)) if query else {}
        unknown = sorted(set(options) - set(HF_OPTIONS))
        if unknown:
            raise InputError(f"unknown option(s) {', '.join(unknown)} (known: {', '.join(HF_OPTIONS)})", path=source)
        if not dataset_id.strip():
            raise InputError("no dataset id after 'hf:' (e.g. hf:Anthropic/hh-rlhf@train)", path=source)
        return Source("hf", dataset_id.strip(), split or None, options, text)
    split = None
    location = source
    if not storage.is_remote(source) and not os.path.exists(source) and "@" in source:
        head, _, tail = source.rpartition("@")
        if os.path.exists(head) and "/" not in tail:
            location, split = head, tail
    suffix = Path(location).suffix.lower()
    if storage.is_remote(location):
        if suffix in DATASET_FILES:
            return Source("files", location, split, text=text)
        return Source("jsonl", location, text=text)
    if os.path.isdir(location):
        p = Path(location)
        if (p / "dataset_dict.json").exists() or (p / "state.json").exists():
            return Source("disk", location, split, text=text)
        return Source("files", location, split, text=text)
    if suffix in DATASET_FILES:
        return Source("files", location, split, text=text)
    return Source("jsonl", location, text=text)


def builtin_path(name: str) -> Path:
    return Path(str(resources.files("cai_core.data") / f"{name}.jsonl"))


@dataclass
class Rows:
    """An opened source: iterate `rows()` once; `where` names it in messages; `length` if known cheaply."""

    where: str
    kind: str
    _iter: Any
    length: int | None = None
    _cleanup: Any = None

    def rows(self) -> Iterator[tuple[int, dict]]:
        try:
            if self.kind == "hf":  # streaming: network and split errors show up while reading
                with _hub_errors(self.where):
                    yield from self._iter
            else:
                yield from self._iter
        finally:
            if self._cleanup is not None:
                self._cleanup()
                self._cleanup = None


def open_rows(source: str, *, builtins: tuple[str, ...] = (), split: str = "train",
              max_line_bytes: int = records.MAX_LINE_BYTES) -> Rows:
    """Open `source` for reading rows; `split` is the default split of hf: sources and DatasetDicts."""
    spec = parse(source, builtins)
    if spec.kind == "builtin":
        path = builtin_path(spec.location)
        return _jsonl_rows(str(path), str(path), max_line_bytes)
    if spec.kind == "jsonl":
        if storage.is_remote(spec.location):
            tmp = tempfile.TemporaryDirectory(prefix="cai-input-")
            local = Path(tmp.name) / (Path(spec.location).name or "input.jsonl")
            storage.download_file(spec.location, local)
            rows = _jsonl_rows(str(local), spec.location, max_line_bytes)
            rows._cleanup = tmp.cleanup
            return rows
        return _jsonl_rows(spec.location, spec.location, max_line_bytes)
    if spec.kind == "hf":
        return _hub_rows(spec, split)
    if spec.kind == "disk":
        return _disk_rows(spec, split)
    return _file_rows(spec)


def iter_rows(source: str, **kwargs: Any) -> Iterator[tuple[int, dict]]:
    """The `(n, row)` pairs of `source` (see `open_rows`)."""
    return open_rows(source, **kwargs).rows()


@contextmanager
def local_jsonl(source: str, **kwargs: Any) -> Iterator[str]:
    """A local JSONL path holding the rows of `source`: the file itself, or a temporary copy of any other source."""
    spec = parse(source, kwargs.get("builtins", ()))
    if spec.kind == "jsonl" and not storage.is_remote(spec.location):
        yield spec.location
        return
    opened = open_rows(source, **kwargs)
    with tempfile.TemporaryDirectory(prefix="cai-input-") as tmp:
        path = Path(tmp) / "input.jsonl"
        n = records.write_jsonl(path, (row for _, row in opened.rows()))
        if not n:
            raise InputError("no rows", path=opened.where)
        yield str(path)


# -- JSONL -------------------------------------------------------------------------------------------

def _jsonl_rows(path: str, where: str, max_line_bytes: int) -> Rows:
    rows = records.read_jsonl(path, max_line_bytes=max_line_bytes)  # checks every line, names the bad one
    lines = []
    with open(path, "rb") as fh:  # line numbers of the non-blank lines (read_jsonl skips blank ones)
        for lineno, raw in enumerate(fh, start=1):
            if raw.decode("utf-8", errors="replace").strip():
                lines.append(lineno)
    return Rows(where=where, kind="jsonl", _iter=iter(list(zip(lines, rows))), length=len(rows))


# -- datasets ----------------------------------------------------------------------------------------

def _datasets():
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise InputError("reading datasets needs the `datasets` package (pip install datasets)") from None
    return datasets


def _numbered(dataset: Any) -> Iterator[tuple[int, dict]]:
    for i, row in enumerate(dataset, start=1):
        yield i, dict(row)


def _pick_split(splits: list[str], wanted: str | None, default: str, where: str) -> str:
    if wanted:
        if wanted not in splits:
            raise InputError(f"unknown split '{wanted}' (the dataset has: {', '.join(splits)})", path=where)
        return wanted
    if default in splits:
        return default
    if len(splits) == 1:
        return splits[0]
    raise InputError(f"the dataset has several splits ({', '.join(splits)}); name one as <source>@<split>",
                     path=where)


def _disk_rows(spec: Source, default_split: str) -> Rows:
    datasets = _datasets()
    where = spec.text
    try:
        loaded = datasets.load_from_disk(spec.location)
    except Exception as exc:  # a damaged or foreign folder
        raise InputError(f"cannot read the saved dataset ({type(exc).__name__}: {str(exc)[:200]})", path=where) from None
    if isinstance(loaded, datasets.DatasetDict):
        loaded = loaded[_pick_split(list(loaded), spec.split, default_split, where)]
    elif spec.split:
        raise InputError(f"a single saved Dataset has no splits (got '@{spec.split}')", path=where)
    return Rows(where=where, kind="disk", _iter=_numbered(loaded), length=len(loaded))


def _file_rows(spec: Source) -> Rows:
    datasets = _datasets()
    where, location, cleanup = spec.text, spec.location, None
    if storage.is_remote(location):
        tmp = tempfile.TemporaryDirectory(prefix="cai-input-")
        local = Path(tmp.name) / Path(location).name
        storage.download_file(location, local)
        location, cleanup = str(local), tmp.cleanup
    if not os.path.exists(location):
        raise InputError("file not found", path=where)
    if os.path.isdir(location):
        files = sorted(str(p) for p in Path(location).rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
        builders = {DATASET_FILES.get(Path(f).suffix.lower()) or ("json" if Path(f).suffix.lower() in JSONL_FILES
                                                                  else None) for f in files}
        builders.discard(None)
        if len(builders) != 1:
            found = ", ".join(sorted({Path(f).suffix for f in files})) or "nothing"
            raise InputError(f"a folder needs files of one kind (.parquet, .arrow, .jsonl or .csv), found {found}",
                             path=where)
        builder = builders.pop()
        files = [f for f in files if (DATASET_FILES.get(Path(f).suffix.lower()) or "json") == builder]
    else:
        builder, files = DATASET_FILES[Path(location).suffix.lower()], [location]
    try:
        dataset = datasets.load_dataset(builder, data_files={"train": files}, split="train", streaming=True)
    except Exception as exc:
        raise InputError(f"cannot read it as {builder} ({type(exc).__name__}: {str(exc)[:200]})", path=where) from None
    return Rows(where=where, kind="files", _iter=_guarded(_numbered(dataset), where, builder), _cleanup=cleanup)


def _guarded(it: Iterator[tuple[int, dict]], where: str, builder: str) -> Iterator[tuple[int, dict]]:
    try:
        yield from it
    except InputError:
        raise
    except Exception as exc:  # a corrupt file shows up while streaming
        raise InputError(f"cannot read it as {builder} ({type(exc).__name__}: {str(exc)[:200]})", path=where) from None


def _hub_rows(spec: Source, default_split: str) -> Rows:
    datasets = _datasets()
    where = spec.text
    split = spec.split or default_split
    kwargs = {k: v for k, v in spec.options.items()}
    with _hub_errors(where):
        dataset = datasets.load_dataset(spec.location, split=split, streaming=True, **kwargs)
    return Rows(where=where, kind="hf", _iter=_numbered(dataset))


@contextmanager
def _hub_errors(where: str):
    """Turn what `datasets` / `huggingface_hub` raise into one clear InputError line."""
    try:
        yield
    except InputError:
        raise
    except Exception as exc:
        raise InputError(hub_message(exc), path=where) from None


def hub_message(exc: BaseException) -> str:
    text = str(exc)
    low = text.lower()
    name = type(exc).__name__
    if "gated" in low:
        return ("a gated dataset: accept its terms on its Hugging Face page, then set HF_TOKEN "
                "(the pods read it from the cluster's secret)")
    if "offlinemodeisenabled" in low.replace(" ", "") or ("offline" in low and isinstance(exc, ConnectionError)):
        return ("cannot reach the Hugging Face Hub: HF_HUB_OFFLINE=1 is set and the dataset is not in the local "
                "cache (unset it, or point the source at a local copy)")
    if isinstance(exc, ConnectionError) or "couldn't reach" in low or "name or service not known" in low:
        return f"cannot reach the Hugging Face Hub (no network? {text[:160]})"
    if name == "DatasetNotFoundError" or "doesn't exist on the hub" in low or "cannot be accessed" in low:
        return ("no such dataset on the Hugging Face Hub, or a private one (set HF_TOKEN)" +
                (f": {text[:160]}" if text else ""))
    if "split" in low and ("unknown" in low or "bad split" in low or "available splits" in low or name == "KeyError"):
        return f"unknown split ({text[:200]})"
    if "builderconfig" in low or "config name is missing" in low or "available configs" in low:
        return f"unknown or missing config name, set ?name=<config> ({text[:200]})"
    if name in ("RevisionNotFoundError",) or "revision" in low and "not found" in low:
        return f"unknown revision ({text[:200]})"
    return f"cannot load the Hugging Face dataset ({name}: {text[:200]})"


# -- fingerprints ------------------------------------------------------------------------------------

def fingerprint(source: str, builtins: tuple[str, ...] = ()) -> str:
    """A string that changes whenever the data behind `source` may have changed."""
    if not source:
        return ""
    try:
        spec = parse(source, builtins)
    except InputError:
        return source
    if spec.kind == "builtin":
        path = builtin_path(spec.location)
        return _file_digest(path) if path.exists() else source
    if spec.kind == "hf":
        return f"{source}#{hub_revision(spec)}"
    if storage.is_remote(spec.location):  # an object rewritten under the same URI gets a new ETag
        try:
            return f"{source}#{storage.object_version(spec.location)}"
        except CaiError:  # missing or unreachable: opening the source reports it clearly
            return f"{source}#unresolved"
    path = Path(spec.location)
    if not path.exists():
        return ""
    if path.is_file():
        return _file_digest(path)
    digest = hashlib.sha256((spec.split or "").encode())
    if spec.kind == "disk":  # save_to_disk records a fingerprint per split; with every file's size: cheap
        states = sorted(path.rglob("state.json"))
        if states:
            for state in states:
                digest.update(str(state.relative_to(path)).encode())
                digest.update(str(json.loads(state.read_text()).get("_fingerprint")).encode())
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                digest.update(f"{f.relative_to(path)}:{f.stat().st_size}".encode())
            return digest.hexdigest()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(path)).encode())
        digest.update(_file_digest(f).encode())
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_revision(spec: Source) -> str:
    """The commit the Hub serves for the dataset's revision; the pinned revision (or 'unresolved') offline."""
    revision = spec.options.get("revision")
    if revision and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision.lower()):
        return revision
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return f"{revision or 'main'}:offline"
    try:
        from huggingface_hub import HfApi

        info = HfApi().dataset_info(spec.location, revision=revision, timeout=10)
        return str(info.sha)
    except Exception:  # no network or no access: opening the source reports it clearly
        return f"{revision or 'main'}:unresolved"


__all__ = ["DATASET_FILES", "Rows", "Source", "builtin_path", "fingerprint", "hub_message", "hub_revision",
           "iter_rows", "local_jsonl", "open_rows", "parse"]
