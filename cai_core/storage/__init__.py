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
from cai_core.storage.config import StorageConfig, resolve_endpoint
from cai_core.storage.dirs import copy_dir, download_dir, upload_dir
from cai_core.storage.errors import NotFoundError
from cai_core.storage.files import (
    check_writable,
    copy_file,
    delete,
    delete_prefix,
    download_file,
    exists,
    list_files,
    object_version,
    read_bytes,
    read_text,
    upload_file,
    write_bytes,
    write_stream,
    write_text,
)
from cai_core.storage.local import file_sha256
from cai_core.storage.manifest import MANIFEST_NAME, read_manifest
from cai_core.storage.uris import is_remote, join

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
    "file_sha256",
    "is_remote",
    "join",
    "list_files",
    "object_version",
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
