"""The PyTorchJobs that `cai train sft|dpo --launcher pytorchjob --dry-run` prints, against the real
PyTorchJob CRD (../shared/schemas/kubeflow.org_pytorchjobs.yaml) on a real kube-apiserver: server-side
validation (create with dryRun=All) accepts them, single- and multi-node, with every cluster and train option
that reaches the manifest, and keeps every field (a structural schema silently prunes fields it does not know,
so "accepted" alone would not be enough). A broken manifest is refused with a 422 that names the field.
"""
from __future__ import annotations

import copy
import json

import pytest
import yaml
from click.testing import CliRunner

from cai_core.cli.commands.train import train_cmd
from cai_core.k8s.pytorchjob import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.k8s_real

#: Every cluster option that reaches the PyTorchJob (cai_core/training/launch.py job_spec), set to a non-default.
CLUSTER_ALL = {
    "registry": "registry.example.com:5000/ml", "tag": "1.2.3", "image_pull_policy": "Always",
    "image_pull_secrets": ["regcred", "regcred-2"], "gpu_resource": "amd.com/gpu", "shm_size": "32Gi",
    "node_selector": {"node.kubernetes.io/instance-type": "p5.48xlarge", "kubernetes.io/os": "linux"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                    {"key": "dedicated", "operator": "Equal", "value": "training", "effect": "NoExecute",
                     "toleration_seconds": 300},
                    {"operator": "Exists"}],
    "secrets": {"openai_api_key": {"secret": "cai-openai", "key": "api-key"},
                "aws_access_key_id": {"secret": "cai-s3", "key": "access-key-id"},
                "aws_secret_access_key": {"secret": "cai-s3", "key": "secret-access-key"},
                "hf_token": {"secret": "cai-hf", "key": "token"}},
    "env": {"AWS_ENDPOINT_URL_S3": "http://minio.minio:9000", "AWS_REGION": "eu-west-1"},
    "service_account": "cai-trainer", "namespace": "pj-cluster",
}
#: Every train option that reaches the PyTorchJob, over the cluster's.
TRAIN_ALL = {
    "launcher": "pytorchjob", "nodes": 4, "gpus_per_node": 4, "image": "registry.local/cai-trainer@sha256:" + "a" * 64,
    "namespace": "pj-train", "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
    "tolerations": [{"key": "google.com/gpu", "operator": "Exists"}], "shm_size": "128Gi", "cpu": "500m",
    "memory": "512Gi", "scratch_size": "2Ti",
    "secrets": {"aws_access_key_id": {"secret": "train-s3", "key": "id"},
                "aws_secret_access_key": {"secret": "train-s3", "key": "secret"}},
    "env": {"NCCL_DEBUG": "INFO", "NCCL_SOCKET_IFNAME": "eth0"}, "service_account": "cai-train-irsa",
    "restarts": 5, "ttl_after_finished_s": 0, "pod_annotations": {"example.com/owner": "ml-platform"},
    "pod_labels": {"team": "ml", "cost-center": "42"}, "priority_class": "gpu-high",
    "extra_resources": {"vpc.amazonaws.com/efa": "32", "rdma/ib": "8"}, "kueue_queue": "h100-queue",
}


def _render(tmp_path, stage: str, config: dict, *sets: str, env: dict | None = None) -> dict:
    path = tmp_path / f"{stage}-config.yaml"
    path.write_text(yaml.safe_dump(config))
    args = [stage, "--launcher", "pytorchjob", "--dry-run", "--config", str(path), "--data", "s3://b/run/in/d.jsonl",
            "--out", f"s3://b/run/_train/{stage}", "--run-id", "20261204-070000-real"]
    if stage == "dpo":
        args += ["--model", "s3://b/run/sft/model"]
    for s in sets:
        args += ["--set", s]
    env = {"CAI_POD_NAME": "", "CAI_POD_UID": "", "CAI_OWNER_NAME": "", "CAI_TRAINER_IMAGE": "",
           "KUBERNETES_SERVICE_HOST": "", **(env or {})}
    result = CliRunner().invoke(train_cmd, args, env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    return yaml.safe_load(result.output)


def _server_dry_run(real_k8s, manifest: dict) -> dict:
    from kubernetes import client

    namespace = real_k8s.namespace(manifest["metadata"]["namespace"])
    api = client.CustomObjectsApi(real_k8s.api_client())
    return api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest, dry_run="All")


def _lost(sent, got, path="") -> list[str]:
    """Paths of `sent` that the server dropped or changed in `got` (defaults it added are fine)."""
    if isinstance(sent, dict):
        if not isinstance(got, dict):
            return [path or "."]
        return [p for k, v in sent.items() for p in
                ([f"{path}.{k}"] if k not in got else _lost(v, got[k], f"{path}.{k}"))]
    if isinstance(sent, list):
        if not isinstance(got, list) or len(got) != len(sent):
            return [path]
        return [p for i, (a, b) in enumerate(zip(sent, got)) for p in _lost(a, b, f"{path}[{i}]")]
    return [] if sent == got else [f"{path}: {sent!r} -> {got!r}"]


def _accepted_unchanged(real_k8s, manifest: dict) -> dict:
    answer = _server_dry_run(real_k8s, manifest)
    for part in ("spec", "metadata"):
        lost = _lost(manifest[part], answer[part], part)
        assert not lost, f"the server pruned or changed: {lost}"
    assert answer["metadata"].get("uid") and answer["kind"] == "PyTorchJob"
    return answer


@pytest.mark.parametrize("stage", ["sft", "dpo"])
@pytest.mark.parametrize("nodes", [1, 3])
def test_default_manifests_are_accepted(real_k8s, tmp_path, stage, nodes):
    manifest = _render(tmp_path, stage, {stage: {"deepspeed": "zero3", "bf16": True}, "train": {"nodes": nodes}})
    replicas = manifest["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == ({"Master"} if nodes == 1 else {"Master", "Worker"})
    if nodes > 1:
        assert replicas["Worker"]["replicas"] == nodes - 1
    _accepted_unchanged(real_k8s, manifest)
    # dryRun=All persisted nothing
    from kubernetes import client

    api = client.CustomObjectsApi(real_k8s.api_client())
    assert api.list_namespaced_custom_object(GROUP, VERSION, manifest["metadata"]["namespace"], PLURAL)["items"] == []


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_every_cluster_option_is_accepted(real_k8s, tmp_path, stage):
    manifest = _render(tmp_path, stage, {"cluster": CLUSTER_ALL, "train": {"nodes": 2}})
    pod = manifest["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == "registry.example.com:5000/ml/cai-trainer:1.2.3" and c["imagePullPolicy"] == "Always"
    assert [s["name"] for s in pod["imagePullSecrets"]] == ["regcred", "regcred-2"]
    assert c["resources"]["limits"]["amd.com/gpu"] == "8" and pod["serviceAccountName"] == "cai-trainer"
    assert len(pod["tolerations"]) == 3 and pod["tolerations"][1]["tolerationSeconds"] == 300
    env = {e["name"]: e for e in c["env"]}
    assert env["AWS_REGION"]["value"] == "eu-west-1" and "valueFrom" in env["HF_TOKEN"]
    assert manifest["metadata"]["namespace"] == "pj-cluster"
    _accepted_unchanged(real_k8s, manifest)


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_every_train_option_is_accepted(real_k8s, tmp_path, stage):
    manifest = _render(tmp_path, stage, {"cluster": CLUSTER_ALL, "train": TRAIN_ALL},
                       env={"CAI_POD_NAME": "cai-run-launcher-0", "CAI_POD_UID": "0b6f6c3e-1111-2222-3333-444455556666"})
    meta = manifest["metadata"]
    assert meta["namespace"] == "pj-train" and meta["labels"]["kueue.x-k8s.io/queue-name"] == "h100-queue"
    assert manifest["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 3
    assert manifest["spec"]["runPolicy"] == {"cleanPodPolicy": "Running", "backoffLimit": 5,
                                             "ttlSecondsAfterFinished": 0}
    pod = manifest["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    c = pod["spec"]["containers"][0]
    assert c["resources"]["requests"]["rdma/ib"] == "8" and c["resources"]["requests"]["cpu"] == "500m"
    assert pod["spec"]["priorityClassName"] == "gpu-high" and pod["metadata"]["labels"]["team"] == "ml"
    assert next(v for v in pod["spec"]["volumes"] if v["name"] == "scratch")["emptyDir"]["sizeLimit"] == "2Ti"
    # no ownerReference: the launcher pod (CAI_POD_NAME) is not known to live in the job's namespace here
    _accepted_unchanged(real_k8s, manifest)


def test_owner_references_are_accepted(real_k8s, tmp_path):
    for env in ({"CAI_POD_NAME": "cai-run-launcher-0", "CAI_POD_UID": "0b6f6c3e-1111-2222-3333-444455556666"},
                {"CAI_OWNER_KIND": "Workflow", "CAI_OWNER_NAME": "cai-pipeline-xyz", "CAI_OWNER_UID": "uid-wf"}):
        manifest = _render(tmp_path, "sft", {"train": {"nodes": 2}}, env=env)
        assert manifest["metadata"]["ownerReferences"], env
        answer = _accepted_unchanged(real_k8s, manifest)
        assert answer["metadata"]["ownerReferences"] == manifest["metadata"]["ownerReferences"]


def test_a_custom_deepspeed_file_is_accepted(real_k8s, tmp_path):
    ds = tmp_path / "zero3.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True},
                              "train_micro_batch_size_per_gpu": "auto"}))
    manifest = _render(tmp_path, "sft", {"train": {"nodes": 2}}, f"sft.deepspeed={ds}")
    _accepted_unchanged(real_k8s, manifest)


@pytest.mark.parametrize("where, value, message", [
    (("spec", "runPolicy", "backoffLimit"), "2", "spec.runPolicy.backoffLimit: Invalid value: \"string\""),
    (("spec", "pytorchReplicaSpecs", "Worker", "replicas"), "two", "spec.pytorchReplicaSpecs.Worker.replicas"),
    (("spec", "nprocPerNode"), 8, "spec.nprocPerNode: Invalid value: \"integer\""),
])
def test_a_broken_manifest_is_refused_with_a_422_naming_the_field(real_k8s, tmp_path, where, value, message):
    from kubernetes.client.rest import ApiException

    manifest = _render(tmp_path, "sft", {"train": {"nodes": 2}})
    _accepted_unchanged(real_k8s, copy.deepcopy(manifest))  # the unbroken one passes
    node = manifest
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    with pytest.raises(ApiException) as err:
        _server_dry_run(real_k8s, manifest)
    assert err.value.status == 422, err.value.body
    body = json.loads(err.value.body)
    assert body["reason"] == "Invalid" and message in body["message"], body["message"]


def test_a_field_the_crd_does_not_know_is_caught(real_k8s, tmp_path):
    """The "kept every field" check can fail: the server accepts an unknown field but prunes it silently."""
    manifest = _render(tmp_path, "sft", {"train": {"nodes": 1}})
    manifest["spec"]["runPolicy"]["backoffLimitt"] = 3
    answer = _server_dry_run(real_k8s, manifest)  # accepted ...
    assert _lost(manifest["spec"], answer["spec"], "spec") == ["spec.runPolicy.backoffLimitt"]  # ... but dropped
    with pytest.raises(AssertionError, match="pruned or changed"):
        _accepted_unchanged(real_k8s, manifest)
