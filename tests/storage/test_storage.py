"""cai_core.storage against local paths and a real S3 (SeaweedFS, see conftest.py)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import time

import pytest

from cai_core import storage
from cai_core.config.base import field_docs
from cai_core.errors import CaiError, ConfigError, StorageError
from cai_core.storage import MANIFEST_NAME, NotFoundError, StorageConfig
from cai_core.storage import dirs as storage_dirs
from cai_core.storage import files as storage_files
from cai_core.storage import local as storage_local
from cai_core.storage import s3 as storage_s3

MB = 1024 * 1024
SMALL_PARTS = StorageConfig(multipart_threshold_mb=5, multipart_chunksize_mb=5)

s3 = pytest.mark.s3


@pytest.fixture(params=["local", pytest.param("s3", marks=s3)])
def root(request, tmp_path) -> str:
    """A fresh directory URI: a local temp dir, or a prefix in a fresh bucket."""
    if request.param == "local":
        return str(tmp_path / "store")
    return f"s3://{request.getfixturevalue('s3_bucket')}/store"


def _tree(path) -> dict[str, bytes]:
    """A small directory: nested, empty and binary files."""
    files = {
        "config.json": b'{"a": 1}\n',
        "weights/model-00001.bin": os.urandom(300_000),
        "weights/model-00002.bin": os.urandom(70_000),
        "empty.txt": b"",
        "deep/er/still.txt": "näive ✓\n".encode(),
    }
    for rel, data in files.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return files


def _read_tree(path) -> dict[str, bytes]:
    return {
        p.relative_to(path).as_posix(): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


class FailingReader(io.RawIOBase):
    """Yields `good` bytes of data, then raises: a producer that crashes mid-stream."""

    def __init__(self, good: int):
        self.left = good

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            raise RuntimeError("producer crashed")
        n = self.left if size is None or size < 0 else min(size, self.left)
        self.left -= n
        return b"x" * n


# ------------------------------------------------------------------ no server


def test_config_fields_documented_and_validated():
    docs = field_docs(StorageConfig)
    assert set(docs) == {
        "endpoint_url", "region", "multipart_threshold_mb", "multipart_chunksize_mb",
        "max_concurrency", "connect_timeout_s", "max_attempts",
    }
    assert all(docs.values())
    assert StorageConfig.from_dict({"multipart_threshold_mb": 5}).multipart_threshold_mb == 5
    for bad in ({"multipart_chunksize_mb": 1}, {"max_attempts": 0}, {"connect_timeout_s": 0},
                {"endpoint_url": "127.0.0.1:8333"}, {"max_concurrency": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            StorageConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="did you mean 'endpoint_url'"):
        StorageConfig.from_dict({"endpoint": "http://x"})


def test_endpoint_resolution(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert storage.resolve_endpoint() is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://generic:1")
    assert storage.resolve_endpoint() == "http://generic:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3only:2")
    assert storage.resolve_endpoint() == "http://s3only:2"
    assert storage.resolve_endpoint(StorageConfig(endpoint_url="http://cfg:3")) == "http://cfg:3"


def test_uris():
    assert storage.is_remote("s3://b/k") and not storage.is_remote("/tmp/x") and not storage.is_remote("file:///x")
    assert storage.join("s3://b", "a", "/c/") == "s3://b/a/c"
    assert storage.join("s3://b/p/", "x.json") == "s3://b/p/x.json"
    assert storage.join("/tmp/a", "b", "/c") == os.path.join("/tmp/a", "b", "c")
    with pytest.raises(StorageError, match="unsupported URI scheme 'gs://'"):
        storage.read_bytes("gs://bucket/key")
    with pytest.raises(StorageError, match="no bucket name"):
        storage.read_bytes("s3:///key")
    with pytest.raises(StorageError, match="expected an object URI"):
        storage.write_bytes("s3://bucket", b"x")
    assert issubclass(StorageError, CaiError) and issubclass(NotFoundError, StorageError)


def test_file_uri_and_bad_utf8(tmp_path):
    storage.write_bytes(f"file://{tmp_path}/a.bin", b"\xff\xfe")
    assert (tmp_path / "a.bin").read_bytes() == b"\xff\xfe"
    with pytest.raises(StorageError, match="not valid utf-8 at byte 0"):
        storage.read_text(str(tmp_path / "a.bin"))
    with pytest.raises(StorageError, match="is a directory"):
        storage.read_bytes(str(tmp_path))


# ----------------------------------------------------------- local and S3 alike


def test_round_trip(root):
    uri = storage.join(root, "sub", "hello.txt")
    assert not storage.exists(uri)
    storage.write_text(uri, "héllo\n")
    assert storage.exists(uri) and storage.read_text(uri) == "héllo\n"
    storage.write_bytes(uri, b"second")  # overwrite
    assert storage.read_bytes(uri) == b"second"
    storage.write_bytes(storage.join(root, "empty"), b"")
    assert storage.read_bytes(storage.join(root, "empty")) == b""


def test_missing_file_is_not_found(root):
    uri = storage.join(root, "nope.json")
    with pytest.raises(NotFoundError, match=f"cannot read {uri}"):
        storage.read_bytes(uri)
    with pytest.raises(NotFoundError):
        storage.download_file(uri, "/tmp/never-written")


def test_list_exists_delete(root):
    names = ["b.txt", "a/2.txt", "a/1.txt", "a/deep/x.bin"]
    for name in names:
        storage.write_bytes(storage.join(root, name), name.encode())
    storage.write_bytes(root + "-sibling/z.txt", b"not under root")
    expected = sorted(storage.join(root, n) for n in names)
    assert storage.list_files(root) == expected
    assert storage.list_files(storage.join(root, "a")) == sorted(storage.join(root, n) for n in names[1:])
    assert storage.list_files(storage.join(root, "missing")) == []
    assert storage.exists(storage.join(root, "a"))  # a directory / prefix
    assert not storage.exists(storage.join(root, "a", "nothing"))

    storage.delete(storage.join(root, "b.txt"))
    storage.delete(storage.join(root, "b.txt"))  # absent: fine
    assert not storage.exists(storage.join(root, "b.txt"))
    assert storage.delete_prefix(storage.join(root, "a")) == 3
    assert storage.list_files(root) == []
    assert storage.read_bytes(root + "-sibling/z.txt") == b"not under root"


def test_upload_download_file(root, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(123_456))
    uri = storage.join(root, "f.bin")
    storage.upload_file(str(src), uri)
    out = tmp_path / "out" / "f.bin"
    storage.download_file(uri, str(out))
    assert out.read_bytes() == src.read_bytes()
    assert [p.name for p in out.parent.iterdir()] == ["f.bin"]  # no temp files left
    with pytest.raises(NotFoundError, match="no such file"):
        storage.upload_file(str(tmp_path / "absent"), uri)


@pytest.mark.parametrize("size", [100, 7 * MB], ids=["put", "multipart"])
def test_crash_mid_write_leaves_nothing(root, size, s3_client_or_none):
    uri = storage.join(root, "out.bin")
    with pytest.raises(RuntimeError, match="producer crashed"):
        storage.write_stream(uri, FailingReader(size), SMALL_PARTS)
    assert not storage.exists(uri)
    assert storage.list_files(root) == []  # no temp file either

    storage.write_bytes(uri, b"old")  # a failed overwrite keeps the old content
    with pytest.raises(RuntimeError):
        storage.write_stream(uri, FailingReader(size), SMALL_PARTS)
    assert storage.read_bytes(uri) == b"old"
    assert storage.list_files(root) == [uri]
    if storage.is_remote(uri):  # the failed multipart upload was aborted
        bucket = uri.split("/")[2]
        assert not s3_client_or_none.list_multipart_uploads(Bucket=bucket).get("Uploads")


@pytest.fixture
def s3_client_or_none(request, root):
    return request.getfixturevalue("s3_client") if storage.is_remote(root) else None


def test_write_stream_round_trip(root):
    data = os.urandom(11 * MB)
    uri = storage.join(root, "stream.bin")
    storage.write_stream(uri, io.BytesIO(data), SMALL_PARTS)
    assert hashlib.sha256(storage.read_bytes(uri)).digest() == hashlib.sha256(data).digest()


# ------------------------------------------------------------------ directories


def _check_manifest(uri: str, files: dict[str, bytes]) -> None:
    manifest = json.loads(storage.read_bytes(storage.join(uri, MANIFEST_NAME)))
    assert manifest["version"] == 1
    assert manifest["files"] == {
        rel: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for rel, data in files.items()
    }


def test_upload_and_download_dir(root, tmp_path):
    files = _tree(tmp_path / "src")
    uri = storage.join(root, "ckpt")
    returned = storage.upload_dir(str(tmp_path / "src"), uri)
    assert set(returned) == set(files)
    _check_manifest(uri, files)
    assert sorted(storage.list_files(uri)) == sorted(storage.join(uri, r) for r in [*files, MANIFEST_NAME])

    dest = tmp_path / "dest"
    storage.download_dir(uri, str(dest))
    assert _read_tree(dest) == files
    assert (dest / MANIFEST_NAME).exists()
    assert [p.name for p in tmp_path.iterdir() if ".partial-" in p.name] == []  # staging removed

    # Download again over the existing directory (files replaced, manifest last).
    (dest / "config.json").write_bytes(b"stale")
    storage.download_dir(uri, str(dest))
    assert _read_tree(dest) == files


@pytest.mark.parametrize(
    "src_kind,dst_kind",
    [("local", "local"), pytest.param("local", "s3", marks=s3), pytest.param("s3", "local", marks=s3),
     pytest.param("s3", "s3", marks=s3)],
)
def test_copy_dir_between_locations(request, tmp_path, src_kind, dst_kind):
    def place(kind: str, name: str) -> str:
        if kind == "local":
            return str(tmp_path / name)
        return f"s3://{request.getfixturevalue('s3_bucket')}/{name}"

    files = _tree(tmp_path / "orig")
    files["big.bin"] = os.urandom(6 * MB)  # multipart upload / copy with 5 MB parts
    (tmp_path / "orig" / "big.bin").write_bytes(files["big.bin"])
    src, dst = place(src_kind, "a"), place(dst_kind, "b")
    storage.upload_dir(str(tmp_path / "orig"), src, SMALL_PARTS)
    storage.copy_dir(src, dst, SMALL_PARTS)
    _check_manifest(dst, files)
    storage.download_dir(dst, str(tmp_path / "check"))
    assert _read_tree(tmp_path / "check") == files


def test_copy_local_dir_regenerates_a_stale_manifest(root, tmp_path):
    """A local work dir restored from a published copy, then rewritten by a rerun, publishes fine."""
    work = tmp_path / "work"
    files = _tree(work)
    storage.copy_dir(str(work), str(work))  # in place: just seals it
    _check_manifest(str(work), files)
    (work / "config.json").write_bytes(b'{"a": 2, "rerun": true}\n')  # the manifest is stale now
    files["config.json"] = (work / "config.json").read_bytes()
    uri = storage.join(root, "published")
    storage.copy_dir(str(work), uri)
    _check_manifest(uri, files)
    storage.copy_dir(str(work), str(work))
    _check_manifest(str(work), files)


def test_incomplete_dir_is_refused(root, tmp_path):
    uri = storage.join(root, "half")
    storage.write_bytes(storage.join(uri, "part-0.jsonl"), b"{}\n")  # a writer that died before its manifest
    dest = tmp_path / "dest"
    with pytest.raises(StorageError, match=f"{uri} is not a complete directory: it has no {MANIFEST_NAME}"):
        storage.download_dir(uri, str(dest))
    assert not dest.exists()
    if storage.is_remote(uri):
        with pytest.raises(StorageError, match="not a complete directory"):
            storage.copy_dir(uri, str(tmp_path / "copy"))


def test_corrupt_dir_is_refused(root, tmp_path):
    files = _tree(tmp_path / "src")
    uri = storage.join(root, "ckpt")
    storage.upload_dir(str(tmp_path / "src"), uri)
    data = bytearray(files["weights/model-00002.bin"])
    data[100] ^= 0xFF  # same size, other content
    storage.write_bytes(storage.join(uri, "weights/model-00002.bin"), bytes(data))
    dest = tmp_path / "dest"
    with pytest.raises(StorageError, match="model-00002.bin: sha256 .* does not match the manifest"):
        storage.download_dir(uri, str(dest))
    assert not dest.exists()
    storage.write_bytes(storage.join(uri, "config.json"), b"{}")
    with pytest.raises(StorageError, match=r"config.json: size 2 does not match the manifest \(9\)"):
        storage.download_dir(uri, str(dest))
    assert [p.name for p in tmp_path.iterdir() if ".partial-" in p.name] == []


def test_unsafe_manifest_is_refused(root, tmp_path):
    uri = storage.join(root, "evil")
    entry = {"size": 1, "sha256": "0" * 64}
    storage.write_text(storage.join(uri, MANIFEST_NAME), json.dumps({"version": 1, "files": {"../../etc/x": entry}}))
    with pytest.raises(StorageError, match="unsafe or invalid path in manifest"):
        storage.download_dir(uri, str(tmp_path / "dest"))
    storage.write_text(storage.join(uri, MANIFEST_NAME), "{not json")
    with pytest.raises(StorageError, match="manifest is not valid JSON"):
        storage.download_dir(uri, str(tmp_path / "dest"))


def test_failed_rewrite_is_never_taken_for_complete(root, tmp_path, monkeypatch):
    """A crash while rewriting a complete dir: S3 is left without a manifest (the old one goes
    first); a local dir is only touched after everything is staged, so it stays the old, complete one."""
    old = _tree(tmp_path / "src")
    uri = storage.join(root, "ckpt")
    storage.upload_dir(str(tmp_path / "src"), uri)
    (tmp_path / "src" / "config.json").write_bytes(b'{"a": 2}\n')

    real, calls = storage_local._copy_stream, []

    def crash_on_third(src, dst):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed mid-upload")
        return real(src, dst)

    for module in (storage_local, storage_dirs):  # hashing before an upload; a local copy
        monkeypatch.setattr(module, "_copy_stream", crash_on_third)
    with pytest.raises(RuntimeError, match="killed mid-upload"):
        storage.upload_dir(str(tmp_path / "src"), uri)
    for module in (storage_local, storage_dirs):
        monkeypatch.setattr(module, "_copy_stream", real)
    if storage.is_remote(uri):
        with pytest.raises(StorageError, match="not a complete directory"):
            storage.download_dir(uri, str(tmp_path / "dest"))
    else:
        storage.download_dir(uri, str(tmp_path / "dest"))
        assert _read_tree(tmp_path / "dest") == old
        assert [p.name for p in (tmp_path / "store").iterdir()] == ["ckpt"]  # staging removed


def test_check_writable_local(tmp_path):
    storage.check_writable(str(tmp_path / "out"))
    assert list((tmp_path / "out").iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="is not writable"):
        storage.check_writable(str(tmp_path / "file" / "sub"))


# ------------------------------------------------------------------- S3 only


@s3
def test_multipart_upload(s3_bucket, s3_client, tmp_path):
    data = os.urandom(12 * MB)
    uri = f"s3://{s3_bucket}/big/blob.bin"
    storage.write_bytes(uri, data, SMALL_PARTS)
    etag = s3_client.head_object(Bucket=s3_bucket, Key="big/blob.bin")["ETag"].strip('"')
    assert etag.endswith("-3"), etag  # 12 MB in 5 MB parts
    assert storage.read_bytes(uri) == data

    src = tmp_path / "blob.bin"
    src.write_bytes(data)
    storage.upload_file(str(src), f"s3://{s3_bucket}/big/file.bin", SMALL_PARTS)
    assert s3_client.head_object(Bucket=s3_bucket, Key="big/file.bin")["ETag"].strip('"').endswith("-3")
    storage.download_file(f"s3://{s3_bucket}/big/file.bin", str(tmp_path / "back.bin"), SMALL_PARTS)
    assert (tmp_path / "back.bin").read_bytes() == data

    # Below the threshold: one plain PUT.
    storage.write_bytes(f"s3://{s3_bucket}/small.bin", data[: 4 * MB], SMALL_PARTS)
    assert "-" not in s3_client.head_object(Bucket=s3_bucket, Key="small.bin")["ETag"]


@s3
def test_list_paginates(s3_bucket, monkeypatch):
    monkeypatch.setattr(storage_files, "_PAGE_SIZE", 7)  # 40 keys -> 6 LIST pages
    uris = [f"s3://{s3_bucket}/many/{i:04d}.txt" for i in range(40)]
    for uri in uris:
        storage.write_bytes(uri, b"x")
    assert storage.list_files(f"s3://{s3_bucket}/many") == uris
    assert storage.delete_prefix(f"s3://{s3_bucket}/many/") == 40
    assert storage.list_files(f"s3://{s3_bucket}/many") == []


@s3
def test_missing_bucket(s3_env):
    uri = "s3://cai-no-such-bucket-4d1f/x.json"
    for call in (
        lambda: storage.read_bytes(uri),
        lambda: storage.write_bytes(uri, b"x"),
        lambda: storage.exists(uri),
        lambda: storage.list_files("s3://cai-no-such-bucket-4d1f/dir"),
        lambda: storage.download_file(uri, "/tmp/cai-never"),
    ):
        with pytest.raises(StorageError, match="bucket 'cai-no-such-bucket-4d1f' does not exist"):
            call()
    with pytest.raises(StorageError, match="s3://cai-no-such-bucket-4d1f/out is not writable: bucket .* does not exist"):
        storage.check_writable("s3://cai-no-such-bucket-4d1f/out")


@s3
def test_check_writable_s3(s3_bucket):
    storage.check_writable(f"s3://{s3_bucket}/runs/r1")
    assert storage.list_files(f"s3://{s3_bucket}") == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_endpoint_down_fails_fast(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    cfg = StorageConfig(endpoint_url=f"http://127.0.0.1:{_closed_port()}")
    start = time.monotonic()
    with pytest.raises(StorageError, match=r"cannot read s3://bucket/key: S3 endpoint http://127.0.0.1:\d+ is unreachable"):
        storage.read_bytes("s3://bucket/key", cfg)
    with pytest.raises(StorageError, match="is not writable: S3 endpoint .* is unreachable"):
        storage.check_writable("s3://bucket/out", cfg)
    with pytest.raises(StorageError, match="unreachable"):
        storage.upload_dir(str(os.path.dirname(__file__)), "s3://bucket/dir", cfg)
    # three calls of max_attempts=3 each take about 8 s on a loaded 2-core machine; the bound is loose (a shared
    # CPU cannot reach it) and still fails a hang or an unbounded retry loop
    assert time.monotonic() - start < 60


def test_no_credentials(monkeypatch, tmp_path):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    cfg = StorageConfig(endpoint_url=f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(StorageError, match="cannot read s3://bucket/key: no S3 credentials configured"):
        storage.read_bytes("s3://bucket/key", cfg)


@s3
def test_wrong_credentials_are_rejected(s3_auth_endpoint, monkeypatch):
    auth = s3_auth_endpoint
    cfg = StorageConfig(endpoint_url=auth.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", auth.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", auth.secret_key)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    import boto3

    boto3.session.Session().client(
        "s3", endpoint_url=auth.endpoint, region_name="us-east-1",
        aws_access_key_id=auth.access_key, aws_secret_access_key=auth.secret_key,
    ).create_bucket(Bucket="guarded")
    uri = "s3://guarded/data.txt"
    storage.write_text(uri, "secret data", cfg)
    storage.check_writable("s3://guarded/out", cfg)
    assert storage.read_text(uri, cfg) == "secret data"

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(StorageError, match=f"cannot read {uri}: bad credentials: .*SignatureDoesNotMatch"):
        storage.read_text(uri, cfg)
    with pytest.raises(StorageError, match="s3://guarded/out is not writable: bad credentials: .*SignatureDoesNotMatch"):
        storage.check_writable("s3://guarded/out", cfg)
    with pytest.raises(StorageError, match="access denied"):  # HEAD answers have no error code
        storage.exists(uri, cfg)

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unknown-key")
    with pytest.raises(StorageError, match=f"cannot write {uri}: bad credentials: .*InvalidAccessKeyId"):
        storage.write_text(uri, "overwritten", cfg)
    with pytest.raises(StorageError, match="InvalidAccessKeyId"):
        storage.list_files("s3://guarded", cfg)

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", auth.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", auth.secret_key)
    assert storage.read_text(uri, cfg) == "secret data"  # nothing was overwritten


def test_half_set_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(StorageError, match="cannot access s3://b/k: incomplete S3 credentials.*AWS_SECRET_ACCESS_KEY"):
        storage.read_bytes("s3://b/k", StorageConfig(endpoint_url="http://127.0.0.1:1"))


def test_client_cache_follows_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    cfg = StorageConfig(endpoint_url="http://127.0.0.1:1")
    first = storage_s3._client(cfg)
    assert storage_s3._client(cfg) is first
    assert storage_s3._client(StorageConfig(endpoint_url="http://127.0.0.1:1")) is first
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "b")
    assert storage_s3._client(cfg) is not first
