"""URIs: a local path, ``file://...`` or ``s3://bucket/key``."""
from __future__ import annotations

import os
import re

from cai_core.errors import StorageError

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def is_remote(uri: str) -> bool:
    """True for ``s3://`` URIs; False for local paths and ``file://``."""
    return _scheme(str(uri)) == "s3"


def _scheme(uri: str) -> str | None:
    m = _SCHEME_RE.match(uri)
    if not m:
        return None
    scheme = m.group(1).lower()
    if scheme not in ("s3", "file"):
        raise StorageError(f"{uri}: unsupported URI scheme '{scheme}://' (use a local path, file:// or s3://)")
    return scheme


def _local(uri: str) -> str:
    uri = os.fspath(uri)
    if _scheme(uri) == "file":
        return uri[len("file://"):]
    return uri


def _split(uri: str) -> tuple[str, str]:
    """s3://bucket/key -> (bucket, key); the key may be empty (bucket root)."""
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"{uri}: no bucket name in S3 URI (expected s3://bucket/key)")
    return bucket, key


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI; S3 always uses '/', local paths os.path.join.

    Leading slashes of parts are dropped.
    """
    uri = os.fspath(uri)
    clean = [str(p).strip("/") for p in parts if str(p).strip("/")]
    if is_remote(uri):
        return "/".join([uri.rstrip("/")] + clean) if clean else uri
    return os.path.join(uri, *clean) if clean else uri
