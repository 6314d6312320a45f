"""`cai submit --wait`: the run is polled until it ends, and a token read from a file is read again at every poll,
since a pod's projected token (the chart's: 7200 s) is rotated long before a day-long wait ends."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from cai_core.cli.main import cli
from cai_core.errors import CaiError
from cai_pipelines import cluster
from tests.kfp_stub import TOKEN, FakeKFP, isolate

pytestmark = pytest.mark.filterwarnings("ignore:This client only works with Kubeflow Pipeline:FutureWarning")


@pytest.fixture(autouse=True)
def _fast_polls(tmp_path, monkeypatch):
    isolate(tmp_path, monkeypatch)
    monkeypatch.setattr(cluster, "WAIT_POLL_S", 0.01)


@pytest.fixture
def kfp_api():
    fake = FakeKFP()
    yield fake
    fake.close()


def _submit(host, *args):
    return CliRunner().invoke(cli, ["submit", "--host", host, "-n", "team-a", "--no-check-secrets",
                                    "--no-check-training-api", "--run-id", "wait-1", "--wait", *args])


def test_a_rotated_token_file_is_read_again_while_waiting(kfp_api, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    kfp_api.states = ["RUNNING", "RUNNING", "RUNNING", "SUCCEEDED"]

    def rotate(fake):  # after the first look, the kubelet rotates the token and the old one stops working
        if fake.gets == 1:
            fake.token = "rotated-token"
            token_file.write_text("rotated-token\n")

    kfp_api.on_get.append(rotate)
    result = _submit(kfp_api.url, "--token-file", str(token_file))
    assert result.exit_code == 0, (result.output, result.exception)
    assert "state:   SUCCEEDED" in result.output and kfp_api.gets == 4
    assert ("Bearer rotated-token", None) in kfp_api.credentials_seen()


def test_a_token_given_as_a_string_that_expires_is_a_clear_error(kfp_api):
    kfp_api.states = ["RUNNING", "RUNNING"]
    kfp_api.on_get.append(lambda fake: setattr(fake, "token", "someone-else"))
    result = _submit(kfp_api.url, "--token", TOKEN)
    assert isinstance(result.exception, CaiError), result.output
    assert "waiting for run run-1: the KFP API answered HTTP 401 (the token has expired" in str(result.exception)


def test_a_failed_run_exits_non_zero_and_a_timeout_says_the_run_goes_on(kfp_api):
    kfp_api.states = ["RUNNING", "FAILED"]
    result = _submit(kfp_api.url, "--token", TOKEN)
    assert isinstance(result.exception, CaiError) and "ended FAILED" in str(result.exception)
    assert kfp_api.gets == 2

    kfp_api.states = ["RUNNING"]  # the next run never ends
    result = _submit(kfp_api.url, "--token", TOKEN, "--timeout", "0.2")
    assert isinstance(result.exception, CaiError), result.output
    assert "is still RUNNING after --timeout 0.2 s of waiting; it goes on in the cluster" in str(result.exception)
