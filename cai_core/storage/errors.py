"""Error mapping: botocore and OS errors become one `StorageError` naming the URI and the cause."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from cai_core.errors import StorageError
from cai_core.storage.config import _DEFAULT, StorageConfig, resolve_endpoint
from cai_core.storage.uris import _split, is_remote


class NotFoundError(StorageError):
    """The file or object does not exist (the bucket or directory above it does)."""



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
            return StorageError, (f"bad credentials: the access key id is not known to {endpoint} "
                                  "(InvalidAccessKeyId; check AWS_ACCESS_KEY_ID)")
        if code == "SignatureDoesNotMatch":
            return StorageError, ("bad credentials: the secret key does not match the access key "
                                  "(SignatureDoesNotMatch; check AWS_SECRET_ACCESS_KEY)")
        if code in ("ExpiredToken", "InvalidToken", "TokenRefreshRequired", "RequestExpired"):
            return StorageError, f"bad credentials: the session token is expired or invalid ({code})"
        if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled") or status == 403:
            # Some stores answer a write to a missing bucket with AccessDenied.
            if bucket and _bucket_missing(client, bucket):
                return StorageError, f"bucket '{bucket}' does not exist at {endpoint}"
            return StorageError, (f"access denied ({code or status}): "
                                  "the credentials are wrong or lack permission for this bucket/key")
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
