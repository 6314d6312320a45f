"""S3 clients (cached per config and credential environment) and transfer managers."""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Iterator

from cai_core.errors import StorageError
from cai_core.storage.config import _DEFAULT, _MB, StorageConfig, resolve_endpoint
from cai_core.storage.errors import _guard
from cai_core.storage.uris import _split

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


def _s3(uri: str, cfg: StorageConfig | None, *, need_key: bool = True) -> tuple[str, str, Any, StorageConfig]:
    cfg = cfg or _DEFAULT
    bucket, key = _split(uri)
    if need_key and (not key or key.endswith("/")):
        raise StorageError(f"{uri}: expected an object URI s3://bucket/key, not a bucket or a 'directory'")
    with _guard("access", uri, cfg):  # e.g. half-set credentials fail when the client is made
        client = _client(cfg)
    return bucket, key, client, cfg
