"""One storage interface for local paths and ``s3://bucket/key`` URIs.

Every function takes a URI that is either a local path (optionally
``file://...``) or ``s3://bucket/key``, plus an optional `StorageConfig`.
S3 goes through boto3 (any S3-compatible endpoint: AWS, MinIO, SeaweedFS).

Guarantees:

* Writes are atomic. Locally a temp file in the same directory is renamed into
  place with ``os.replace``; on S3 a single PUT or a multipart upload (the
  transfer manager switches to multipart above ``multipart_threshold_mb``)
  only becomes visible when complete, and a failed multipart upload is
  aborted. A crash mid-write leaves nothing at the final path.
* A directory written by `upload_dir` / `copy_dir` is complete only when its
  ``_MANIFEST.json`` (relative path -> size + sha256) exists; it is written
  last (and an older one is removed first). `download_dir`, and `copy_dir` from
  S3, refuse a directory without a manifest and verify every file against it.
  A local source directory is taken as it is on disk (its manifest regenerated).
* Every failure is a `StorageError` (a `CaiError`) with one message naming the
  URI and the cause: missing bucket, bad credentials, access denied, endpoint
  unreachable, no credentials, key not found (`NotFoundError`).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from typing import IO, Any, Iterator

from cai_core.configbase import ConfigBase, require
from cai_core.errors import StorageError

MANIFEST_NAME = "_MANIFEST.json"
MANIFEST_VERSION = 1
_MB = 1024 * 1024
_CHUNK = 1024 * 1024
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_PAGE_SIZE = 1000  # keys per LIST request (S3's maximum); tests lower it to exercise paging


class NotFoundError(StorageError):
    """The file or object does not exist (the bucket or directory above it does)."""


@dataclass(frozen=True)
class StorageConfig(ConfigBase):
    """How to reach S3 and how to move bytes; local paths ignore all of it."""

    #: S3 endpoint URL (e.g. http://minio:9000). Empty: env AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL, then AWS itself.
    endpoint_url: str | None = None
    #: Region used to sign S3 requests (S3-compatible stores usually accept any).
    region: str = "us-east-1"
    #: Objects at least this large (MiB) are uploaded, downloaded and copied in parts.
    multipart_threshold_mb: int = 64
    #: Size (MiB) of each part of a multipart transfer; S3 requires at least 5.
    multipart_chunksize_mb: int = 16
    #: Parallel requests per transfer (parts, or files of a directory).
    max_concurrency: int = 8
    #: Seconds to wait for a TCP connection to the endpoint before giving up.
    connect_timeout_s: float = 5.0
    #: Attempts per request, the first included (connection errors, throttling, 5xx).
    max_attempts: int = 3

    def validate(self) -> None:
        require(
            self.endpoint_url is None or self.endpoint_url.startswith(("http://", "https://")),
            "endpoint_url",
            f"must start with http:// or https://, got {self.endpoint_url!r}",
        )
        require(bool(self.region.strip()), "region", "must not be empty")
        require(5 <= self.multipart_threshold_mb <= 5 * 1024, "multipart_threshold_mb", f"must be between 5 and 5120, got {self.multipart_threshold_mb}")
        require(5 <= self.multipart_chunksize_mb <= 5 * 1024, "multipart_chunksize_mb", f"must be between 5 and 5120 (S3's part-size limits), got {self.multipart_chunksize_mb}")
        require(1 <= self.max_concurrency <= 256, "max_concurrency", f"must be between 1 and 256, got {self.max_concurrency}")
        require(0 < self.connect_timeout_s <= 600, "connect_timeout_s", f"must be > 0 and <= 600, got {self.connect_timeout_s}")
        require(1 <= self.max_attempts <= 20, "max_attempts", f"must be between 1 and 20, got {self.max_attempts}")


_DEFAULT = StorageConfig()


def resolve_endpoint(cfg: StorageConfig | None = None) -> str | None:
    """The S3 endpoint in use: the config's, else AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, else None (AWS)."""
    cfg = cfg or _DEFAULT
    return cfg.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


# --------------------------------------------------------------------------- URIs


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
    """Join path parts onto a URI; S3 always uses '/', local paths os.path.join. Leading slashes of parts are dropped."""
    uri = os.fspath(uri)
    clean = [str(p).strip("/") for p in parts if str(p).strip("/")]
    if is_remote(uri):
        return "/".join([uri.rstrip("/")] + clean) if clean else uri
    return os.path.join(uri, *clean) if clean else uri


# ------------------------------------------------------------------- S3 clients

_CRED_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_CA_BUNDLE",
    "AWS_EC2_METADATA_DISABLED",
)


def _client(cfg: StorageConfig) -> Any:
    # The cache key includes the credential environment, so a changed
    # AWS_ACCESS_KEY_ID (tests, notebooks) gets a fresh client.
    return _make_client(cfg, resolve_endpoint(cfg), tuple(os.environ.get(k) for k in _CRED_ENV))


@functools.lru_cache(maxsize=16)
def _make_client(cfg: StorageConfig, endpoint: str | None, _env: tuple) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        region_name=cfg.region,
        connect_timeout=cfg.connect_timeout_s,
        retries={"max_attempts": cfg.max_attempts, "mode": "standard"},
        max_pool_connections=max(10, cfg.max_concurrency + 2),
        # Custom endpoints (MinIO, SeaweedFS, Ceph) rarely have wildcard DNS.
        s3={"addressing_style": "path"} if endpoint else None,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)


def _transfer_config(cfg: StorageConfig) -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=cfg.multipart_threshold_mb * _MB,
        multipart_chunksize=cfg.multipart_chunksize_mb * _MB,
        max_concurrency=cfg.max_concurrency,
        use_threads=True,
        preferred_transfer_client="classic",  # honour the settings above; never switch to CRT
    )


@contextlib.contextmanager
def _transfers(cfg: StorageConfig, client: Any) -> Iterator[Any]:
    """A boto3 transfer manager; leaving the block with an error cancels (and aborts) what is in flight."""
    from boto3.s3.transfer import create_transfer_manager

    with create_transfer_manager(client, _transfer_config(cfg)) as manager:
        yield manager


# ---------------------------------------------------------------- error mapping


def _boto_cause(exc: BaseException) -> BaseException | None:
    """The botocore error in an exception chain (boto3 sometimes wraps it), or None."""
    from botocore.exceptions import BotoCoreError, ClientError

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (BotoCoreError, ClientError)):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _bucket_missing(client: Any, bucket: str) -> bool:
    """True only when the endpoint says the bucket does not exist."""
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        return str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchBucket", "NotFound")
    except Exception:
        return False
    return False


def _describe(exc: BaseException, uri: str, cfg: StorageConfig, client: Any) -> tuple[type[StorageError], str]:
    from botocore import exceptions as bx

    endpoint = resolve_endpoint(cfg) or "the default AWS S3 endpoint"
    bucket = _split(uri)[0] if is_remote(uri) else ""
    if isinstance(exc, bx.NoCredentialsError):
        return StorageError, (
            "no S3 credentials configured (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "or AWS_PROFILE, or give the pod/instance a role)"
        )
    if isinstance(exc, bx.PartialCredentialsError):
        return StorageError, f"incomplete S3 credentials ({exc})"
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError)):
        return StorageError, f"S3 endpoint {endpoint} is unreachable ({exc}); check endpoint_url / AWS_ENDPOINT_URL_S3"
    if isinstance(exc, (bx.ReadTimeoutError, bx.ConnectionClosedError, bx.ResponseStreamingError, bx.ConnectionError)):
        return StorageError, f"connection to S3 endpoint {endpoint} failed ({exc})"
    if isinstance(exc, bx.ParamValidationError):
        return StorageError, f"invalid S3 request: {exc}"
    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        message = err.get("Message") or ""
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return StorageError, f"bucket '{bucket}' does not exist at {endpoint}"
        if code in ("NoSuchKey", "404", "NotFound"):
            if bucket and _bucket_missing(client, bucket):
                return StorageError, f"bucket '{bucket}' does not exist at {endpoint}"
            return NotFoundError, "no such object"
        if code == "InvalidAccessKeyId":
            return StorageError, f"bad credentials: the access key id is not known to {endpoint} (InvalidAccessKeyId; check AWS_ACCESS_KEY_ID)"
        if code == "SignatureDoesNotMatch":
            return StorageError, "bad credentials: the secret key does not match the access key (SignatureDoesNotMatch; check AWS_SECRET_ACCESS_KEY)"
        if code in ("ExpiredToken", "InvalidToken", "TokenRefreshRequired", "RequestExpired"):
            return StorageError, f"bad credentials: the session token is expired or invalid ({code})"
        if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled") or status == 403:
            # Some stores answer a write to a missing bucket with AccessDenied.
            if bucket and _bucket_missing(client, bucket):
                return StorageError, f"bucket '{bucket}' does not exist at {endpoint}"
            return StorageError, f"access denied ({code or status}): the credentials are wrong or lack permission for this bucket/key"
        if code == "InvalidBucketName":
            return StorageError, f"invalid bucket name '{bucket}'"
        return StorageError, f"S3 error {code or status}: {message or exc}"
    return StorageError, f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def _guard(action: str, uri: str, cfg: StorageConfig | None = None, client: Any = None) -> Iterator[None]:
    """Turn botocore and OS errors into one StorageError naming `uri` and the cause."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        if _from_caller(exc):  # the caller's own stream failed: a crash, not a storage error
            raise
        cause = _boto_cause(exc)
        if cause is not None:
            kind, why = _describe(cause, uri, cfg or _DEFAULT, client)
            raise _error(kind, action, uri, why) from exc
        where = getattr(exc, "filename", None) or uri
        if isinstance(exc, FileNotFoundError):
            raise _error(NotFoundError, action, uri, f"no such file or directory ({where})") from exc
        if isinstance(exc, IsADirectoryError):
            raise _error(StorageError, action, uri, "is a directory") from exc
        if isinstance(exc, NotADirectoryError):
            raise _error(StorageError, action, uri, f"a parent of {where} is a file, not a directory") from exc
        if isinstance(exc, PermissionError):
            raise _error(StorageError, action, uri, f"permission denied ({where})") from exc
        if isinstance(exc, OSError):
            raise _error(StorageError, action, uri, str(exc.strerror or exc)) from exc
        raise


def _error(kind: type[StorageError], action: str, uri: str, why: str) -> StorageError:
    err = kind(f"cannot {action} {uri}: {why}")
    err.reason = why  # type: ignore[attr-defined]  # the cause alone, for messages that name another URI
    return err


def _from_caller(exc: BaseException) -> bool:
    return bool(getattr(exc, "_cai_from_caller", False))


def _s3(uri: str, cfg: StorageConfig | None, *, need_key: bool = True) -> tuple[str, str, Any, StorageConfig]:
    cfg = cfg or _DEFAULT
    bucket, key = _split(uri)
    if need_key and (not key or key.endswith("/")):
        raise StorageError(f"{uri}: expected an object URI s3://bucket/key, not a bucket or a 'directory'")
    with _guard("access", uri, cfg):  # e.g. half-set credentials fail when the client is made
        client = _client(cfg)
    return bucket, key, client, cfg


# --------------------------------------------------------------- local helpers


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


# ------------------------------------------------------------------ single files


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


def write_bytes(uri: str, data: bytes, cfg: StorageConfig | None = None) -> None:
    """Write `data` atomically: readers see the old content or the new, never a part."""
    uri = os.fspath(uri)
    data = bytes(data)
    if not is_remote(uri):
        with _guard("write", uri):
            with _atomic_local(_local(uri)) as tmp:
                with open(tmp, "wb") as fh:
                    fh.write(data)
        return
    bucket, key, client, cfg = _s3(uri, cfg)
    with _guard("write", uri, cfg, client):
        if len(data) < cfg.multipart_threshold_mb * _MB:
            client.put_object(Bucket=bucket, Key=key, Body=data)
        else:
            with _transfers(cfg, client) as tm:
                tm.upload(io.BytesIO(data), bucket, key).result()


def write_text(uri: str, text: str, cfg: StorageConfig | None = None, encoding: str = "utf-8") -> None:
    write_bytes(uri, text.encode(encoding), cfg)


def write_stream(uri: str, stream: IO[bytes], cfg: StorageConfig | None = None) -> None:
    """Write everything read from a binary stream, atomically (multipart on S3 above the threshold).

    If the stream raises, its exception propagates unchanged and nothing is left at `uri`
    (the temp file is removed; the multipart upload is aborted).
    """
    uri = os.fspath(uri)
    source = _CallerStream(stream)
    if not is_remote(uri):
        with _guard("write", uri):
            with _atomic_local(_local(uri)) as tmp:
                with open(tmp, "wb") as fh:
                    _copy_stream(source, fh)
        return
    bucket, key, client, cfg = _s3(uri, cfg)
    with _guard("write", uri, cfg, client):
        with _transfers(cfg, client) as tm:
            tm.upload(source, bucket, key).result()


def upload_file(local: str, uri: str, cfg: StorageConfig | None = None) -> None:
    """Copy a local file to `uri` (any location), atomically."""
    local, uri = _local(local), os.fspath(uri)
    if not os.path.isfile(local):
        raise (StorageError if os.path.exists(local) else NotFoundError)(
            f"cannot upload {local}: {'not a regular file' if os.path.exists(local) else 'no such file'}"
        )
    if not is_remote(uri):
        with _guard("write", uri):
            with _atomic_local(_local(uri)) as tmp:
                shutil.copyfile(local, tmp)
        return
    bucket, key, client, cfg = _s3(uri, cfg)
    with _guard("upload to", uri, cfg, client):
        with _transfers(cfg, client) as tm:
            tm.upload(local, bucket, key).result()


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
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": _PAGE_SIZE}):
            for obj in page.get("Contents", []):
                if not obj["Key"].endswith("/"):  # skip "directory marker" objects
                    out.append(f"s3://{bucket}/{obj['Key']}")
    return sorted(out)


def _list_sizes(uri: str, cfg: StorageConfig) -> dict[str, int]:
    """Relative key -> size for everything under an S3 prefix."""
    bucket, key, client, cfg = _s3(uri, cfg, need_key=False)
    prefix = key.rstrip("/") + "/" if key.strip("/") else ""
    sizes = {}
    with _guard("list", uri, cfg, client):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": _PAGE_SIZE}):
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


# ------------------------------------------------------------------ directories


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
        raise StorageError(f"{where}: unsupported manifest version {doc.get('version')!r} (expected {MANIFEST_VERSION})")
    files = {}
    for rel, entry in doc["files"].items():
        _safe_rel(rel, where)
        if rel == MANIFEST_NAME:
            raise StorageError(f"{where}: manifest lists itself")
        size = entry.get("size") if isinstance(entry, dict) else None
        sha = entry.get("sha256") if isinstance(entry, dict) else None
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or not isinstance(sha, str) or not _SHA256_RE.match(sha):
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


def _local_files(root: str) -> list[str]:
    rels = []
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/")
            if rel != MANIFEST_NAME and not (f.startswith(".") and ".tmp-" in f):
                rels.append(rel)
    return sorted(rels)


def _verify(rel: str, got: tuple[int, str], want: dict[str, Any], src: str) -> None:
    size, sha = got
    if size != want["size"]:
        raise StorageError(f"{join(src, rel)}: size {size} does not match the manifest ({want['size']}); the directory is corrupt or was changed after it was written")
    if sha != want["sha256"]:
        raise StorageError(f"{join(src, rel)}: sha256 {sha[:12]}… does not match the manifest ({want['sha256'][:12]}…); the directory is corrupt or was changed after it was written")


def _copy_tree(src: str, dst: str, cfg: StorageConfig, *, need_manifest: bool) -> dict[str, dict[str, Any]]:
    """Copy a directory between any two locations; the destination manifest is written last.

    need_manifest: the source must be complete (have a manifest) and is verified against it;
    otherwise (local sources only) the files on disk are taken as they are and hashed afresh.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    remote_src, remote_dst = is_remote(src), is_remote(dst)
    if not remote_src:
        root = _local(src)
        if not os.path.exists(root):
            raise NotFoundError(f"cannot copy {src}: no such directory")
        if not os.path.isdir(root):
            raise StorageError(f"cannot copy {src}: not a directory")
    want = read_manifest(src, cfg) if (need_manifest or remote_src) else None
    rels = sorted(want) if want is not None else _local_files(_local(src))

    if not remote_dst:
        if not remote_src and os.path.realpath(_local(src)) == os.path.realpath(_local(dst)):
            return _seal_in_place(_local(dst), rels, want)
        return _copy_into_local(src, dst, rels, want, cfg)

    # Remote destination: drop an old manifest first, then files, then the new manifest.
    delete(join(dst, MANIFEST_NAME), cfg)
    files: dict[str, dict[str, Any]] = {}
    dbucket, dkey, client, cfg = _s3(dst, cfg, need_key=False)
    dbase = dkey.rstrip("/")
    with _guard("write", dst, cfg, client):
        with _transfers(cfg, client) as tm:
            futures = []  # (future, action, uri named in an error)
            for rel in rels:
                target = f"{dbase}/{rel}" if dbase else rel
                if not remote_src:
                    path = os.path.join(_local(src), *rel.split("/"))
                    with _guard("read", join(src, rel)):
                        files[rel] = dict(zip(("size", "sha256"), _hash_file(path)))
                    if want is not None:
                        _verify(rel, (files[rel]["size"], files[rel]["sha256"]), want[rel], src)
                    futures.append((tm.upload(path, dbucket, target), "upload to", join(dst, rel)))
                else:
                    sbucket, skey = _split(src)
                    sbase = skey.rstrip("/")
                    files[rel] = dict(want[rel])
                    copy_source = {"Bucket": sbucket, "Key": f"{sbase}/{rel}" if sbase else rel}
                    futures.append((tm.copy(copy_source, dbucket, target, source_client=client), f"copy {join(src, rel)} to", join(dst, rel)))
            for fut, action, where in futures:
                with _guard(action, where, cfg, client):
                    fut.result()
    # Check what landed before declaring the directory complete.
    sizes = _list_sizes(dst, cfg)
    for rel in rels:
        if sizes.get(rel) != files[rel]["size"]:
            raise StorageError(f"{join(dst, rel)}: size after copy is {sizes.get(rel)}, expected {files[rel]['size']}")
    write_bytes(join(dst, MANIFEST_NAME), _manifest_bytes(files), cfg)
    return files


def _seal_in_place(root: str, rels: list[str], want: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Source and destination are the same local directory: (re)write its manifest, last."""
    files: dict[str, dict[str, Any]] = {}
    with _guard("write", root):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(root, MANIFEST_NAME))
        for rel in rels:
            got = _hash_file(os.path.join(root, *rel.split("/")))
            if want is not None:
                _verify(rel, got, want[rel], root)
            files[rel] = {"size": got[0], "sha256": got[1]}
    write_bytes(os.path.join(root, MANIFEST_NAME), _manifest_bytes(files))
    return files


def _copy_into_local(src: str, dst: str, rels: list[str], want: dict[str, Any] | None, cfg: StorageConfig) -> dict[str, dict[str, Any]]:
    """Fill a staging directory beside `dst`, verify, then move into place (manifest last)."""
    final = os.path.abspath(_local(dst))
    if os.path.exists(final) and not os.path.isdir(final):
        raise StorageError(f"cannot write directory {dst}: a file is in the way")
    parent = os.path.dirname(final)
    with _guard("write", dst):
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.partial-", dir=parent)
    files: dict[str, dict[str, Any]] = {}
    try:
        remote_src = is_remote(src)
        if remote_src:
            sbucket, skey, client, cfg = _s3(src, cfg, need_key=False)
            sbase = skey.rstrip("/")
            with _guard("download", src, cfg, client):
                with _transfers(cfg, client) as tm:
                    futures = []
                    for rel in rels:
                        path = os.path.join(staging, *rel.split("/"))
                        os.makedirs(os.path.dirname(path), exist_ok=True)
                        futures.append((tm.download(sbucket, f"{sbase}/{rel}" if sbase else rel, path), join(src, rel)))
                    for fut, where in futures:
                        with _guard("download", where, cfg, client):
                            fut.result()
            for rel in rels:
                got = _hash_file(os.path.join(staging, *rel.split("/")))
                _verify(rel, got, want[rel], src)  # type: ignore[index]
                files[rel] = {"size": got[0], "sha256": got[1]}
        else:
            for rel in rels:
                path = os.path.join(staging, *rel.split("/"))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with _guard("read", join(src, rel)):
                    with open(os.path.join(_local(src), *rel.split("/")), "rb") as fin, open(path, "wb") as fout:
                        got = _copy_stream(fin, fout)
                if want is not None:
                    _verify(rel, got, want[rel], src)
                files[rel] = {"size": got[0], "sha256": got[1]}
        with _guard("write", dst):
            with open(os.path.join(staging, MANIFEST_NAME), "wb") as fh:
                fh.write(_manifest_bytes(files))
                fh.flush()
                os.fsync(fh.fileno())
            if not os.path.exists(final):
                os.rename(staging, final)  # the whole directory appears at once
                staging = ""
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(final, MANIFEST_NAME))
                for rel in rels:
                    target = os.path.join(final, *rel.split("/"))
                    if os.path.isdir(target):
                        raise StorageError(f"cannot write {join(dst, rel)}: a directory is in the way")
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    os.replace(os.path.join(staging, *rel.split("/")), target)
                os.replace(os.path.join(staging, MANIFEST_NAME), os.path.join(final, MANIFEST_NAME))
    finally:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)
    return files


def upload_dir(local_dir: str, uri: str, cfg: StorageConfig | None = None) -> dict[str, dict[str, Any]]:
    """Copy a local directory to `uri` with a fresh manifest written last; returns the manifest's files."""
    if is_remote(os.fspath(local_dir)):
        raise StorageError(f"upload_dir: {local_dir} is not a local directory (use copy_dir)")
    return _copy_tree(local_dir, uri, cfg or _DEFAULT, need_manifest=False)


def download_dir(uri: str, local_dir: str, cfg: StorageConfig | None = None) -> dict[str, dict[str, Any]]:
    """Copy a complete directory (one with a manifest) to a local directory, verifying sizes and sha256."""
    if is_remote(os.fspath(local_dir)):
        raise StorageError(f"download_dir: {local_dir} is not a local directory (use copy_dir)")
    return _copy_tree(uri, local_dir, cfg or _DEFAULT, need_manifest=True)


def copy_dir(src_uri: str, dst_uri: str, cfg: StorageConfig | None = None) -> dict[str, dict[str, Any]]:
    """Copy a directory between any two locations (local or S3), manifest written last.

    A remote source must be complete (have a manifest) and is verified against it. A local
    source is taken as it is on disk (any manifest in it is regenerated), like `upload_dir`;
    copying a local directory onto itself just (re)writes its manifest.
    """
    return _copy_tree(src_uri, dst_uri, cfg or _DEFAULT, need_manifest=False)


__all__ = [
    "MANIFEST_NAME",
    "NotFoundError",
    "StorageConfig",
    "check_writable",
    "copy_dir",
    "copy_file",
    "delete",
    "delete_prefix",
    "download_dir",
    "download_file",
    "exists",
    "is_remote",
    "join",
    "list_files",
    "read_bytes",
    "read_manifest",
    "read_text",
    "resolve_endpoint",
    "upload_dir",
    "upload_file",
    "write_bytes",
    "write_stream",
    "write_text",
]
