"""How to reach S3 and move bytes (`StorageConfig`), and the S3 endpoint in use."""
from __future__ import annotations

import os
from dataclasses import dataclass

from cai_core.config.base import ConfigBase, require

_MB = 1024 * 1024


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
        require(5 <= self.multipart_threshold_mb <= 5 * 1024, "multipart_threshold_mb",
                f"must be between 5 and 5120, got {self.multipart_threshold_mb}")
        require(5 <= self.multipart_chunksize_mb <= 5 * 1024, "multipart_chunksize_mb",
                f"must be between 5 and 5120 (S3's part-size limits), got {self.multipart_chunksize_mb}")
        require(1 <= self.max_concurrency <= 256, "max_concurrency",
                f"must be between 1 and 256, got {self.max_concurrency}")
        require(0 < self.connect_timeout_s <= 600, "connect_timeout_s",
                f"must be > 0 and <= 600, got {self.connect_timeout_s}")
        require(1 <= self.max_attempts <= 20, "max_attempts", f"must be between 1 and 20, got {self.max_attempts}")


_DEFAULT = StorageConfig()


def resolve_endpoint(cfg: StorageConfig | None = None) -> str | None:
    """The S3 endpoint in use: the config's, else AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, else None (AWS)."""
    cfg = cfg or _DEFAULT
    return cfg.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
