"""The PyTorchJob launcher (cai_core/k8s/launcher.py) against a real kube-apiserver, as the pipeline runs it:
with a real TokenRequest token of a service account bound by the chart's own Role and RoleBinding (applied
for real), against the real PyTorchJob CRD. There is no training operator and there are no pods: an admin
client plays the operator by writing the job's status (the CRD's status subresource), and the log streamer
finds no master pod (404s, which it must take quietly).

What only the fake server (tests/fake_k8s.py, tests/k8s/test_launcher.py) can show stays there: pods, the
master's log stream, container restarts and termination messages, and injected watch ERROR events.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlparse

import pytest
import yaml

from cai_core.errors import CaiError
from cai_core.k8s.launcher import (Launcher, TrainingJobCancelled, TrainingJobError, TrainingJobFailed,
                                   TrainingJobTimeout, job_state)
from cai_core.k8s.pytorchjob import GROUP, PLURAL, VERSION, JobSpec, build_job
from tests.k8s.test_helm_chart import ALLOWED_RULES, kinds, template
from tests.k8s_tools import tool

pytestmark = pytest.mark.k8s_real

NS = "launch"
LAUNCHER_SA = "default-editor"  # the chart binds its Role to KFP's runner account (rbac.pipelineServiceAccounts)
FAIL_MESSAGE = "PyTorchJob {name} is failed because 1 Master replica(s) failed."


# ----------------------------------------------------------------------------- the setting


@pytest.fixture(scope="module")
def bound(real_k8s, tmp_path_factory):
    """The chart's ServiceAccount, Role and RoleBinding in NS, and a TokenRequest token of the bound account."""
    docs = template(tool("helm"), tmp_path_factory.mktemp("chart"), None, namespace=NS)
    rbac = [d for d in docs if d["kind"] in ("ServiceAccount", "Role", "RoleBinding")]
    (binding,) = kinds(rbac, "RoleBinding")
    assert [s["name"] for s in binding["subjects"]] == [LAUNCHER_SA]
    real_k8s.service_account(NS, LAUNCHER_SA)  # KFP creates it in a profile namespace
    real_k8s.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump_all(rbac))
    return {"token": real_k8s.token(NS, LAUNCHER_SA), "role": kinds(rbac, "Role")[0]["metadata"]["name"]}


class Recorder:
    """The (api group, resource, verb) of every request an ApiClient sends, as RBAC sees them."""

    def __init__(self, api_client):
        self.seen: set[tuple[str, str, str]] = set()
        rest = api_client.rest_client
        send = rest.request

        def request(method, url, query_params=None, *args, **kwargs):
            self.seen.add(self.rule(method, url, query_params))
            return send(method, url, query_params, *args, **kwargs)

        rest.request = request

    @staticmethod
    def rule(method: str, url: str, query_params) -> tuple[str, str, str]:
        parsed = urlparse(url)
        query = dict(parse_qsl(parsed.query)) | {k: str(v) for k, v in (query_params or [])}
        parts = parsed.path.strip("/").split("/")
        group = "" if parts[0] == "api" else parts[1]
        rest = parts[(2 if parts[0] == "api" else 3):]
        assert rest[0] == "namespaces" and len(rest) >= 3, parsed.path  # every launcher call is namespaced
        resource, tail = rest[2], rest[3:]
        if len(tail) > 1:
            resource += "/" + tail[1]
        named = bool(tail)
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if named else "deletecollection"}.get(method)
        if verb is None:
            verb = "get" if named else ("watch" if query.get("watch", "").lower() == "true" else "list")
        return group, resource, verb


def _manifest(run_id: str, **changes) -> dict:
    spec = JobSpec(stage="sft", run_id=run_id, namespace=NS, image="ghcr.io/cai-project/cai-trainer:0.1.0",
                   data_uri="s3://b/in.jsonl", model_uri="tiny", out_uri="s3://b/out", config={"sft": {}}, **changes)
    return build_job(spec)


class Operator:
    """Plays the training operator with an admin client: writes the job's status conditions."""

    def __init__(self, real_k8s):
        from kubernetes import client

        self.api = client.CustomObjectsApi(real_k8s.api_client())
        self.errors: list[BaseException] = []
        self._t0 = datetime.now(timezone.utc)
        self._tick = 0

    def get(self, name: str) -> dict | None:
        from kubernetes.client.rest import ApiException

        try:
            return self.api.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, manifest: dict) -> dict:
        return self.api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, manifest)

    def delete(self, name: str) -> None:
        self.api.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)

    def condition(self, kind: str, status: str = "True", message: str = "") -> dict:
        self._tick += 1  # strictly later each time (the launcher orders conditions by lastTransitionTime)
        at = (self._t0 + timedelta(seconds=self._tick)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"type": kind, "status": status, "reason": f"PyTorchJob{kind}", "message": message or f"job {kind}",
                "lastUpdateTime": at, "lastTransitionTime": at}

    def set_status(self, name: str, *conditions: dict) -> dict:
        job = self.get(name)
        assert job is not None, f"no job {name} to write the status of"
        job["status"] = {"conditions": list(conditions)}
        return self.api.replace_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, name, job)

    def play(self, steps) -> threading.Thread:
        """Run `steps` (a callable) in a thread; an exception there fails the test (see errors)."""
        def run():
            try:
                steps()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                self.errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


def _wait_for(predicate, seconds: float = 20.0) -> None:
    end = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.05)


def _noted(launcher: Launcher, text: str, count: int = 1):
    return lambda: sum(text in e for e in launcher.events) >= count


def _launcher(real_k8s, token: str, **kw) -> tuple[Launcher, Recorder]:
    api_client = real_k8s.client_for_token(token)
    recorder = Recorder(api_client)
    kw.setdefault("poll_interval_s", 0.5)
    return Launcher(api_client, NS, emit=lambda _line: None, delete_wait_s=20, **kw), recorder


def _phases(launcher: Launcher, name: str) -> list[str]:
    return [e.split(": ", 1)[1].split(" ")[0] for e in launcher.events if e.startswith(f"pytorchjob {name}: ")]


@pytest.fixture
def op(real_k8s):
    operator = Operator(real_k8s)
    yield operator
    assert not operator.errors, operator.errors


# ----------------------------------------------------------------------------- the scenarios


def test_no_controller_pending_then_timeout_then_delete(real_k8s, bound, op):
    manifest = _manifest("no-controller")
    name = manifest["metadata"]["name"]
    launcher, _ = _launcher(real_k8s, bound["token"], timeout_s=2)
    start = time.monotonic()
    with pytest.raises(TrainingJobTimeout, match="did not finish within 2 s"):
        launcher.run(manifest)
    assert time.monotonic() - start < 20
    assert _phases(launcher, name) == ["Pending"]
    assert any(e.startswith(f"timed out after 2 s: deleting pytorchjob {name}") for e in launcher.events)
    assert op.get(name) is None  # really gone from the server


def test_created_running_succeeded(real_k8s, bound, op, caplog):
    caplog.set_level(logging.DEBUG, logger="cai_core.k8s.launcher")
    manifest = _manifest("succeeds")
    name = manifest["metadata"]["name"]
    launcher, _ = _launcher(real_k8s, bound["token"])

    def steps():
        _wait_for(_noted(launcher, f"pytorchjob {name}: Pending"))
        created = op.condition("Created")
        op.set_status(name, created)
        _wait_for(_noted(launcher, f"pytorchjob {name}: Created"))
        running = op.condition("Running")
        op.set_status(name, created, running)
        _wait_for(_noted(launcher, f"pytorchjob {name}: Running"))
        time.sleep(1.5)  # the log streamer looks for the master pod meanwhile (there is none)
        op.set_status(name, created, {**running, "status": "False"}, op.condition("Succeeded"))

    op.play(steps)
    final = launcher.run(manifest)
    assert job_state(final).phase == "Succeeded"
    assert _phases(launcher, name) == ["Pending", "Created", "Running", "Succeeded"]
    assert op.get(name) is not None  # a finished job stays (the operator's TTL removes it)
    # no pod: the streamer met 404s only, never a 403 (the Role lets it read pods)
    problems = [r.getMessage() for r in caplog.records if r.name == "cai_core.k8s.launcher"]
    assert not [m for m in problems if "403" in m or "Forbidden" in m], problems


def test_failed_carries_the_conditions_message(real_k8s, bound, op):
    manifest = _manifest("fails")
    name = manifest["metadata"]["name"]
    launcher, _ = _launcher(real_k8s, bound["token"])

    def steps():
        _wait_for(_noted(launcher, f"pytorchjob {name}: Pending"))
        created, running = op.condition("Created"), op.condition("Running")
        op.set_status(name, created, running)
        _wait_for(_noted(launcher, f"pytorchjob {name}: Running"))
        op.set_status(name, created, {**running, "status": "False"},
                      op.condition("Failed", message=FAIL_MESSAGE.format(name=name)))

    op.play(steps)
    with pytest.raises(TrainingJobFailed) as err:
        launcher.run(manifest)
    message = str(err.value)
    assert message.startswith(f"pytorchjob {NS}/{name} failed: " + FAIL_MESSAGE.format(name=name))
    assert "master container" not in message and "last lines" not in message  # no pod, no log: nothing made up
    assert op.get(name) is not None  # kept for its logs


def test_409_then_reattach(real_k8s, bound, op):
    manifest = _manifest("reattach")
    name = manifest["metadata"]["name"]
    first = op.create(manifest)  # a previous launcher pod created it
    launcher, recorder = _launcher(real_k8s, bound["token"])

    def steps():
        _wait_for(_noted(launcher, "re-attached"))
        op.set_status(name, op.condition("Created"), op.condition("Running"))
        _wait_for(_noted(launcher, f"pytorchjob {name}: Running"))
        op.set_status(name, op.condition("Created"), op.condition("Running", "False"), op.condition("Succeeded"))

    op.play(steps)
    final = launcher.run(manifest)
    assert any(e == f"re-attached to existing pytorchjob {NS}/{name} (Pending)" for e in launcher.events)
    assert final["metadata"]["uid"] == first["metadata"]["uid"]  # the same job, not a new one
    assert (GROUP, PLURAL, "create") in recorder.seen  # it did try to create (and got the 409)


def test_a_failed_job_of_the_same_name_is_replaced(real_k8s, bound, op):
    manifest = _manifest("replaced")
    name = manifest["metadata"]["name"]
    old = op.create(manifest)
    op.set_status(name, op.condition("Created"), op.condition("Failed", message="the last attempt failed"))
    launcher, _ = _launcher(real_k8s, bound["token"])

    def steps():
        _wait_for(_noted(launcher, f"created pytorchjob {NS}/{name}"))
        job = op.get(name)
        assert job["metadata"]["uid"] != old["metadata"]["uid"]
        op.set_status(name, op.condition("Created"), op.condition("Succeeded"))

    op.play(steps)
    final = launcher.run(manifest)
    assert any("failed (the last attempt failed); deleting it and starting a new attempt" in e
               for e in launcher.events)
    assert final["metadata"]["uid"] != old["metadata"]["uid"] and job_state(final).phase == "Succeeded"


def test_a_running_job_of_another_spec_is_refused(real_k8s, bound, op):
    other = _manifest("other-spec", nodes=2)  # same run id and stage, so the same name; another spec
    name = other["metadata"]["name"]
    before = op.create(other)
    op.set_status(name, op.condition("Created"), op.condition("Running"))
    launcher, _ = _launcher(real_k8s, bound["token"])
    with pytest.raises(CaiError, match=r"is Running with another config .*kubectl delete pytorchjob"):
        launcher.run(_manifest("other-spec"))
    after = op.get(name)
    assert after["metadata"]["uid"] == before["metadata"]["uid"] and job_state(after).phase == "Running"


def test_a_job_deleted_by_someone_else_is_an_error(real_k8s, bound, op):
    manifest = _manifest("deleted-by-someone")
    name = manifest["metadata"]["name"]
    launcher, _ = _launcher(real_k8s, bound["token"])

    def steps():
        _wait_for(_noted(launcher, f"pytorchjob {name}: Pending"))
        op.delete(name)

    op.play(steps)
    with pytest.raises(TrainingJobError, match="was deleted before it finished"):
        launcher.run(manifest)


def test_sigterm_deletes_the_job(real_k8s, bound, op):
    manifest = _manifest("sigterm")
    name = manifest["metadata"]["name"]
    launcher, _ = _launcher(real_k8s, bound["token"])
    before = signal.getsignal(signal.SIGTERM)

    def steps():
        _wait_for(_noted(launcher, f"pytorchjob {name}: Pending"))
        os.kill(os.getpid(), signal.SIGTERM)

    op.play(steps)
    with pytest.raises(TrainingJobCancelled, match="was deleted"):
        launcher.run(manifest)
    assert op.get(name) is None
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_multi_node_job_restarting_past_its_limit_is_deleted(real_k8s, bound, op):
    manifest = _manifest("restarts", nodes=2, restarts=0)
    name = manifest["metadata"]["name"]
    launcher, _ = _launcher(real_k8s, bound["token"])

    def steps():
        _wait_for(_noted(launcher, f"pytorchjob {name}: Pending"))
        created, running = op.condition("Created"), op.condition("Running")
        op.set_status(name, created, running)
        _wait_for(_noted(launcher, f"pytorchjob {name}: Running"))
        op.set_status(name, created, {**running, "status": "False"}, op.condition("Restarting"))

    op.play(steps)
    with pytest.raises(TrainingJobFailed, match=r"restarted 1 time\(s\), more than train.restarts=0"):
        launcher.run(manifest)
    _wait_for(lambda: op.get(name) is None, 10)


def test_a_token_without_the_role_gets_a_clear_403(real_k8s, bound, op):
    real_k8s.service_account(NS, "no-role")
    launcher, _ = _launcher(real_k8s, real_k8s.token(NS, "no-role"))
    manifest = _manifest("forbidden")
    with pytest.raises(CaiError) as err:
        launcher.run(manifest)
    message = str(err.value)
    assert f"create pytorchjob {NS}/{manifest['metadata']['name']} failed: 403 Forbidden" in message
    assert f'"system:serviceaccount:{NS}:no-role" cannot create resource "pytorchjobs"' in message
    assert "see charts/cai Role" in message, message
    assert op.get(manifest["metadata"]["name"]) is None


def test_a_token_for_another_audience_is_rejected(real_k8s, bound):
    launcher, _ = _launcher(real_k8s, real_k8s.token(NS, LAUNCHER_SA, audience="pipelines.kubeflow.org"))
    with pytest.raises(CaiError, match=r"failed: 401 Unauthorized.*credentials rejected"):
        launcher.run(_manifest("audience"))


# ----------------------------------------------------------------------------- what the launcher asks for


#: Granted by the chart's Role but never requested by launcher.py on a server without pods: pods/log get is
#: used once a master pod runs (the fake server's test_success_streams_the_master_log_once shows it).
NOT_REQUESTED_HERE = {("", "pods/log", "get")}


def test_the_launcher_asks_only_for_what_the_role_grants(real_k8s, bound, op):
    """The requests of a whole run (created, watched, streamed, succeeded; re-attached; timed out, deleted)
    against the Role's rules: nothing outside them, and what is granted beyond them is known."""
    seen: set[tuple[str, str, str]] = set()
    for run_id, scenario in (("rbac-ok", "succeed"), ("rbac-timeout", "hang")):
        manifest = _manifest(run_id)
        name = manifest["metadata"]["name"]
        launcher, recorder = _launcher(real_k8s, bound["token"], timeout_s=0 if scenario == "succeed" else 2)
        if scenario == "succeed":
            def steps(launcher=launcher, name=name):
                _wait_for(_noted(launcher, f"pytorchjob {name}: Pending"))
                created, running = op.condition("Created"), op.condition("Running")
                op.set_status(name, created, running)
                _wait_for(_noted(launcher, f"pytorchjob {name}: Running"))
                time.sleep(1.5)  # the streamer asks for the master pod
                op.set_status(name, created, {**running, "status": "False"}, op.condition("Succeeded"))

            op.play(steps)
            launcher.run(manifest)
            launcher, recorder2 = _launcher(real_k8s, bound["token"])
            launcher.run(manifest)  # again: 409, re-attached to the finished job
            assert any("re-attached" in e for e in launcher.events)
            seen |= recorder2.seen
        else:
            with pytest.raises(TrainingJobTimeout):
                launcher.run(manifest)
        seen |= recorder.seen
    assert seen == {(GROUP, PLURAL, "create"), (GROUP, PLURAL, "get"), (GROUP, PLURAL, "watch"),
                    (GROUP, PLURAL, "delete"), ("", "pods", "get")}
    assert seen <= ALLOWED_RULES
    assert ALLOWED_RULES - seen == NOT_REQUESTED_HERE
