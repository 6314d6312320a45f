"""Local helpers: atomic writes through a temp file, streamed copies that hash what they copy."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import uuid
from typing import IO, Any, Iterator

_CHUNK = 1024 * 1024


def _temp_path(final: str) -> str:
    """A temp name in the same directory as `final` (same filesystem, so os.replace is atomic)."""
    directory, name = os.path.split(os.path.abspath(final))
    return os.path.join(directory, f".{name}.tmp-{uuid.uuid4().hex[:12]}")


@contextlib.contextmanager
def _atomic_local(final: str) -> Iterator[str]:
    """Yield a temp path; on success fsync + os.replace onto `final`, on failure remove the temp."""
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    if os.path.isdir(final):
        raise IsADirectoryError(final)
    tmp = _temp_path(final)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _copy_stream(src: IO[bytes], dst: IO[bytes]) -> tuple[int, str]:
    """Copy, returning (size, sha256)."""
    digest, size = hashlib.sha256(), 0
    while True:
        chunk = src.read(_CHUNK)
        if not chunk:
            return size, digest.hexdigest()
        digest.update(chunk)
        size += len(chunk)
        dst.write(chunk)


def _hash_file(path: str) -> tuple[int, str]:
    with open(path, "rb") as fh:
        return _copy_stream(fh, _NullWriter())


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a local file (read in blocks)."""
    return _hash_file(os.fspath(path))[1]


class _NullWriter:
    def write(self, _data: bytes) -> None:
        return None


class _CallerStream(io.RawIOBase):
    """Wraps a caller's stream so its own errors are re-raised unchanged (a crash, not a storage error)."""

    def __init__(self, inner: IO[bytes]):
        self._inner = inner

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._inner.read(size)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                exc._cai_from_caller = True  # type: ignore[attr-defined]
            raise

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
