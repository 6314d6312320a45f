"""Single files: exists, read, write (atomic), upload, download, copy, list and delete."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import uuid
from typing import IO, Any

from cai_core.errors import StorageError
from cai_core.storage.config import _MB, StorageConfig
from cai_core.storage.errors import NotFoundError, _guard
from cai_core.storage.local import _atomic_local, _CallerStream, _copy_stream, file_sha256
from cai_core.storage.s3 import _s3, _transfers
from cai_core.storage.uris import _local, is_remote, join

_PAGE_SIZE = 1000  # keys per LIST request (S3's maximum); tests lower it to exercise paging


def _object_exists(client: Any, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        client.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def exists(uri: str, cfg: StorageConfig | None = None) -> bool:
    """Whether a file/object, or a directory (a prefix with objects under it), exists. A missing bucket is an error."""
    uri = os.fspath(uri)
    if not is_remote(uri):
        return os.path.exists(_local(uri))
    bucket, key, client, cfg = _s3(uri, cfg, need_key=False)
    with _guard("check", uri, cfg, client):
        if not key:
            client.head_bucket(Bucket=bucket)
            return True
        if not key.endswith("/") and _object_exists(client, bucket, key):
            return True
        # Not an object: a "directory" if anything lies under key/. Also raises NoSuchBucket.
        resp = client.list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=1)
        return bool(resp.get("KeyCount") or resp.get("Contents"))


def read_bytes(uri: str, cfg: StorageConfig | None = None) -> bytes:
    """The whole content of a file/object."""
    uri = os.fspath(uri)
    if not is_remote(uri):
        with _guard("read", uri):
            with open(_local(uri), "rb") as fh:
                return fh.read()
    bucket, key, client, cfg = _s3(uri, cfg)
    with _guard("read", uri, cfg, client):
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def read_text(uri: str, cfg: StorageConfig | None = None, encoding: str = "utf-8") -> str:
    data = read_bytes(uri, cfg)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise StorageError(f"cannot read {uri}: not valid {encoding} at byte {exc.start}") from None


def _put(uri: str, cfg: StorageConfig | None, write_local, upload, verb: str = "write") -> None:
    """Write `uri` atomically: `write_local(tmp_path)` for a local path, else `upload(client, bucket, key, cfg)`."""
    if not is_remote(uri):
        with _guard("write", uri):
            with _atomic_local(_local(uri)) as tmp:
                write_local(tmp)
        return
    bucket, key, client, cfg = _s3(uri, cfg)
    with _guard(verb, uri, cfg, client):
        upload(client, bucket, key, cfg)


def _managed_upload(source):
    """An `upload` for _put: the transfer manager (multipart above the threshold)."""
    def upload(client, bucket: str, key: str, cfg: StorageConfig) -> None:
        with _transfers(cfg, client) as tm:
            tm.upload(source, bucket, key).result()
    return upload


def write_bytes(uri: str, data: bytes, cfg: StorageConfig | None = None) -> None:
    """Write `data` atomically: readers see the old content or the new, never a part."""
    data = bytes(data)

    def write_local(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    def upload(client, bucket: str, key: str, cfg: StorageConfig) -> None:
        if len(data) < cfg.multipart_threshold_mb * _MB:
            client.put_object(Bucket=bucket, Key=key, Body=data)
        else:
            _managed_upload(io.BytesIO(data))(client, bucket, key, cfg)

    _put(os.fspath(uri), cfg, write_local, upload)


def write_text(uri: str, text: str, cfg: StorageConfig | None = None, encoding: str = "utf-8") -> None:
    write_bytes(uri, text.encode(encoding), cfg)


def write_stream(uri: str, stream: IO[bytes], cfg: StorageConfig | None = None) -> None:
    """Write everything read from a binary stream, atomically (multipart on S3 above the threshold).

    If the stream raises, its exception propagates unchanged and nothing is left at `uri`
    (the temp file is removed; the multipart upload is aborted).
    """
    source = _CallerStream(stream)

    def write_local(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            _copy_stream(source, fh)

    _put(os.fspath(uri), cfg, write_local, _managed_upload(source))


def upload_file(local: str, uri: str, cfg: StorageConfig | None = None) -> None:
    """Copy a local file to `uri` (any location), atomically."""
    local, uri = _local(local), os.fspath(uri)
    if not os.path.isfile(local):
        raise (StorageError if os.path.exists(local) else NotFoundError)(
            f"cannot upload {local}: {'not a regular file' if os.path.exists(local) else 'no such file'}"
        )
    _put(uri, cfg, lambda tmp: shutil.copyfile(local, tmp), _managed_upload(local), verb="upload to")


def download_file(uri: str, local: str, cfg: StorageConfig | None = None) -> None:
    """Copy `uri` (any location) to a local file: into a temp file first, renamed when complete."""
    uri, local = os.fspath(uri), _local(local)
    if not is_remote(uri):
        with _guard("read", uri):
            with _atomic_local(local) as tmp:
                shutil.copyfile(_local(uri), tmp)
        return
    bucket, key, client, cfg = _s3(uri, cfg)
    with _guard("download", uri, cfg, client):
        with _atomic_local(local) as tmp:
            with _transfers(cfg, client) as tm:
                tm.download(bucket, key, tmp).result()


def copy_file(src: str, dst: str, cfg: StorageConfig | None = None) -> None:
    """Copy one file between any two locations (S3 to S3 is a server-side copy)."""
    src, dst = os.fspath(src), os.fspath(dst)
    if not is_remote(src):
        upload_file(src, dst, cfg)
    elif not is_remote(dst):
        download_file(src, dst, cfg)
    else:
        sb, sk, client, cfg = _s3(src, cfg)
        db, dk, _, _ = _s3(dst, cfg)
        with _guard(f"copy {src} to", dst, cfg, client):
            with _transfers(cfg, client) as tm:
                tm.copy({"Bucket": sb, "Key": sk}, db, dk, source_client=client).result()


def list_files(uri_prefix: str, cfg: StorageConfig | None = None) -> list[str]:
    """Every file under a directory / prefix (recursive), as full URIs, sorted. Nothing there: []."""
    uri = os.fspath(uri_prefix)
    if not is_remote(uri):
        root = _local(uri)
        out = []
        with _guard("list", uri):
            for dirpath, _dirs, files in os.walk(root):
                out.extend(os.path.join(dirpath, f) for f in files)
        return sorted(out)
    bucket, key, client, cfg = _s3(uri, cfg, need_key=False)
    prefix = key.rstrip("/") + "/" if key.strip("/") else ""
    out = []
    with _guard("list", uri, cfg, client):
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": _PAGE_SIZE})
        for page in pages:
            for obj in page.get("Contents", []):
                if not obj["Key"].endswith("/"):  # skip "directory marker" objects
                    out.append(f"s3://{bucket}/{obj['Key']}")
    return sorted(out)


def object_version(uri: str, cfg: StorageConfig | None = None) -> str:
    """A string that changes whenever the file/object's content may have: its sha256 locally, the ETag, size and
    modification time on S3 (one HEAD request; the content is not read). Missing: `NotFoundError`."""
    uri = os.fspath(uri)
    if not is_remote(uri):
        with _guard("read", uri):
            return file_sha256(_local(uri))
    bucket, key, client, cfg = _s3(uri, cfg)
    with _guard("check", uri, cfg, client):
        head = client.head_object(Bucket=bucket, Key=key)
    return f"{head.get('ETag', '')}:{head.get('ContentLength', '')}:{head.get('LastModified', '')}"


def _list_sizes(uri: str, cfg: StorageConfig) -> dict[str, int]:
    """Relative key -> size for everything under an S3 prefix."""
    bucket, key, client, cfg = _s3(uri, cfg, need_key=False)
    prefix = key.rstrip("/") + "/" if key.strip("/") else ""
    sizes = {}
    with _guard("list", uri, cfg, client):
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": _PAGE_SIZE})
        for page in pages:
            for obj in page.get("Contents", []):
                sizes[obj["Key"][len(prefix):]] = obj["Size"]
    return sizes


def delete(uri: str, cfg: StorageConfig | None = None) -> None:
    """Delete one file/object; deleting something absent is not an error."""
    uri = os.fspath(uri)
    if not is_remote(uri):
        path = _local(uri)
        if os.path.isdir(path) and not os.path.islink(path):
            raise StorageError(f"cannot delete {uri}: is a directory (use delete_prefix)")
        with _guard("delete", uri), contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return
    bucket, key, client, cfg = _s3(uri, cfg)
    with _guard("delete", uri, cfg, client):
        client.delete_object(Bucket=bucket, Key=key)


def delete_prefix(uri: str, cfg: StorageConfig | None = None) -> int:
    """Delete a file/object and everything under it as a directory; returns how many files went."""
    uri = os.fspath(uri)
    if not is_remote(uri):
        path = _local(uri)
        if os.path.abspath(path) == os.path.abspath(os.sep):
            raise StorageError(f"refusing to delete everything under {uri}")
        with _guard("delete", uri):
            if os.path.isdir(path) and not os.path.islink(path):
                count = sum(len(files) for _, _, files in os.walk(path))
                shutil.rmtree(path)
                return count
            if os.path.lexists(path):
                os.remove(path)
                return 1
        return 0
    bucket, key, client, cfg = _s3(uri, cfg, need_key=False)
    if not key.strip("/"):
        raise StorageError(f"refusing to delete a whole bucket ({uri}); name a prefix under it")
    base = key.rstrip("/")
    keys = [f"{base}/{rel}" for rel in _list_sizes(uri, cfg)]
    with _guard("delete", uri, cfg, client):
        if not key.endswith("/") and _object_exists(client, bucket, base):
            keys.append(base)
        for i in range(0, len(keys), 1000):
            resp = client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True}
            )
            errors = resp.get("Errors") or []
            if errors:
                first = errors[0]
                raise StorageError(
                    f"cannot delete {uri}: {len(errors)} object(s) refused, e.g. s3://{bucket}/{first.get('Key')}: "
                    f"{first.get('Code')} {first.get('Message', '')}".rstrip()
                )
    return len(keys)


def check_writable(uri: str, cfg: StorageConfig | None = None) -> None:
    """Preflight: write and delete a tiny probe under directory `uri`; raise StorageError saying why not."""
    uri = os.fspath(uri)
    probe = join(uri, f".cai-write-probe-{uuid.uuid4().hex[:12]}")
    try:
        write_bytes(probe, b"cai write probe\n", cfg)
        delete(probe, cfg)
    except StorageError as exc:
        raise StorageError(f"{uri} is not writable: {getattr(exc, 'reason', exc)}") from exc
