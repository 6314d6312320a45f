"""charts/cai with helm (lint, template), kubernetes-validate --strict, RBAC scope and values hygiene;
the Argo CD example in docs/gitops.md; and the image build files (hadolint, shellcheck).

helm, kubectl, hadolint and shellcheck come from PyPI wheels through tests/k8s_tools.py.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from tests.k8s_tools import run, tool

import cai_core
from cai_core.config.loading import load_cluster_run_config

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "cai"
K8S_VERSION = "1.35.0"
ALLOWED_RULES = {("kubeflow.org", "pytorchjobs", v) for v in ("create", "get", "watch", "delete")} | \
    {("", "pods", "get"), ("", "pods/log", "get")}
#: The same for train.launcher trainjob: the master pod is found by its labels (pods list).
TRAINJOB_ALLOWED_RULES = {("trainer.kubeflow.org", "trainjobs", v) for v in ("create", "get", "watch", "delete")} | \
    {("", "pods", "get"), ("", "pods", "list"), ("", "pods/log", "get")}

FULL_VALUES = {
    "fullnameOverride": "cai-prod",
    "image": {"registry": "registry.example.com:5000/ml", "repository": "cai-core", "tag": "0.1.0",
              "pullPolicy": "Always"},
    "imagePullSecrets": ["regcred"],
    "serviceAccount": {"create": True, "name": "cai-submit", "annotations": {"eks.amazonaws.com/role-arn": "arn:x"}},
    "rbac": {"create": True, "pipelineServiceAccounts": ["default-editor", "pipeline-runner"],
             "bindChartServiceAccount": True},
    "secrets": {"openaiApiKey": {"secret": "openai", "key": "key"}, "awsAccessKeyId": None,
                "awsSecretAccessKey": None, "hfToken": {"secret": "hf", "key": "token"}},
    "kfp": {"host": "https://kubeflow.example.com/pipeline", "namespace": "team-b", "experiment": "nightly",
            "tokenSecret": {"name": "kfp-token", "key": "token"}, "projectedTokenAudience": "pipelines.kubeflow.org"},
    "runConfig": {"output_dir": "s3://bucket/cai", "sft": {"learning_rate": 1.0e-5},
                  "vllm": {"tensor_parallel_size": 2, "data_parallel_replicas": 4},
                  "cluster": {"tag": "0.1.0"}},
    "constitution": "critique_revision: []\n",
    "submit": {"enabled": True, "hook": "argocd", "checkSecrets": False, "extraArgs": ["--wait", "--timeout", "86400"],
               "backoffLimit": 1, "activeDeadlineSeconds": 90000, "ttlSecondsAfterFinished": 3600,
               "resources": {"requests": {"cpu": "200m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}},
    "cron": {"enabled": True, "schedule": "0 4 * * 1", "timeZone": "Europe/Berlin", "suspend": False,
             "successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 2},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
    "podLabels": {"team": "ml"},
    "podAnnotations": {"sidecar.istio.io/inject": "false"},
}


@pytest.fixture(scope="module")
def helm():
    return tool("helm")


def template(helm, tmp_path, values: dict | None = None, *extra: str, namespace: str = "team-a") -> list[dict]:
    args = [helm, "template", "cai", str(CHART), "-n", namespace, *extra]
    if values is not None:
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["-f", str(path)]
    return [d for d in yaml.safe_load_all(run(args).stdout) if d]


def kinds(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def test_chart_version_follows_the_package():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == cai_core.__version__


def test_helm_lint(helm, tmp_path):
    run([helm, "lint", "--strict", str(CHART)])
    path = tmp_path / "full.yaml"
    path.write_text(yaml.safe_dump(FULL_VALUES))
    run([helm, "lint", "--strict", str(CHART), "-f", str(path)])


def test_default_render(helm, tmp_path):
    docs = template(helm, tmp_path)
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Job", "Role", "RoleBinding", "ServiceAccount"]
    (job,) = kinds(docs, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    pod = job["spec"]["template"]
    assert pod["metadata"]["labels"]["app"] == "cai" and pod["metadata"]["labels"]["cai/stage"] == "submit"
    (container,) = pod["spec"]["containers"]
    assert container["image"] == f"ghcr.io/cai-project/cai-core:{cai_core.__version__}"
    args = container["args"]
    assert args[:3] == ["submit", "--config", "/etc/cai/config.yaml"] and "--skip-existing" in args
    run_id = args[args.index("--run-id") + 1]
    assert pod["metadata"]["labels"]["cai/run-id"] == run_id == args[args.index("--run-name") + 1]
    assert len(run_id) <= 63
    assert args[args.index("--namespace") + 1] == "team-a"
    assert {v["name"] for v in pod["spec"]["volumes"]} == {"config", "tmp", "kfp-token"}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_full_render(helm, tmp_path):
    docs = template(helm, tmp_path, FULL_VALUES)
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "CronJob", "Job", "Role", "RoleBinding", "ServiceAccount"]
    (job,) = kinds(docs, "Job")
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PostSync"
    assert "helm.sh/hook" not in job["metadata"]["annotations"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com:5000/ml/cai-core:0.1.0"
    assert "--no-check-secrets" in container["args"] and container["args"][-3:] == ["--wait", "--timeout", "86400"]
    assert container["env"][1]["valueFrom"]["secretKeyRef"] == {"name": "kfp-token", "key": "token"}
    assert "kfp-token" not in {v["name"] for v in job["spec"]["template"]["spec"]["volumes"]}
    (cron,) = kinds(docs, "CronJob")
    cron_args = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--run-id" not in cron_args and "--skip-existing" not in cron_args  # a new run each time
    assert cron["spec"]["concurrencyPolicy"] == "Forbid" and cron["spec"]["timeZone"] == "Europe/Berlin"
    (binding,) = kinds(docs, "RoleBinding")
    assert [s["name"] for s in binding["subjects"]] == ["default-editor", "pipeline-runner", "cai-submit"]
    (cm,) = kinds(docs, "ConfigMap")
    assert cm["data"]["constitution.yaml"] == "critique_revision: []\n"


def test_hook_modes(helm, tmp_path):
    none = kinds(template(helm, tmp_path, None, "--set", "submit.hook=none"), "Job")[0]
    assert not any(k.startswith(("helm.sh/hook", "argocd.argoproj.io/hook")) for k in none["metadata"]["annotations"])
    assert none["metadata"]["name"].startswith("cai-submit-")
    assert kinds(template(helm, tmp_path, None, "--set", "submit.enabled=false"), "Job") == []


def test_rendered_config_is_a_valid_cai_config(helm, tmp_path):
    for values in (None, FULL_VALUES):
        docs = template(helm, tmp_path, values)
        (cm,) = kinds(docs, "ConfigMap")
        path = tmp_path / "config.yaml"
        path.write_text(cm["data"]["config.yaml"])
        cfg = load_cluster_run_config(path)
        assert cfg.cluster.config_map == cm["metadata"]["name"]
        assert cfg.cluster.namespace == ("team-b" if values else "team-a")
        if values:
            assert cfg.cluster.secrets.aws_access_key_id is None and cfg.cluster.secrets.openai_api_key.secret == "openai"
            assert cfg.revise.constitution == "/etc/cai/constitution.yaml" == cfg.judge.constitution
            assert cfg.vllm.tensor_parallel_size == 2 and cfg.sft.learning_rate == 1.0e-5


def test_submit_job_follows_the_config_checksum(helm, tmp_path):
    def job_and_run(*extra):
        (job,) = kinds(template(helm, tmp_path, None, *extra), "Job")
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        return job["metadata"]["name"], args[args.index("--run-id") + 1]

    base = job_and_run()
    assert job_and_run() == base  # same config: same Job, same run (no resubmission)
    changed = job_and_run("--set", "runConfig.dpo.beta=0.2")
    assert changed[0] != base[0] and changed[1] != base[1]
    assert job_and_run("--set", "constitution=x: 1")[0] != base[0]
    assert job_and_run("--set", "cron.enabled=true")[0] == base[0]  # not part of the run


def test_kubernetes_validate_strict(helm, tmp_path):
    for values in (None, FULL_VALUES):
        for doc in template(helm, tmp_path, values):
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {exc.message} at {list(exc.path)}")


def role_rules(role: dict) -> set[tuple[str, str, str]]:
    """A Role's grants as (api group, resource, verb) triples."""
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def test_rbac_grants_nothing_beyond_the_launchers_needs(helm, tmp_path):
    for values in (None, FULL_VALUES):
        docs = template(helm, tmp_path, values)
        assert not kinds(docs, "ClusterRole") and not kinds(docs, "ClusterRoleBinding")
        granted = set()
        for role in kinds(docs, "Role"):
            for rule in role["rules"]:
                assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule  # no resourceNames tricks, no URLs
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            assert "*" not in (group, resource, verb), rule
                            granted.add((group, resource, verb))
        assert granted == ALLOWED_RULES
        for binding in kinds(docs, "RoleBinding"):
            assert binding["roleRef"]["kind"] == "Role"
            assert {s["kind"] for s in binding["subjects"]} == {"ServiceAccount"}
        for pod_owner in kinds(docs, "Job"):
            assert pod_owner["spec"]["template"]["spec"].get("automountServiceAccountToken") is not True


SECRETISH = re.compile(r"(password|passwd|token|api[-_]?key|secret[-_]?access|private[-_]?key|credential)", re.I)


def test_no_secret_values_in_values_yaml():
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node, path=""):
        if isinstance(node, dict):
            for key, value in node.items():
                here = f"{path}.{key}" if path else str(key)
                if path == "secrets" or here in ("kfp.projectedTokenAudience", "kfp.tokenSecret"):
                    pass  # references (names and keys) and the token's audience, not values
                elif SECRETISH.search(str(key)) and isinstance(value, str) and value:
                    pytest.fail(f"values.yaml {here}: looks like a secret value")
                walk(value, here)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")

    walk(values)
    for name, ref in values["secrets"].items():
        assert ref is None or set(ref) == {"secret", "key"}, name
    assert set(values["kfp"]["tokenSecret"]) == {"name", "key"}
    text = (CHART / "values.yaml").read_text()
    assert not re.search(r"sk-[A-Za-z0-9]{8,}|AKIA[0-9A-Z]{16}|hf_[A-Za-z0-9]{20,}", text)


def test_schema_refuses_secret_values_and_typos(helm, tmp_path):
    for bad, needle in ((["--set", "secrets.openaiApiKey.value=sk-123"], "additional properties 'value'"),
                        (["--set", "runConfig.cluster.secrets.hf_token.secret=x"], "runConfig"),
                        (["--set", "submit.hook=sometimes"], "submit/hook"),
                        (["--set", "secrets.hfToken.secret=Bad_Name"], "secrets/hfToken"),
                        (["--set", "kfp.host=kubeflow.example.com"], "kfp/host"),
                        (["--set", "sumbit.enabled=true"], "sumbit")):
        proc = subprocess.run([helm, "template", "cai", str(CHART), *bad], capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and needle in proc.stderr, (bad, proc.stderr)


def test_submit_pods_keep_istio_out_and_take_priority_and_queue(helm, tmp_path):
    (job,) = kinds(template(helm, tmp_path, None, "--set", "cron.enabled=true"), "Job")
    (cron,) = kinds(template(helm, tmp_path, None, "--set", "cron.enabled=true"), "CronJob")
    for pod in (job["spec"]["template"], cron["spec"]["jobTemplate"]["spec"]["template"]):
        # Istio's sidecar would keep the pod Running after `cai submit` exits, so the Job never completes.
        assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
        assert "priorityClassName" not in pod["spec"]
    assert "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]
    values = {"cron": {"enabled": True}, "priorityClassName": "batch-low", "kueueQueue": "cpu-queue",
              "podLabels": {"team": "ml"}, "podAnnotations": {"example.com/owner": "ml"}}
    docs = template(helm, tmp_path, values)
    (job,) = kinds(docs, "Job")
    (cron,) = kinds(docs, "CronJob")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "cpu-queue"
    assert cron["spec"]["jobTemplate"]["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "cpu-queue"
    for pod in (job["spec"]["template"], cron["spec"]["jobTemplate"]["spec"]["template"]):
        assert pod["spec"]["priorityClassName"] == "batch-low"
        assert pod["metadata"]["labels"]["team"] == "ml"
        assert pod["metadata"]["annotations"]["example.com/owner"] == "ml"
        assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"  # Helm merges maps: still there
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_schema_checks_the_pod_options(helm, tmp_path):
    for bad, needle in ((["--set", "kueueQueue=Not A Queue"], "kueueQueue"),
                        (["--set", "priorityClassName=High_Priority"], "priorityClassName"),
                        (["--set", "podLabels.app=other"], "propertyName 'app'"),
                        (["--set", "runConfig.train.kueue_queue=Bad Queue"], "runConfig"),
                        (["--set", "runConfig.train.pod_labels.app=x"], "propertyName 'app'")):
        proc = subprocess.run([helm, "template", "cai", str(CHART), *bad], capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and needle in proc.stderr, (bad, proc.stderr)
    # what the schema lets through, cai accepts: the rendered config loads with the train options
    values = {"runConfig": {"output_dir": "s3://b/cai", "train": {"kueue_queue": "h100", "priority_class": "gpu-high",
                                                                  "pod_labels": {"team": "ml"}}}}
    (cm,) = kinds(template(helm, tmp_path, values), "ConfigMap")
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"])
    train = load_cluster_run_config(path).train
    assert (train.kueue_queue, train.priority_class, train.pod_labels) == ("h100", "gpu-high", {"team": "ml"})
    assert train.pod_annotations == {"sidecar.istio.io/inject": "false"}


def test_schema_is_json_schema():
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)
    jsonschema.validate(FULL_VALUES, schema)


def _doc_blocks(marker: str) -> str:
    text = (ROOT / "docs" / "gitops.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    (block,) = [b for b in blocks if b.startswith(f"# {marker}")]
    return block


def test_gitops_example_renders(helm, tmp_path):
    values = yaml.safe_load(_doc_blocks("cai-values"))
    docs = template(helm, tmp_path, values)
    (job,) = kinds(docs, "Job")
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PostSync"
    assert kinds(docs, "CronJob")
    (cm,) = kinds(docs, "ConfigMap")
    path = tmp_path / "c.yaml"
    path.write_text(cm["data"]["config.yaml"])
    assert load_cluster_run_config(path).vllm.data_parallel_replicas == 8
    app = yaml.safe_load(_doc_blocks("argocd-application"))
    assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
    chart_src, values_src = app["spec"]["sources"]
    assert chart_src["path"] == "charts/cai" and values_src["ref"] == "values"
    assert all(f.startswith("$values/") for f in chart_src["helm"]["valueFiles"])
    assert app["spec"]["destination"]["namespace"] == "team-a"


def test_notes(helm, tmp_path):
    proc = run([helm, "install", "cai", str(CHART), "-n", "team-a", "--dry-run=client"])
    # pipeline pods carry no run id (one package serves many runs); the training jobs, made at run time, do
    assert "kubectl -n team-a get pods -l app=cai -L cai/stage" in proc.stdout
    assert "get pods -l cai/run-id" not in proc.stdout
    assert "kubectl -n team-a get pytorchjobs -l cai/run-id=cai-" in proc.stdout


# -- images -----------------------------------------------------------------------------------

DOCKERFILES = sorted((ROOT / "images").glob("*/Dockerfile"))


def test_three_images():
    assert [p.parent.name for p in DOCKERFILES] == ["core", "trainer", "vllm"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint(dockerfile):
    run([tool("hadolint"), str(dockerfile)])


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_rules(dockerfile):
    text = dockerfile.read_text()
    froms = re.findall(r"^ARG (\w+_IMAGE)=(\S+)", text, re.M)
    assert froms and all(":" in ref and not ref.endswith(":latest") for _, ref in froms)  # pinned bases
    assert re.search(r"^USER 10001$", text, re.M)  # non-root
    assert 'ENTRYPOINT ["cai"]' in text and 'CMD ["--version"]' in text  # smoke entrypoint
    assert not re.search(r"https?://|pypi|files\.pythonhosted|download\.pytorch", text, re.I)  # no registry hosts
    if dockerfile.parent.name == "vllm":
        assert "--no-deps" in text and "-c /tmp/vllm-constraints.txt" in text
    # The shared install steps (images/install.sh) come from the build context, so each context lets them in.
    assert "source=images/install.sh" in text
    ignore = (dockerfile.parent / "Dockerfile.dockerignore").read_text().splitlines()
    assert "!images/install.sh" in ignore


def test_install_script():
    script = ROOT / "images" / "install.sh"
    run([tool("shellcheck"), str(script)])
    text = script.read_text()
    assert not re.search(r"https?://|pypi|files\.pythonhosted|download\.pytorch", text, re.I)  # no registry hosts
    assert "--uid 10001" in text  # the USER 10001 of every Dockerfile
    bad = subprocess.run(["sh", str(script), "gpu"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown step 'gpu'" in bad.stderr


def test_build_script(tmp_path):
    script = ROOT / "images" / "build.sh"
    run([tool("shellcheck"), str(script)])
    proc = run(["bash", str(script), "--dry-run", "--registry", "registry.example.com/ml"])
    from cai_core.config.cluster import ClusterConfig

    cluster = ClusterConfig(registry="registry.example.com/ml")
    for kind in ("core", "trainer", "vllm"):
        assert f"-t {cluster.image(kind)} " in proc.stdout  # the names the compiled pipeline uses
    bad = subprocess.run(["bash", str(script), "--dry-run", "gpu"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument 'gpu'" in bad.stderr
