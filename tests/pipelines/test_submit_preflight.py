"""`cai submit`: every bad input is caught before anything is submitted.

A fake Kubeflow Pipelines API (tests/kfp_stub.py) and a fake Kubernetes API run on 127.0.0.1 in
threads; the real kfp.Client and the real kubernetes client talk HTTP to them.
"""
from __future__ import annotations

import base64
import json
import socket
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cai_core.cli.commands.submit import submit_cmd
from cai_core.config.loading import load_cluster_run_config
from cai_core.errors import CaiError, ConfigError
from cai_pipelines.cluster import Http, check_kfp_host, check_secrets, submit
from tests.kfp_stub import TOKEN, FakeKFP
from tests.kfp_stub import Server as _Server

pytestmark = pytest.mark.filterwarnings("ignore:This client only works with Kubeflow Pipeline:FutureWarning")


class FakeKube:
    """The Secrets part of the Kubernetes API."""

    def __init__(self, secrets: dict[str, dict[str, str]], forbidden: bool = False):
        self.secrets, self.forbidden = secrets, forbidden
        self.server = _Server(self.handle)
        self.url = self.server.url

    def handle(self, method, path, query, headers, body):
        parts = path.strip("/").split("/")  # api v1 namespaces NS secrets NAME
        if self.forbidden:
            return 403, {}, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden",
                             "message": "secrets is forbidden", "code": 403}
        if len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "secrets":
            ns, name = parts[3], parts[5]
            data = self.secrets.get(f"{ns}/{name}")
            if data is None:
                return 404, {}, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                 "message": f'secrets "{name}" not found', "code": 404}
            return 200, {}, {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": name, "namespace": ns},
                             "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
        return 404, {}, {"kind": "Status", "code": 404, "message": "not found"}


ALL_SECRETS = {"team-a/cai-openai": {"api-key": "x"}, "team-a/cai-s3": {"access-key-id": "a", "secret-access-key": "b"},
               "team-a/cai-hf": {"token": "t"}}


@pytest.fixture
def kfp_api():
    fake = FakeKFP()
    yield fake
    fake.server.close()


@pytest.fixture
def kube(tmp_path, monkeypatch):
    """A fake cluster with all default Secrets, wired in through a kubeconfig."""
    fake = FakeKube(dict(ALL_SECRETS))
    _kubeconfig(tmp_path, monkeypatch, fake.url)
    yield fake
    fake.server.close()


def _kubeconfig(tmp_path: Path, monkeypatch, server: str) -> None:
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
           "clusters": [{"name": "fake", "cluster": {"server": server}}],
           "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u", "namespace": "team-a"}}],
           "users": [{"name": "u", "user": {"token": "kube-token"}}]}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # kfp.Client writes ~/.config/kfp/context.json
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    monkeypatch.delenv("KF_PIPELINES_TOKEN", raising=False)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-sa-token"))


def _cfg(*overrides):
    return load_cluster_run_config(None, ["cluster.namespace=team-a", *overrides])


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- the happy path: what a good submission sends -------------------------------------------

def test_submit_creates_one_run_with_the_compiled_pipeline(kfp_api, kube):
    notes = []
    result = submit(_cfg(), kfp_api.url, experiment="retrain", run_name="nightly", token=TOKEN,
                    run_id="r-0001", service_account="default-editor", log=notes.append)
    assert result.kfp_run_id == "run-1" and result.run_id == "r-0001"
    assert result.run_root == "s3://cai-runs/runs/r-0001"
    assert any("4 Secret keys found in namespace team-a" in n for n in notes)
    (run,) = kfp_api.runs
    assert run["display_name"] == "nightly"
    assert run["service_account"] == "default-editor"
    spec, platform = run["pipeline_spec"]["pipeline_spec"], run["pipeline_spec"]["platform_spec"]
    assert spec["pipelineInfo"]["name"] == "cai"
    # the package names no run; the run's identity is its run_root argument (--run-id still works)
    assert spec["root"]["inputDefinitions"]["parameters"]["run_root"]["defaultValue"] == "s3://cai-runs/runs/{run_id}"
    assert run["runtime_config"]["parameters"] == {"run_root": "s3://cai-runs/runs/r-0001"}
    assert not any("cai/run-id" in ex["podMetadata"]["labels"]
                   for ex in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values())
    assert "r-0001" not in json.dumps(run["pipeline_spec"])
    assert [e["display_name"] for e in kfp_api.experiments.values()] == ["retrain"]
    auth = [{k.lower(): v for k, v in h.items()}.get("authorization") for _, _, h, _ in kfp_api.server.requests]
    assert auth and set(auth) == {f"Bearer {TOKEN}"}


def test_a_backend_older_than_the_package_is_refused_before_the_run(kube):
    fake = FakeKFP(release="2.4.1")  # Kubeflow 1.9's KFP: no secretNameParameter, no task retries
    try:
        with pytest.raises(CaiError, match=r"the KFP backend is 2\.4\.1; this package needs KFP backend 2\.5\.0 or "
                                           r"later \(secretNameParameter \(Secrets as env\), task retries.*nothing "
                                           r"was submitted"):
            submit(_cfg(), fake.url, token=TOKEN, run_id="r-old")
        assert not fake.runs
    finally:
        fake.server.close()
    notes: list[str] = []
    fake = FakeKFP(release="v2.15.0")
    try:
        submit(_cfg(), fake.url, token=TOKEN, run_id="r-new", log=notes.append)
        assert "KFP backend 2.15.0 runs this package (needs 2.5.0 or later)" in notes and len(fake.runs) == 1
        platform = fake.runs[0]["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]
        refs = [ref for ex in platform["executors"].values() for ref in ex.get("secretAsEnv", [])]
        assert refs and not any("optional" in ref for ref in refs)  # backends before 2.15 refuse the field
    finally:
        fake.server.close()


def test_skip_existing_submits_once(kfp_api):
    cfg = _cfg()
    first = submit(cfg, kfp_api.url, token=TOKEN, run_id="cfg-abc", run_name="cfg-abc", skip_existing=True,
                   check_cluster_secrets=False)
    second = submit(cfg, kfp_api.url, token=TOKEN, run_id="cfg-abc", run_name="cfg-abc", skip_existing=True,
                    check_cluster_secrets=False)
    assert not first.skipped and second.skipped and second.kfp_run_id == first.kfp_run_id
    assert len(kfp_api.runs) == 1


def test_cli_submit(kfp_api, kube):
    result = CliRunner().invoke(submit_cmd, ["--host", kfp_api.url, "-n", "team-a", "--existing-token", TOKEN,
                                             "--run-id", "cli-1", "--set", "cluster.tag=0.1.0"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "submitted run cli-1" in result.output
    assert "kubectl get pytorchjobs -n team-a -l cai/run-id=cli-1" in result.output
    assert kfp_api.runs[0]["runtime_config"]["parameters"]["run_root"].endswith("/cli-1")
    assert "preflight: kfp host" in result.output and len(kfp_api.runs) == 1


def test_cli_token_from_file_and_env(kfp_api, tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    result = CliRunner().invoke(submit_cmd, ["--host", kfp_api.url, "-n", "team-a", "--token-file", str(token_file),
                                             "--no-check-secrets"])
    assert result.exit_code == 0, (result.output, result.exception)
    monkeypatch.setenv("KF_PIPELINES_ENDPOINT", kfp_api.url)
    monkeypatch.setenv("KF_PIPELINES_TOKEN", TOKEN)
    result = CliRunner().invoke(submit_cmd, ["-n", "team-a", "--no-check-secrets"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert len(kfp_api.runs) == 2


# -- bad input: each one a clear CaiError, and nothing submitted ------------------------------

def test_kfp_host_that_does_not_answer_fails_fast():
    start = time.monotonic()
    with pytest.raises(CaiError, match=r"does not answer \(connection refused"):
        submit(_cfg(), f"http://127.0.0.1:{_closed_port()}", token=TOKEN, check_cluster_secrets=False)
    assert time.monotonic() - start < 30  # fast: no retry loop (a loose bound: a loaded machine cannot reach it)


def test_kfp_host_that_accepts_but_never_answers_times_out():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
    try:
        start = time.monotonic()
        with pytest.raises(CaiError, match=r"does not answer \(no answer in time within 0.5s\)"):
            submit(_cfg(), f"http://127.0.0.1:{silent.getsockname()[1]}", token=TOKEN, check_cluster_secrets=False,
                   connect_timeout_s=0.5)
        assert time.monotonic() - start < 30  # the 0.5 s timeout fired (without it this never returns)
    finally:
        silent.close()


def test_token_rejected(kfp_api):
    with pytest.raises(CaiError, match=r"rejected the token \(HTTP 401: Unauthenticated: invalid token\)"):
        submit(_cfg(), kfp_api.url, token="stale-token", check_cluster_secrets=False)
    assert kfp_api.runs == []


def test_no_token_where_one_is_needed(kfp_api):
    with pytest.raises(CaiError, match=r"needs credentials \(HTTP 401.*--existing-token"):
        submit(_cfg(), kfp_api.url, check_cluster_secrets=False)


def test_login_redirect():
    fake = FakeKFP(redirect=True)
    try:
        with pytest.raises(CaiError, match=r"redirected /apis/v2beta1/healthz to a login page \(/dex/auth"):
            check_kfp_host(Http(fake.url), "team-a")
    finally:
        fake.server.close()


def test_host_that_is_not_kfp():
    fake = FakeKFP(token=None, healthz_status=404)
    try:
        with pytest.raises(CaiError, match=r"answered HTTP 404 on /apis/v2beta1/healthz.*Kubeflow Pipelines API"):
            check_kfp_host(Http(fake.url), "team-a")
    finally:
        fake.server.close()


def test_host_without_scheme():
    with pytest.raises(CaiError, match="must start with http"):
        submit(_cfg(), "kubeflow.example.com", token=TOKEN)


def test_missing_secret_key(kfp_api, tmp_path, monkeypatch):
    secrets = dict(ALL_SECRETS)
    secrets["team-a/cai-openai"] = {"apikey": "x"}  # the key is named differently
    fake = FakeKube(secrets)
    _kubeconfig(tmp_path, monkeypatch, fake.url)
    try:
        with pytest.raises(CaiError) as info:
            submit(_cfg(), kfp_api.url, token=TOKEN)
        msg = str(info.value)
        assert "cluster.secrets.openai_api_key: Secret 'cai-openai' in namespace team-a has no key 'api-key'" in msg
        assert "(its keys: apikey)" in msg and "nothing was submitted" in msg
        assert kfp_api.runs == []
    finally:
        fake.server.close()


def test_missing_secret(kfp_api, tmp_path, monkeypatch):
    secrets = {k: v for k, v in ALL_SECRETS.items() if k != "team-a/cai-hf"}
    fake = FakeKube(secrets)
    _kubeconfig(tmp_path, monkeypatch, fake.url)
    try:
        with pytest.raises(CaiError, match=r"cluster.secrets.hf_token: Secret 'cai-hf' does not exist in namespace team-a"):
            submit(_cfg(), kfp_api.url, token=TOKEN)
        assert kfp_api.runs == []
    finally:
        fake.server.close()


def test_secrets_not_readable_or_no_cluster_fall_back_to_static_checks(tmp_path, monkeypatch):
    cfg = _cfg()
    assert "Secret names checked statically only" in check_secrets(cfg, "team-a")  # no kubeconfig at all
    fake = FakeKube({}, forbidden=True)
    _kubeconfig(tmp_path, monkeypatch, fake.url)
    try:
        note = check_secrets(cfg, "team-a")
        assert "not allowed to read Secrets in namespace team-a (HTTP 403)" in note
    finally:
        fake.server.close()
    _kubeconfig(tmp_path, monkeypatch, f"http://127.0.0.1:{_closed_port()}")
    start = time.monotonic()
    assert "did not answer" in check_secrets(cfg, "team-a", timeout_s=1)
    assert time.monotonic() - start < 30  # the 1 s timeout fired (a loose bound: a loaded machine cannot reach it)


@pytest.mark.parametrize("overrides,needle", [
    (["cluster.secrets.openai_api_key={secret: cai_openai, key: api-key}"], "cluster.secrets.openai_api_key.secret"),
    (["cluster.secrets.hf_token={secret: cai-hf, key: 'hf token'}"], "not a valid Secret key"),
    (["cluster.core_image=ghcr.io/org/cai-core"], "has no tag or digest"),
    (["cluster.registry=ghcr.io/Org Name"], "cluster.registry"),
    (["vllm.tensor_parallel_size=3", "vllm.data_parallel_replicas=1"], "data_parallel_replicas (1) must equal gpus (8)"),
    (["vllm.gpus=6", "vllm.tensor_parallel_size=4", "vllm.data_parallel_replicas=2"],
     "tensor_parallel_size (4) x data_parallel_replicas (2) must equal gpus (6)"),
])
def test_bad_config_fails_before_any_network_call(kfp_api, overrides, needle):
    result = CliRunner().invoke(submit_cmd, ["--host", kfp_api.url, "--existing-token", TOKEN,
                                             *sum((["--set", o] for o in overrides), [])])
    assert isinstance(result.exception, ConfigError), result.output
    assert needle in str(result.exception)
    assert kfp_api.server.requests == []  # not even the host was asked


def test_cli_without_host():
    result = CliRunner().invoke(submit_cmd, [])
    assert isinstance(result.exception, CaiError) and "no KFP host" in str(result.exception)


def test_local_output_dir_is_refused_before_the_host_is_asked(kfp_api):
    with pytest.raises(ConfigError, match="output_dir"):
        submit(_cfg("output_dir=runs"), kfp_api.url, token=TOKEN)
    assert kfp_api.server.requests == []
