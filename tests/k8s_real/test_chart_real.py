"""charts/cai on a real kube-apiserver (v1.20.2): every rendered object passes server-side dry-run, and its
Role, applied for real, grants the pipeline's service accounts exactly the launcher's rights, nothing more.

The CronJob is left out of the dry-run: v1.20 has no batch/v1 CronJob (it came in 1.21). It is still checked
against the 1.35 schema by tests/k8s/test_helm_chart.py::test_kubernetes_validate_strict (kubernetes-validate
--strict, default and full values).
"""
from __future__ import annotations

import copy

import pytest
import yaml

from tests.k8s.test_helm_chart import ALLOWED_RULES, FULL_VALUES, kinds, role_rules, template
from tests.k8s_tools import tool

pytestmark = pytest.mark.k8s_real

NOT_ON_1_20 = {"CronJob"}  # batch/v1 CronJob is 1.21+; see the module doc for where it is validated


@pytest.fixture(scope="module")
def helm():
    return tool("helm")


def _dry_run(real_k8s, namespace: str, docs: list[dict], check: bool = True):
    return real_k8s.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                            input=yaml.safe_dump_all(docs), check=check)


@pytest.mark.parametrize("values", [None, FULL_VALUES], ids=["default-values", "full-values"])
def test_every_chart_object_passes_server_side_dry_run(real_k8s, helm, tmp_path, values):
    namespace = real_k8s.namespace("chart-dry-run")
    docs = template(helm, tmp_path, values, namespace=namespace)
    skipped = [d for d in docs if d["kind"] in NOT_ON_1_20]
    assert [d["kind"] for d in skipped] == (["CronJob"] if values else [])
    checked = [d for d in docs if d["kind"] not in NOT_ON_1_20]
    assert {d["kind"] for d in checked} == {"ConfigMap", "Job", "Role", "RoleBinding", "ServiceAccount"}
    out = _dry_run(real_k8s, namespace, checked).stdout
    for doc in checked:
        assert f"/{doc['metadata']['name']} created (server dry run)" in out, (doc["kind"], out)
    assert out.count("(server dry run)") == len(checked)
    # a dry run persists nothing
    assert real_k8s.kubectl("get", "jobs,roles,configmaps", "-n", namespace, "-o", "name").stdout.strip() == ""


def test_server_side_dry_run_refuses_a_broken_object(real_k8s, helm, tmp_path):
    """The check above can fail: the server validates the Job (restartPolicy Always is not allowed in a Job)."""
    namespace = real_k8s.namespace("chart-dry-run")
    (job,) = kinds(template(helm, tmp_path, None, namespace=namespace), "Job")
    broken = copy.deepcopy(job)
    broken["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    proc = _dry_run(real_k8s, namespace, [broken], check=False)
    assert proc.returncode != 0
    assert "is invalid: spec.template.spec.restartPolicy" in proc.stderr, proc.stderr
    assert 'valid values: "OnFailure", "Never"' in proc.stderr, proc.stderr


# ----------------------------------------------------------------------------- RBAC, applied for real


def _can_i(real_k8s, namespace: str, sa: str, verb: str, group: str, resource: str, *, in_ns: str = "") -> bool:
    resource, _, sub = resource.partition("/")
    target = f"{resource}.{group}" if group else resource
    proc = real_k8s.kubectl("auth", "can-i", verb, target, *([f"--subresource={sub}"] if sub else []),
                            "-n", in_ns or namespace, f"--as=system:serviceaccount:{namespace}:{sa}", check=False)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), (verb, target, proc.stdout, proc.stderr)
    return answer == "yes"


# What the launcher's service account must NOT be able to do (a leaked pipeline token stays harmless).
DENIED = [("patch", "kubeflow.org", "pytorchjobs"), ("update", "kubeflow.org", "pytorchjobs"),
          ("deletecollection", "kubeflow.org", "pytorchjobs"), ("update", "kubeflow.org", "pytorchjobs/status"),
          ("create", "", "pods"), ("delete", "", "pods"), ("patch", "", "pods"), ("create", "", "pods/exec"),
          ("get", "", "secrets"), ("list", "", "secrets"), ("create", "", "secrets"), ("get", "", "configmaps"),
          ("create", "", "serviceaccounts/token"), ("create", "rbac.authorization.k8s.io", "rolebindings"),
          ("create", "batch", "jobs"), ("create", "kubeflow.org", "tfjobs")]


@pytest.fixture(scope="module")
def rbac_namespaces(real_k8s, helm, tmp_path_factory):
    """The chart's ServiceAccount, Role and RoleBinding applied for real: default values and full values."""
    setups = {}
    for label, values in (("default", None), ("full", FULL_VALUES)):
        namespace = real_k8s.namespace(f"rbac-{label}")
        docs = template(helm, tmp_path_factory.mktemp(f"rbac-{label}"), values, namespace=namespace)
        rbac = [d for d in docs if d["kind"] in ("ServiceAccount", "Role", "RoleBinding")]
        assert len(rbac) == 3
        (binding,) = kinds(rbac, "RoleBinding")
        subjects = [s["name"] for s in binding["subjects"]]
        for sa in subjects:  # KFP's runner accounts (default-editor, pipeline-runner) exist in a real profile
            real_k8s.service_account(namespace, sa)
        real_k8s.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(rbac))
        (sa_doc,) = kinds(rbac, "ServiceAccount")
        setups[label] = {"namespace": namespace, "subjects": subjects, "role": kinds(rbac, "Role")[0],
                         "chart_sa": sa_doc["metadata"]["name"]}
    return setups


def test_the_role_is_the_launchers_rights(rbac_namespaces):
    for setup in rbac_namespaces.values():
        assert role_rules(setup["role"]) == ALLOWED_RULES  # the one list (tests/k8s/test_helm_chart.py)
    assert rbac_namespaces["default"]["subjects"] == ["default-editor"]
    assert rbac_namespaces["full"]["subjects"] == ["default-editor", "pipeline-runner", "cai-submit"]


@pytest.mark.parametrize("label", ["default", "full"])
def test_bound_accounts_get_exactly_the_launchers_rights(real_k8s, rbac_namespaces, label):
    setup = rbac_namespaces[label]
    ns = setup["namespace"]
    for sa in setup["subjects"]:
        for group, resource, verb in sorted(ALLOWED_RULES):
            assert _can_i(real_k8s, ns, sa, verb, group, resource), f"{sa} cannot {verb} {resource}"
        for verb, group, resource in DENIED:
            assert not _can_i(real_k8s, ns, sa, verb, group, resource), f"{sa} can {verb} {resource}"
        # a Role, not a ClusterRole: nothing in another namespace
        other = real_k8s.namespace("rbac-elsewhere")
        assert not _can_i(real_k8s, ns, sa, "create", "kubeflow.org", "pytorchjobs", in_ns=other)
        assert not _can_i(real_k8s, ns, sa, "get", "", "pods", in_ns=other)


def test_unbound_accounts_get_nothing(real_k8s, rbac_namespaces):
    # with default values the chart's own ServiceAccount (the submit Job's) needs and gets no Kubernetes rights
    setup = rbac_namespaces["default"]
    assert setup["chart_sa"] not in setup["subjects"]
    real_k8s.service_account(setup["namespace"], "someone-else")
    for sa in (setup["chart_sa"], "someone-else"):
        for group, resource, verb in sorted(ALLOWED_RULES):
            assert not _can_i(real_k8s, setup["namespace"], sa, verb, group, resource), f"{sa} can {verb} {resource}"


def test_a_real_token_of_the_bound_account_is_authorized_by_the_role(real_k8s, rbac_namespaces):
    """Not impersonation only: the TokenRequest token itself gets the Role's rights (and is refused the rest)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    ns = rbac_namespaces["full"]["namespace"]
    token = real_k8s.token(ns, "pipeline-runner")
    core = client.CoreV1Api(real_k8s.client_for_token(token))
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_pod("no-such-pod", ns)
    assert missing.value.status == 404  # allowed (get pods), and no pods on this server
    with pytest.raises(ApiException) as listing:
        core.list_namespaced_pod(ns)
    assert listing.value.status == 403  # the PyTorchJob launcher never lists pods
    with pytest.raises(ApiException) as err:
        core.list_namespaced_secret(ns)
    assert err.value.status == 403 and f"system:serviceaccount:{ns}:pipeline-runner" in err.value.body
    who = real_k8s.kubectl("auth", "can-i", "--list", "-n", ns, as_token=token).stdout
    assert "pytorchjobs.kubeflow.org" in who and "secrets" not in who
