"""The PyTorchJob manifest: valid against the training operator's CRD schema, single- and multi-node.

The schema is ../shared/schemas/kubeflow.org_pytorchjobs.yaml (the v1 CRD, copied verbatim), resolved from the
repository root so that it is found both here and in CI.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from cai_core.cli.commands.train import train_cmd
from cai_core.config.cluster import ClusterConfig, SecretRef, SecretsConfig, Toleration
from cai_core.config.run import RunConfig
from cai_core.errors import CaiError, ConfigError
from cai_core.k8s.config import LauncherConfig
from cai_core.k8s.pytorchjob import MAX_NAME, JobSpec, build_job, job_name, spec_hash
from cai_core.stages.sft import SFTStageConfig
from cai_core.training.launch import job_spec

SCHEMA_FILE = Path(__file__).resolve().parents[2].parent / "shared" / "schemas" / "kubeflow.org_pytorchjobs.yaml"
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@pytest.fixture(scope="module")
def schema() -> dict:
    assert SCHEMA_FILE.exists(), f"CRD schema missing at {SCHEMA_FILE}"
    crd = yaml.safe_load(SCHEMA_FILE.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return version["schema"]["openAPIV3Schema"]


def _spec(stage="sft", nodes=1, monkeypatch=None, **lc_changes) -> JobSpec:
    cluster = ClusterConfig(secrets=SecretsConfig(
        openai_api_key=SecretRef(secret="cai-openai", key="api-key"),
        aws_access_key_id=SecretRef(secret="cai-s3", key="access-key-id"),
        aws_secret_access_key=SecretRef(secret="cai-s3", key="secret-access-key"),
        hf_token=SecretRef(secret="cai-hf", key="token")), env={"AWS_ENDPOINT_URL_S3": "http://minio:9000"})
    lc = LauncherConfig(launcher="pytorchjob", nodes=nodes, **lc_changes)
    section = SFTStageConfig(deepspeed="zero3", bf16=True, gradient_checkpointing=True)
    return job_spec(stage, section, lc, cluster, run_id="20261123-101500-a1b2c3", data_uri="s3://b/run/in/sft.jsonl",
                    model_uri="meta-llama/Meta-Llama-3-8B-Instruct", out_uri="s3://b/run/_train/sft")


def _container(manifest: dict, replica: str = "Master") -> dict:
    return manifest["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("nodes", [1, 2, 4])
def test_manifest_validates_against_the_crd(schema, nodes, monkeypatch):
    for var in ("CAI_POD_NAME", "CAI_POD_UID", "CAI_OWNER_NAME", "CAI_TRAINER_IMAGE"):
        monkeypatch.delenv(var, raising=False)
    manifest = build_job(_spec(nodes=nodes))
    jsonschema.validate(manifest, schema)
    # and it survives a YAML round trip (what --dry-run prints) unchanged
    assert yaml.safe_load(yaml.safe_dump(manifest)) == manifest
    replicas = manifest["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1
    if nodes == 1:
        assert set(replicas) == {"Master"}
    else:
        assert replicas["Worker"]["replicas"] == nodes - 1
    assert manifest["spec"]["nprocPerNode"] == "8"
    assert manifest["apiVersion"] == "kubeflow.org/v1" and manifest["kind"] == "PyTorchJob"


def test_pods_get_gpus_placement_shm_and_secrets(monkeypatch):
    monkeypatch.delenv("CAI_TRAINER_IMAGE", raising=False)
    manifest = build_job(_spec(nodes=2))
    for replica in ("Master", "Worker"):
        pod = manifest["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]
        c = _container(manifest, replica)
        assert c["name"] == "pytorch"  # the operator finds the container by this name
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "8" and c["resources"]["requests"]["nvidia.com/gpu"] == "8"
        assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}
        assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
        env = {e["name"]: e for e in c["env"]}
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "cai-s3", "key": "access-key-id"}
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "secret-access-key"
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "cai-hf", "key": "token"}
        assert "OPENAI_API_KEY" not in env  # training pods never see the teacher's key
        assert env["AWS_ENDPOINT_URL_S3"]["value"] == "http://minio:9000"
        assert c["image"] == "ghcr.io/cai-project/cai-trainer:" + c["image"].rsplit(":", 1)[1]
        assert c["ports"] == [{"name": "pytorchjob-port", "containerPort": 23456}]
        # the stage config travels in the env, DeepSpeed ZeRO-3 included
        shipped = json.loads(env["CAI_TRAIN_CONFIG"]["value"])
        assert shipped["sft"]["deepspeed"] == "zero3" and shipped["sft"]["bf16"] is True
    script = " ".join(_container(manifest)["command"] + _container(manifest)["args"])
    assert script.startswith("/bin/bash -c exec torchrun")
    assert '--nproc-per-node "${PET_NPROC_PER_NODE:-8}"' in script and '--nnodes "${PET_NNODES:-2}"' in script
    assert ("--no-python cai train sft --launcher local --config env:CAI_TRAIN_CONFIG --data s3://b/run/in/sft.jsonl "
            "--model meta-llama/Meta-Llama-3-8B-Instruct --out s3://b/run/_train/sft") in script
    policy = manifest["spec"]["runPolicy"]
    assert policy["backoffLimit"] == 2 and policy["cleanPodPolicy"] == "Running"
    # several nodes: ExitCode (128+ restarts, 1-127 fails at once); it ignores backoffLimit, so the launcher
    # bounds the restarts by this annotation
    assert {r["restartPolicy"] for r in manifest["spec"]["pytorchReplicaSpecs"].values()} == {"ExitCode"}
    assert manifest["metadata"]["annotations"]["cai/max-restarts"] == "2"
    single = build_job(_spec(nodes=1))
    assert single["spec"]["pytorchReplicaSpecs"]["Master"]["restartPolicy"] == "OnFailure"


def test_two_nodes_with_efa_validate_against_the_crd(schema, monkeypatch):
    monkeypatch.delenv("CAI_TRAINER_IMAGE", raising=False)
    manifest = build_job(_spec(nodes=2, extra_resources={"vpc.amazonaws.com/efa": "32"}, restarts=3,
                               env={"NCCL_DEBUG": "INFO"}))
    jsonschema.validate(manifest, schema)
    for replica in ("Master", "Worker"):
        res = _container(manifest, replica)["resources"]
        assert res["requests"]["vpc.amazonaws.com/efa"] == "32" and res["limits"]["vpc.amazonaws.com/efa"] == "32"
    assert manifest["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
    assert manifest["metadata"]["annotations"]["cai/max-restarts"] == "3"


def test_scratch_size_is_requested_as_node_disk(schema):
    manifest = build_job(_spec(nodes=2, scratch_size="400Gi"))
    jsonschema.validate(manifest, schema)
    for replica in ("Master", "Worker"):
        res = _container(manifest, replica)["resources"]
        assert res["requests"]["ephemeral-storage"] == "400Gi" and "ephemeral-storage" not in res["limits"]
        volumes = manifest["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]["volumes"]
        assert {"name": "scratch", "emptyDir": {"sizeLimit": "400Gi"}} in volumes
    unsized = _container(build_job(_spec(nodes=1)), "Master")["resources"]
    assert "ephemeral-storage" not in unsized["requests"]  # no scratch_size: nothing requested


@pytest.mark.parametrize("resources, message", [
    ({"efa": "4"}, "not an extended resource name"),
    ({"vpc.amazonaws.com/efa": "many"}, "not a whole number"),
    ({"rdma/ib": "0"}, "not a whole number above 0"),
])
def test_extra_resources_are_validated(resources, message):
    with pytest.raises(ConfigError, match=rf"train.extra_resources: .*{message}"):
        RunConfig.from_dict({"train": {"extra_resources": resources}})


def test_labels_name_and_owner(monkeypatch):
    monkeypatch.setenv("CAI_POD_NAME", "cai-run-sft-launcher-123")
    monkeypatch.setenv("CAI_POD_UID", "0b6f6c3e-1111-2222-3333-444455556666")
    manifest = build_job(_spec())
    meta = manifest["metadata"]
    assert meta["labels"] == {"app": "cai", "cai/run-id": "20261123-101500-a1b2c3", "cai/stage": "sft"}
    pod_labels = manifest["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["metadata"]["labels"]
    assert pod_labels == meta["labels"]
    assert meta["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod", "name": "cai-run-sft-launcher-123",
                                        "uid": "0b6f6c3e-1111-2222-3333-444455556666", "controller": False,
                                        "blockOwnerDeletion": False}]
    assert meta["name"] == job_name("20261123-101500-a1b2c3", "sft") == build_job(_spec())["metadata"]["name"]
    monkeypatch.setenv("CAI_OWNER_KIND", "Workflow")
    monkeypatch.setenv("CAI_OWNER_NAME", "cai-pipeline-xyz")
    monkeypatch.setenv("CAI_OWNER_UID", "uid-wf")
    owner = build_job(_spec())["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "Workflow" and owner["apiVersion"] == "argoproj.io/v1alpha1"


@pytest.mark.parametrize("run_id", ["r", "20261123-101500-a1b2c3", "My_Run.With.Dots_and_CAPS", "x" * 200,
                                    "---", "ünïcode-ラン"])
def test_names_are_deterministic_dns_labels(run_id):
    for stage in ("sft", "dpo"):
        name = job_name(run_id, stage)
        assert name == job_name(run_id, stage)
        assert len(name) <= MAX_NAME and DNS_1035.match(name), name
        # the operator's pod and service names stay valid too
        assert len(f"{name}-worker-127") <= 63
    assert job_name(run_id, "sft") != job_name(run_id, "dpo")
    assert job_name(run_id, "sft") != job_name(run_id + "x", "sft")


def test_spec_hash_follows_the_config():
    a = build_job(_spec())
    assert a["metadata"]["annotations"]["cai/spec-hash"] == spec_hash(a)
    b = build_job(_spec(nodes=2))
    assert a["metadata"]["annotations"]["cai/spec-hash"] != b["metadata"]["annotations"]["cai/spec-hash"]


def test_overrides_from_the_train_section(schema):
    manifest = build_job(_spec(nodes=1, gpus_per_node=4, node_selector={"cloud.google.com/gke-accelerator":
                                                                        "nvidia-h100-80gb"},
                               tolerations=(Toleration(key="dedicated", operator="Equal", value="training",
                                                       effect="NoSchedule"),),
                               shm_size="128Gi", namespace="team-a", image="registry.local/cai-trainer:dev",
                               env={"NCCL_DEBUG": "INFO"}))
    jsonschema.validate(manifest, schema)
    pod = manifest["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert manifest["spec"]["nprocPerNode"] == "4"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert manifest["metadata"]["namespace"] == "team-a"
    assert pod["containers"][0]["image"] == "registry.local/cai-trainer:dev"
    assert next(v for v in pod["volumes"] if v["name"] == "dshm")["emptyDir"]["sizeLimit"] == "128Gi"


def test_launcher_config_validation():
    with pytest.raises(ConfigError, match="nodes"):
        LauncherConfig(nodes=0)
    with pytest.raises(ConfigError, match="image"):
        LauncherConfig(image="no tag here")
    with pytest.raises(ConfigError, match="looks like a secret"):
        LauncherConfig(env={"HF_TOKEN": "x"})
    with pytest.raises(ConfigError, match="launcher"):
        LauncherConfig.from_dict({"launcher": "slurm"})
    from cai_core.config.base import field_docs

    assert set(field_docs(LauncherConfig)) == set(LauncherConfig.__dataclass_fields__)


def test_local_paths_are_refused():
    lc = LauncherConfig(launcher="pytorchjob")
    with pytest.raises(CaiError, match="--data ./rows.jsonl is a local path"):
        job_spec("sft", SFTStageConfig(), lc, ClusterConfig(), run_id="r", data_uri="./rows.jsonl",
                 model_uri="tiny", out_uri="s3://b/o")
    with pytest.raises(CaiError, match="--model /models/x is a local path"):
        job_spec("sft", SFTStageConfig(), lc, ClusterConfig(), run_id="r", data_uri="s3://b/d",
                 model_uri="/models/x", out_uri="s3://b/o")


# ----------------------------------------------------------------------------- cai train --dry-run


def _dry_run(*args, env=None):
    result = CliRunner().invoke(train_cmd, ["--launcher", "pytorchjob", "--dry-run", *args], env=env)
    return result


def test_dry_run_prints_the_manifest(schema):
    result = _dry_run("sft", "--data", "s3://b/run/in/sft.jsonl", "--out", "s3://b/run/_train/sft",
                      "--set", "sft.deepspeed=zero3", "--run-id", "run-7", env={"CAI_POD_NAME": ""})
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load(result.output)
    jsonschema.validate(manifest, schema)
    assert manifest["metadata"]["name"] == job_name("run-7", "sft")
    assert set(manifest["spec"]["pytorchReplicaSpecs"]) == {"Master"}


def test_dry_run_multi_node_from_a_config_file(schema, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dpo:\n  deepspeed: zero3\n  bf16: true\ncluster:\n  namespace: ml\n")
    result = _dry_run("dpo", "--config", str(cfg), "--set", "train.nodes=3" if _has_train_section() else
                      "dpo.beta=0.2", "--data", "s3://b/p.jsonl", "--model", "s3://b/run/sft/model",
                      "--out", "s3://b/run/_train/dpo")
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load(result.output)
    jsonschema.validate(manifest, schema)
    assert manifest["metadata"]["namespace"] == "ml"
    if _has_train_section():
        assert manifest["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2


def test_dry_run_inlines_a_custom_deepspeed_file(tmp_path):
    ds = tmp_path / "my_zero3.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True},
                              "train_micro_batch_size_per_gpu": "auto"}))
    result = _dry_run("sft", "--data", "s3://b/d.jsonl", "--out", "s3://b/o", "--set", f"sft.deepspeed={ds}")
    assert result.exit_code == 0, result.output
    env = {e["name"]: e.get("value") for e in _container(yaml.safe_load(result.output))["env"]}
    shipped = json.loads(env["CAI_TRAIN_CONFIG"])["sft"]["deepspeed"]
    assert json.loads(shipped)["zero_optimization"]["stage"] == 3  # the pods get the file's content


def test_dry_run_refuses_local_paths_and_bad_deepspeed(tmp_path):
    result = _dry_run("sft", "--data", str(tmp_path / "x.jsonl"), "--out", "s3://b/o")
    assert result.exit_code != 0 and "local path" in str(result.exception)
    bad = tmp_path / "bad.json"
    bad.write_text('{"zero_optimization": {"stage": 3,}}')
    result = _dry_run("sft", "--data", "s3://b/d", "--out", "s3://b/o", "--set", f"sft.deepspeed={bad}")
    assert result.exit_code != 0
    assert f"{bad}" in str(result.exception) and "line 1 column" in str(result.exception)


def test_dry_run_needs_the_pytorchjob_launcher():
    result = CliRunner().invoke(train_cmd, ["sft", "--dry-run", "--data", "s3://b/d"])
    assert result.exit_code != 0 and "--launcher pytorchjob" in result.output


def _has_train_section() -> bool:
    from cai_core.config.run import RunConfig

    return "train" in RunConfig.field_types()


def _templates(manifest: dict) -> list[dict]:
    return [r["template"] for r in manifest["spec"]["pytorchReplicaSpecs"].values()]


def test_pods_keep_istio_out_by_default(schema, monkeypatch):
    # Istio's sidecar keeps the master pod Running after training in a profile namespace (kubeflow/trainer#1637).
    monkeypatch.delenv("CAI_TRAINER_IMAGE", raising=False)
    manifest = build_job(_spec(nodes=2))
    jsonschema.validate(manifest, schema)
    for template in _templates(manifest):
        assert template["metadata"]["annotations"] == LauncherConfig().pod_annotations
        assert template["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
        assert "priorityClassName" not in template["spec"]
    assert "kueue.x-k8s.io/queue-name" not in manifest["metadata"]["labels"]


def test_pod_labels_annotations_priority_and_kueue_queue(schema, monkeypatch):
    monkeypatch.delenv("CAI_TRAINER_IMAGE", raising=False)
    manifest = build_job(_spec(nodes=2, pod_labels={"team": "ml", "cost-center": "42"},
                               pod_annotations={"example.com/owner": "ml-platform"},
                               priority_class="gpu-high", kueue_queue="h100-queue"))
    jsonschema.validate(manifest, schema)
    assert manifest["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "h100-queue"  # Kueue reads the job's label
    for template in _templates(manifest):
        labels = template["metadata"]["labels"]
        assert labels["team"] == "ml" and labels["cost-center"] == "42"
        assert labels["cai/run-id"] == manifest["metadata"]["labels"]["cai/run-id"] and labels["cai/stage"] == "sft"
        assert "kueue.x-k8s.io/queue-name" not in labels  # the job is queued, not each pod
        assert template["metadata"]["annotations"] == {"example.com/owner": "ml-platform"}
        assert template["spec"]["priorityClassName"] == "gpu-high"
    # a new queue or priority is a different job spec (the launcher does not re-attach to the old job)
    assert spec_hash(manifest) != spec_hash(build_job(_spec(nodes=2, priority_class="gpu-low")))


def test_pod_metadata_options_are_validated():
    for bad, needle in (({"pod_labels": {"app": "x"}}, "set by cai itself"),
                        ({"pod_labels": {"kueue.x-k8s.io/queue-name": "q"}}, "train.kueue_queue"),
                        ({"pod_labels": {"team": "not a value"}}, "label value"),
                        ({"pod_annotations": {"bad key!": "x"}}, "annotation key"),
                        ({"priority_class": "High_Priority"}, "PriorityClass"),
                        ({"kueue_queue": "Queue One"}, "LocalQueue")):
        with pytest.raises(ConfigError, match=needle):
            LauncherConfig.from_dict(bad)
