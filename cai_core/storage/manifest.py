"""The manifest that marks a directory complete: relative path -> size + sha256, written last."""
from __future__ import annotations

import json
import os
import re
from typing import Any

from cai_core.errors import StorageError
from cai_core.runtime.artifacts import MANIFEST_NAME
from cai_core.storage.config import StorageConfig
from cai_core.storage.errors import NotFoundError
from cai_core.storage.files import read_bytes
from cai_core.storage.uris import join

MANIFEST_VERSION = 1
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _safe_rel(rel: Any, where: str) -> str:
    if (
        not isinstance(rel, str)
        or not rel
        or rel.startswith("/")
        or "\\" in rel
        or "\x00" in rel
        or any(part in ("", ".", "..") for part in rel.split("/"))
    ):
        raise StorageError(f"{where}: unsafe or invalid path in manifest: {rel!r}")
    return rel


def _parse_manifest(data: bytes, where: str) -> dict[str, dict[str, Any]]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StorageError(f"{where}: manifest is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), dict):
        raise StorageError(f"{where}: manifest has no 'files' mapping")
    if doc.get("version") != MANIFEST_VERSION:
        raise StorageError(
            f"{where}: unsupported manifest version {doc.get('version')!r} (expected {MANIFEST_VERSION})")
    files = {}
    for rel, entry in doc["files"].items():
        _safe_rel(rel, where)
        if rel == MANIFEST_NAME:
            raise StorageError(f"{where}: manifest lists itself")
        size = entry.get("size") if isinstance(entry, dict) else None
        sha = entry.get("sha256") if isinstance(entry, dict) else None
        bad_size = isinstance(size, bool) or not isinstance(size, int) or size < 0
        if bad_size or not isinstance(sha, str) or not _SHA256_RE.match(sha):
            raise StorageError(f"{where}: manifest entry for {rel!r} needs an integer 'size' and a hex 'sha256'")
        files[rel] = {"size": size, "sha256": sha}
    return files


def _manifest_bytes(files: dict[str, dict[str, Any]]) -> bytes:
    doc = {"version": MANIFEST_VERSION, "files": {rel: files[rel] for rel in sorted(files)}}
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8")


def read_manifest(uri: str, cfg: StorageConfig | None = None) -> dict[str, dict[str, Any]]:
    """The manifest of a complete directory: relative path -> {size, sha256}. Incomplete: StorageError."""
    uri = os.fspath(uri)
    murl = join(uri, MANIFEST_NAME)
    try:
        data = read_bytes(murl, cfg)
    except NotFoundError:
        raise StorageError(
            f"{uri} is not a complete directory: it has no {MANIFEST_NAME} (the writer did not finish, "
            f"or it was not written with upload_dir/copy_dir)"
        ) from None
    return _parse_manifest(data, murl)


def _verify(rel: str, got: tuple[int, str], want: dict[str, Any], src: str) -> None:
    size, sha = got
    if size != want["size"]:
        raise StorageError(f"{join(src, rel)}: size {size} does not match the manifest ({want['size']}); "
                           "the directory is corrupt or was changed after it was written")
    if sha != want["sha256"]:
        raise StorageError(f"{join(src, rel)}: sha256 {sha[:12]}… does not match the manifest "
                           f"({want['sha256'][:12]}…); the directory is corrupt or was changed after it was written")
