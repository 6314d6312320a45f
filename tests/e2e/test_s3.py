"""`cai run` against real S3 (SeaweedFS): prompts from a bucket, the run root in a bucket, and the failures."""
from __future__ import annotations

import json
import os

import pytest

from tests.e2e.test_local_run import SMALL, STEPS, cai

pytestmark = [pytest.mark.s3, pytest.mark.slow]


@pytest.fixture
def env(s3_env, tmp_path_factory):
    env = dict(os.environ, CAI_CACHE_DIR=str(tmp_path_factory.getbasetemp() / "cai-cache"))
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    return env


def test_whole_run_on_s3_and_rerun_reuses(s3_bucket, s3_client, env):
    rows = [{"prompt": f"How do I keep basil alive, take {i}?"} for i in range(6)]
    s3_client.put_object(Bucket=s3_bucket, Key="in/prompts.jsonl", Body="".join(json.dumps(r) + "\n" for r in rows))
    args = ["run", "--run-id", "s3run", "--output-dir", f"s3://{s3_bucket}/runs",
            "--set", f"prompts.source=s3://{s3_bucket}/in/prompts.jsonl"]
    for item in SMALL:
        args += ["--set", item]
    first = cai(*args, env=env)
    assert f"s3://{s3_bucket}/runs/s3run/report.html" in first.stdout
    keys = {o["Key"] for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
            for o in page.get("Contents", [])}
    for step in STEPS:
        assert f"runs/s3run/{step}/_MANIFEST.json" in keys, step
    for name in ("report.html", "report.md", "metrics.json", "config.yaml"):
        assert f"runs/s3run/{name}" in keys
    metrics = json.loads(s3_client.get_object(Bucket=s3_bucket, Key="runs/s3run/metrics.json")["Body"].read())
    assert metrics["prepare_prompts"]["rows_out"] == 6
    second = cai(*args, env=env)
    assert all(f"[cai] {step}: reused" in second.stdout for step in STEPS)


def test_missing_bucket_fails_before_anything_runs(env):
    proc = cai("run", "--output-dir", "s3://no-such-bucket-cai/runs", env=env, check=False)
    assert proc.returncode == 2
    assert "s3://no-such-bucket-cai/runs" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr and "[cai]" not in proc.stdout


def test_endpoint_down_fails_fast_and_clearly(env):
    env = dict(env, AWS_ENDPOINT_URL_S3="http://127.0.0.1:9")
    proc = cai("run", "--output-dir", "s3://bucket/runs", env=env, check=False)
    assert proc.returncode == 2 and "unreachable" in proc.stderr and "127.0.0.1:9" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_wrong_credentials_fail_clearly(s3_auth_endpoint, env):
    env = dict(env, AWS_ENDPOINT_URL_S3=s3_auth_endpoint.endpoint, AWS_ACCESS_KEY_ID=s3_auth_endpoint.access_key,
               AWS_SECRET_ACCESS_KEY="not-the-secret")
    proc = cai("run", "--output-dir", "s3://bucket/runs", env=env, check=False)
    assert proc.returncode == 2 and "s3://bucket/runs" in proc.stderr
    assert "SignatureDoesNotMatch" in proc.stderr or "credentials" in proc.stderr.lower()
    assert "Traceback" not in proc.stderr
