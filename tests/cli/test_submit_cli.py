"""`cai submit` from a laptop: a token, a Dex session cookie or nothing; the errors name what is wrong;
the preflight tells which training API the cluster serves.

The KFP API (and a Kubeflow gateway with Dex) is the stub in tests/kfp_stub.py, the Kubernetes
discovery API its FakeDiscovery; the real kfp.Client and kubernetes client talk HTTP to them.
"""
from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from cai_core.cli.commands.submit import Auth, resolve_auth, training_api_preflight
from cai_core.cli.main import cli
from cai_core.errors import CaiError
from cai_core.k8s.apis import advice, served_training_apis
from tests.kfp_stub import COOKIE, TOKEN, FakeDiscovery, FakeKFP, Server, isolate, write_kubeconfig

pytestmark = pytest.mark.filterwarnings("ignore:This client only works with Kubeflow Pipeline:FutureWarning")
BOTH = {"kubeflow.org/v1": ["pytorchjobs", "profiles"], "trainer.kubeflow.org/v1alpha1": ["trainjobs"]}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    isolate(tmp_path, monkeypatch)


@pytest.fixture
def kfp_api():
    fake = FakeKFP()
    yield fake
    fake.close()


@pytest.fixture
def gateway():
    """Multi-user Kubeflow behind Dex: the cookie or the token gets in, anything else meets the login page."""
    fake = FakeKFP(token=TOKEN, cookie=COOKIE, gateway=True, namespaces={"team-a"})
    yield fake
    fake.close()


def discovery(tmp_path, monkeypatch, served, status=None) -> FakeDiscovery:
    fake = FakeDiscovery(served, status=status)
    monkeypatch.setenv("KUBECONFIG", write_kubeconfig(tmp_path / "kubeconfig", fake.url))
    return fake


def submit(host, *args):
    result = CliRunner().invoke(cli, ["submit", "--host", host, "-n", "team-a", "--no-check-secrets",
                                      "--run-id", "laptop-1", *args])
    return result


def error(result) -> str:
    assert isinstance(result.exception, CaiError), (result.output, result.exception)
    return str(result.exception)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- the three ways in ----------------------------------------------------------------------------

def test_token_submits_one_run_with_the_bearer_header(kfp_api):
    result = submit(kfp_api.url, "--token", TOKEN)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "auth: bearer token (--token / KF_PIPELINES_TOKEN)" in result.output
    assert "submitted run laptop-1" in result.output
    (spec,) = kfp_api.pipeline_specs
    assert spec["pipelineInfo"]["name"] == "cai"
    assert kfp_api.runs[0]["runtime_config"]["parameters"]["run_root"].endswith("/laptop-1")
    assert kfp_api.credentials_seen() == {(f"Bearer {TOKEN}", None)}
    asked = [(method, path) for method, path, _, _ in kfp_api.server.requests]
    # the preflight asks once (healthz for the release, the experiment), then kfp.Client looks the experiment up,
    # makes it and creates the run
    assert asked == [("GET", "/apis/v2beta1/healthz"), ("GET", "/apis/v2beta1/experiments"),
                     ("GET", "/apis/v2beta1/experiments"), ("POST", "/apis/v2beta1/experiments"),
                     ("POST", "/apis/v2beta1/runs")], asked


def test_cookie_submits_through_the_gateway_with_the_cookie_only(gateway):
    result = submit(gateway.url + "/pipeline", "--cookie", COOKIE)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "auth: session cookie oauth2_proxy_kubeflow" in result.output
    assert "experiment cai does not exist in namespace team-a yet: the run creates it" in result.output
    assert len(gateway.runs) == 1 and [e["display_name"] for e in gateway.experiments.values()] == ["cai"]
    assert gateway.credentials_seen("/pipeline/apis/") == {(None, COOKIE)}


def test_no_credentials_on_a_port_forward():
    fake = FakeKFP(token=None)
    try:
        result = submit(fake.url)
        assert result.exit_code == 0, (result.output, result.exception)
        assert "auth: none (a port-forward or a single-user KFP)" in result.output
        assert fake.credentials_seen() == {(None, None)} and len(fake.runs) == 1
    finally:
        fake.close()


def test_env_cookie_and_pasted_prefixes(gateway, monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_COOKIE", f"Cookie: {COOKIE}")
    result = submit(gateway.url + "/pipeline")
    assert result.exit_code == 0, (result.output, result.exception)
    assert resolve_auth("Bearer abc", None, None) == Auth(token="abc", token_source="--token / KF_PIPELINES_TOKEN")


def test_cookie_without_a_name_is_refused_before_any_request(kfp_api):
    msg = error(submit(kfp_api.url, "--cookie", "d2h5IGRlY29kZSB0aGlz"))
    assert "give the cookie as NAME=VALUE" in msg and "oauth2_proxy_kubeflow=" in msg
    assert kfp_api.server.requests == []


# -- the errors name what is wrong ------------------------------------------------------------------

def test_expired_token_says_how_to_make_a_fresh_one(kfp_api):
    msg = error(submit(kfp_api.url, "--token", "expired"))
    assert "rejected the bearer token from --token / KF_PIPELINES_TOKEN (HTTP 401" in msg
    assert "expired or its audience is not pipelines.kubeflow.org" in msg
    assert "kubectl -n team-a create token default-editor --audience pipelines.kubeflow.org" in msg
    assert kfp_api.runs == []


def test_missing_credentials_say_which_to_pass(kfp_api):
    msg = error(submit(kfp_api.url))
    assert "needs credentials (HTTP 401" in msg and "--token" in msg and "--cookie" in msg


def test_cookie_rejected_by_the_api_itself():
    fake = FakeKFP(token=TOKEN, cookie=COOKIE)
    try:
        msg = error(submit(fake.url, "--cookie", "oauth2_proxy_kubeflow=stale"))
        assert "rejected the session cookie oauth2_proxy_kubeflow (HTTP 401" in msg and "log in again" in msg
    finally:
        fake.close()


def test_dex_redirect_means_the_cookie_is_missing_or_expired(gateway):
    msg = error(submit(gateway.url + "/pipeline", "--cookie", "oauth2_proxy_kubeflow=expired"))
    assert "redirected to a login page (/dex/auth?" in msg
    assert "the session cookie oauth2_proxy_kubeflow is missing or expired" in msg
    msg = error(submit(gateway.url + "/pipeline"))
    assert "this Kubeflow needs a login" in msg and "--cookie 'oauth2_proxy_kubeflow=...'" in msg
    assert gateway.runs == []


def test_gateway_that_takes_no_tokens():
    fake = FakeKFP(token=None, cookie=COOKIE, gateway=True)
    try:
        msg = error(submit(fake.url + "/pipeline", "--token", TOKEN))
        assert "the gateway does not take bearer tokens" in msg and "port-forward svc/ml-pipeline 8888:8888" in msg
    finally:
        fake.close()


def test_unreachable_host_says_so_and_how_to_port_forward():
    msg = error(submit(f"http://127.0.0.1:{_closed_port()}", "--token", TOKEN))
    assert msg.startswith("cannot reach the KFP API at http://127.0.0.1:") and "connection refused" in msg
    assert "kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80" in msg


def test_unknown_namespace_is_named(gateway):
    result = CliRunner().invoke(cli, ["submit", "--host", gateway.url + "/pipeline", "-n", "team-b",
                                      "--no-check-secrets", "--cookie", COOKIE])
    msg = error(result)
    assert "does not let this session use namespace team-b (HTTP 403" in msg and "kubectl get profiles" in msg
    assert gateway.runs == []


def test_existing_experiment_is_found(kfp_api):
    assert submit(kfp_api.url, "--token", TOKEN).exit_code == 0
    result = submit(kfp_api.url, "--token", TOKEN, "--run-id", "laptop-2")
    assert "experiment cai found in namespace team-a" in result.output and len(kfp_api.runs) == 2


def test_host_that_is_not_kfp_or_is_a_login_page():
    fake = FakeKFP(token=None, healthz_status=404)
    try:
        assert "answered HTTP 404 on /apis/v2beta1/healthz" in error(submit(fake.url))
    finally:
        fake.close()
    dashboard = Server(lambda *request: (200, {"Content-Type": "text/html"}, b"<html><title>Kubeflow</title></html>"))
    try:  # the dashboard's address without /pipeline: its single-page app answers every path with HTML
        msg = error(submit(dashboard.url, "--cookie", COOKIE))
        assert "answered /apis/v2beta1/healthz with a page that is not JSON ('<html><title>Kubeflow" in msg
    finally:
        dashboard.close()


# -- which training API the cluster serves --------------------------------------------------------------

def test_discovery_reads_the_resources_not_just_the_group(tmp_path, monkeypatch):
    fake = discovery(tmp_path, monkeypatch, {"kubeflow.org/v1": ["profiles", "notebooks"]})
    try:
        assert served_training_apis() == {"pytorchjob": False, "trainjob": False}
    finally:
        fake.close()
    fake = discovery(tmp_path, monkeypatch, BOTH)
    try:
        assert served_training_apis() == {"pytorchjob": True, "trainjob": True}
        assert {path for _, path, _, _ in fake.server.requests} == {"/apis/kubeflow.org/v1",
                                                                   "/apis/trainer.kubeflow.org/v1alpha1"}
    finally:
        fake.close()


def test_preflight_warns_when_the_launcher_needs_an_api_the_cluster_lacks(kfp_api, tmp_path, monkeypatch):
    fake = discovery(tmp_path, monkeypatch, {"trainer.kubeflow.org/v1alpha1": ["trainjobs"]})
    try:
        result = submit(kfp_api.url, "--token", TOKEN)  # the cluster config's train.launcher: pytorchjob
        assert result.exit_code == 0, (result.output, result.exception)
        assert ("preflight: training APIs: kubeflow.org/v1 pytorchjobs (training-operator v1) not served; "
                "trainer.kubeflow.org/v1alpha1 trainjobs (Kubeflow Trainer v2) served") in result.output
        assert "preflight: use train.launcher: trainjob; the config has pytorchjob" in result.output
        assert "preflight: WARNING: train.launcher is pytorchjob, but the cluster does not serve kubeflow.org/v1 " \
               "pytorchjobs" in result.output
        assert "--set train.launcher=trainjob" in result.output
        result = submit(kfp_api.url, "--token", TOKEN, "--run-id", "laptop-2", "--no-check-training-api")
        assert "training API" not in result.output
        assert len([r for r in fake.server.requests if r[1].startswith("/apis/")]) == 2  # the first submit only
    finally:
        fake.close()


def test_trainjob_launcher_on_a_cluster_with_both_or_with_pytorchjobs_only():
    both = advice("trainjob", {"pytorchjob": True, "trainjob": True})
    assert not any(line.startswith("WARNING") for line in both)
    assert "use train.launcher: trainjob (Kubeflow Trainer v2) or pytorchjob" in both[1]
    old = advice("trainjob", {"pytorchjob": True, "trainjob": False})
    assert old[-1].startswith("WARNING: train.launcher is trainjob") and "set train.launcher: pytorchjob" in old[-1]
    assert advice("local", {})[1].startswith("neither is served: train.launcher: local")
    assert not any(line.startswith("WARNING") for line in advice("local", {}))


def test_no_cluster_is_one_line_and_the_submit_goes_on(kfp_api, tmp_path, monkeypatch):
    result = submit(kfp_api.url, "--token", TOKEN)
    assert result.exit_code == 0, (result.output, result.exception)
    lines = [line for line in result.output.splitlines() if "training API" in line]
    assert lines == [line for line in lines if line.startswith("preflight: training API not checked: no Kubernetes "
                                                                "cluster configured")] and len(lines) == 1
    monkeypatch.setenv("KUBECONFIG", write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{_closed_port()}"))
    (line,) = training_api_preflight("pytorchjob", timeout_s=1)
    assert line.startswith("training API not checked: the Kubernetes API at http://127.0.0.1:") and "did not answer" in line


def test_discovery_forbidden_is_one_line(tmp_path, monkeypatch):
    fake = discovery(tmp_path, monkeypatch, BOTH, status=403)
    try:
        (line,) = training_api_preflight("pytorchjob")
        assert "refused the discovery request (HTTP 403)" in line
    finally:
        fake.close()
