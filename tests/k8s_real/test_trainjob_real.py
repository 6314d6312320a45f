"""Kubeflow Trainer v2 TrainJobs (train.launcher: trainjob) on a real kube-apiserver: the vendored v2.3.0 CRDs
(tests/data/crds/trainer-v2) installed, what `cai train sft|dpo --launcher trainjob --dry-run` renders accepted by
a server-side dry run (one node, several, every cluster option), a broken one rejected with 422, and the
launcher's Created -> Complete and Failed scenarios with an admin client playing the trainer (it writes the
status subresource). v1.20 does not run the CRD's CEL rules (x-kubernetes-validations) and refuses its empty
string defaults (dropped from the installed copy, `_without_empty_defaults`); the structural schema it applies
is the one tests/k8s/test_trainjob.py checks with jsonschema."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cai_core.cli.commands.train import train_cmd
from cai_core.k8s.launcher import TRAINJOB, Launcher, TrainingJobFailed
from cai_core.k8s.pytorchjob import JobSpec
from cai_core.k8s.trainjob import GROUP, PLURAL, VERSION, build_trainjob

pytestmark = pytest.mark.k8s_real

CRDS = Path(__file__).resolve().parents[1] / "data" / "crds" / "trainer-v2"
NS = "trainjobs"
ALL_OPTIONS = ["train.gpus_per_node=4", "train.scratch_size=500Gi", "train.env.NCCL_DEBUG=INFO",
               "train.pod_labels.team=ml", "train.kueue_queue=gpu-queue", "train.runtime=my-torch",
               "train.runtime_kind=TrainingRuntime", "train.service_account=cai-train", "train.shm_size=128Gi",
               'train.extra_resources={"vpc.amazonaws.com/efa": "32"}', "train.node_selector.pool=h100",
               'train.pod_annotations={"a.example.com/x": "1"}', "cluster.image_pull_secrets=[regcred]",
               'train.tolerations=[{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoExecute",'
               ' "toleration_seconds": 60}]', "train.secrets.hf_token.secret=cai-hf", "train.secrets.hf_token.key=t"]


def _without_empty_defaults(node):
    """The schema minus ``default: ""`` (controller-gen writes it on every LocalObjectReference name since
    Kubernetes 1.30's API types; v1.20 rejects such a CRD: 'default: Invalid value: "null"'), and a list keyed by
    such a field (``x-kubernetes-list-type: map``, which v1.20 wants a default or required key for) made atomic.
    Nothing we render relies on a default of the server."""
    if isinstance(node, dict):
        keys = node.get("x-kubernetes-list-map-keys") or []
        props = (node.get("items") or {}).get("properties") or {}
        if any((props.get(k) or {}).get("default") == "" for k in keys):
            node = {k: v for k, v in node.items() if k not in ("x-kubernetes-list-map-keys", "x-kubernetes-list-type")}
        return {k: _without_empty_defaults(v) for k, v in node.items() if not (k == "default" and v == "")}
    if isinstance(node, list):
        return [_without_empty_defaults(v) for v in node]
    return node


@pytest.fixture(scope="module")
def crds(real_k8s, tmp_path_factory):
    names = []
    out = tmp_path_factory.mktemp("trainer-v2-crds")
    for f in sorted(CRDS.glob("*.yaml")):
        copy = out / f.name
        copy.write_text(yaml.safe_dump(_without_empty_defaults(yaml.safe_load(f.read_text()))))
        names += real_k8s.apply_crd(copy)
    real_k8s.namespace(NS)
    return names


def _rendered(stage: str, *sets: str) -> dict:
    args = [stage, "--launcher", "trainjob", "--dry-run", "--data", f"s3://b/{stage}.jsonl", "--out", f"s3://b/{stage}",
            "--run-id", f"real-{stage}"]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(train_cmd, args)
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load(result.output)
    manifest["metadata"]["namespace"] = NS
    return manifest


def _dry_run(real_k8s, manifest: dict):
    return real_k8s.kubectl("create", "--dry-run=server", "-o", "yaml", "-n", NS, "-f", "-",
                            input=yaml.safe_dump(manifest), check=False)


def test_crds_are_established(crds):
    assert set(crds) == {"trainjobs.trainer.kubeflow.org", "clustertrainingruntimes.trainer.kubeflow.org",
                         "trainingruntimes.trainer.kubeflow.org"}


@pytest.mark.parametrize("stage,sets", [("sft", []), ("dpo", []), ("sft", ["train.nodes=4"]),
                                        ("dpo", ["train.nodes=2", *ALL_OPTIONS])])
def test_server_side_dry_run_accepts_what_we_render(real_k8s, crds, stage, sets, monkeypatch):
    for var in ("CAI_POD_NAME", "CAI_POD_UID", "CAI_OWNER_NAME"):
        monkeypatch.delenv(var, raising=False)
    manifest = _rendered(stage, *sets)
    proc = _dry_run(real_k8s, manifest)
    assert proc.returncode == 0, proc.stderr
    echoed = yaml.safe_load(proc.stdout)
    # nothing was pruned: every field we send is in the CRD's structural schema
    assert echoed["spec"]["trainer"] == manifest["spec"]["trainer"]
    assert echoed["spec"]["runtimePatches"] == manifest["spec"]["runtimePatches"]


def test_a_broken_trainjob_is_rejected_with_422(real_k8s, crds):
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    manifest = _rendered("sft")
    manifest["spec"]["trainer"]["numNodes"] = "two"
    with pytest.raises(ApiException) as info:
        client.CustomObjectsApi(real_k8s.api_client()).create_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, manifest, dry_run="All")
    assert info.value.status == 422 and "spec.trainer.numNodes" in info.value.body, info.value.body


def _manifest(run_id: str) -> dict:
    spec = JobSpec(stage="sft", run_id=run_id, namespace=NS, image="ghcr.io/cai-project/cai-trainer:0.1.0",
                   data_uri="s3://b/in.jsonl", model_uri="tiny", out_uri="s3://b/out", config={"sft": {}})
    return build_trainjob(spec)


def _trainer(real_k8s, name: str, conditions_steps: list[list[dict]], launcher: Launcher, errors: list):
    """The trainer, played by the admin client: write each status once the launcher has seen the job."""
    from kubernetes import client

    api = client.CustomObjectsApi(real_k8s.api_client())

    def run():
        try:
            end = time.monotonic() + 20
            while not any(f"trainjob {name}: Pending" in e for e in launcher.events):
                assert time.monotonic() < end
                time.sleep(0.05)
            for status in conditions_steps:
                job = api.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
                job["status"] = status
                api.replace_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, name, job)
                time.sleep(0.6)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _cond(kind: str, reason: str, message: str, second: int) -> dict:
    return {"type": kind, "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": f"2026-12-04T00:00:{second:02d}Z"}


CREATED = _cond("Created", "JobSetCreated", "JobSet created", 1)


def _setting(api_client, run_id: str, **kw) -> tuple[dict, str, Launcher]:
    """A TrainJob to run, its name, and a launcher for it through `api_client`."""
    manifest = _manifest(run_id)
    return manifest, manifest["metadata"]["name"], Launcher(api_client, NS, poll_interval_s=0.5,
                                                              emit=lambda _l: None, kind=TRAINJOB, delete_wait_s=20,
                                                              **kw)


def test_created_then_complete(real_k8s, crds):
    manifest, name, launcher = _setting(real_k8s.api_client(), "tj-complete")
    created, errors = CREATED, []
    thread = _trainer(real_k8s, name, [
        {"conditions": [created]},
        {"conditions": [created], "jobsStatus": [{"name": "node", "active": 1, "ready": 1, "succeeded": 0,
                                                  "failed": 0, "suspended": 0}]},
        {"conditions": [created, _cond("Complete", "JobSetCompleted", "JobSet completed", 3)]}], launcher, errors)
    final = launcher.run(manifest)
    thread.join(10)
    assert not errors, errors
    phases = [e.split(": ", 1)[1].split(" ")[0] for e in launcher.events if e.startswith(f"trainjob {name}: ")]
    assert phases[0] == "Pending" and phases[-1] == "Succeeded" and "Created" in phases
    assert any(c["type"] == "Complete" for c in final["status"]["conditions"])


def test_failed_with_the_trainers_message(real_k8s, crds):
    manifest, name, launcher = _setting(real_k8s.api_client(), "tj-failed")
    message = "jobset failed: job cai-node-0 failed: BackoffLimitExceeded"
    created, errors = CREATED, []
    thread = _trainer(real_k8s, name, [{"conditions": [created]},
                                       {"conditions": [created, _cond("Failed", "JobSetFailed", message, 2)]}],
                      launcher, errors)
    with pytest.raises(TrainingJobFailed) as info:
        launcher.run(manifest)
    thread.join(10)
    assert not errors, errors
    assert f"trainjob {NS}/{name} failed: {message}" in str(info.value)


@pytest.fixture(scope="module")
def bound_trainjob_role(real_k8s, crds, tmp_path_factory):
    """The chart rendered for train.launcher trainjob: its Role and RoleBinding applied in NS, and a
    TokenRequest token of the bound account (KFP's runner)."""
    from tests.k8s.test_helm_chart import kinds, template
    from tests.k8s_tools import tool

    docs = template(tool("helm"), tmp_path_factory.mktemp("chart-trainjob"),
                    {"runConfig": {"train": {"launcher": "trainjob"}}}, namespace=NS)
    rbac = [d for d in docs if d["kind"] in ("ServiceAccount", "Role", "RoleBinding")]
    (binding,) = kinds(rbac, "RoleBinding")
    account = binding["subjects"][0]["name"]
    real_k8s.service_account(NS, account)
    real_k8s.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump_all(rbac))
    return real_k8s.token(NS, account)


def test_a_trainjob_run_asks_only_for_what_the_trainjob_role_grants(real_k8s, bound_trainjob_role):
    """Created -> Running -> Complete, then a timed-out job deleted, as the bound account: every request is
    allowed by the trainjob Role, and what it grants beyond them is only what needs a real pod."""
    from cai_core.k8s.launcher import TrainingJobTimeout
    from tests.k8s.test_helm_chart import TRAINJOB_ALLOWED_RULES
    from tests.k8s_real.test_launcher_real import Recorder

    seen: set = set()
    for run_id, timeout_s in (("tj-rbac-ok", 0), ("tj-rbac-timeout", 2)):
        api_client = real_k8s.client_for_token(bound_trainjob_role)
        recorder = Recorder(api_client)
        manifest, name, launcher = _setting(api_client, run_id, timeout_s=timeout_s)
        if timeout_s:
            with pytest.raises(TrainingJobTimeout):
                launcher.run(manifest)
        else:
            created, errors = CREATED, []
            running = {"conditions": [created], "jobsStatus": [{"name": "node", "active": 1, "ready": 1,
                                                                 "succeeded": 0, "failed": 0, "suspended": 0}]}
            thread = _trainer(real_k8s, name, [{"conditions": [created]}, running, running, running, {
                "conditions": [created, _cond("Complete", "JobSetCompleted", "JobSet completed", 3)]}],
                launcher, errors)
            launcher.run(manifest)
            thread.join(10)
            assert not errors, errors
        seen |= recorder.seen
    assert seen <= TRAINJOB_ALLOWED_RULES, seen - TRAINJOB_ALLOWED_RULES
    # the master pod is looked up by label (list) and never found here: reading it and its log needs a pod
    assert TRAINJOB_ALLOWED_RULES - seen == {("", "pods", "get"), ("", "pods/log", "get")}, seen
