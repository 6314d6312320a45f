"""The Kubeflow Trainer v2 TrainJob (train.launcher: trainjob): rendering, the v2.3.0 CRD's schema, the state
mapping from its conditions, `cai train --launcher trainjob --dry-run`, config errors, and launcher scenarios
against tests/fake_k8s.py serving trainjobs (JobSet pods found by label).

The CRDs are vendored under tests/data/crds/trainer-v2 (SOURCE.md: kubeflow/trainer v2.3.0)."""
from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from cai_core.cli.commands.train import train_cmd
from cai_core.config.cluster import ClusterConfig, SecretRef, SecretsConfig, Toleration
from cai_core.errors import ConfigError
from cai_core.k8s.config import LauncherConfig
from cai_core.k8s.launcher import TRAINJOB, Launcher, TrainingJobFailed, kind_of, trainjob_state
from cai_core.k8s.pytorchjob import build_job, spec_hash
from cai_core.k8s.trainjob import build_trainjob, master_selector
from cai_core.stages.sft import SFTStageConfig
from cai_core.training.launch import job_spec

CRDS = Path(__file__).resolve().parents[1] / "data" / "crds" / "trainer-v2"


@pytest.fixture(scope="module")
def schema() -> dict:
    crd = yaml.safe_load((CRDS / "trainer.kubeflow.org_trainjobs.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    return version["schema"]["openAPIV3Schema"]


@pytest.fixture(autouse=True)
def _no_owner_env(monkeypatch):
    for var in ("CAI_POD_NAME", "CAI_POD_UID", "CAI_OWNER_NAME", "CAI_TRAINER_IMAGE"):
        monkeypatch.delenv(var, raising=False)


def _spec(nodes=1, **lc_changes):
    cluster = ClusterConfig(secrets=SecretsConfig(
        aws_access_key_id=SecretRef(secret="cai-s3", key="access-key-id"),
        aws_secret_access_key=SecretRef(secret="cai-s3", key="secret-access-key"),
        hf_token=SecretRef(secret="cai-hf", key="token")), env={"AWS_ENDPOINT_URL_S3": "http://minio:9000"},
        image_pull_secrets=("regcred",), service_account="cai-train")
    lc = LauncherConfig(launcher="trainjob", nodes=nodes, **lc_changes)
    return job_spec("sft", SFTStageConfig(deepspeed="zero3"), lc, cluster, run_id="20261123-101500-a1b2c3",
                    data_uri="s3://b/run/in/sft.jsonl", model_uri="meta-llama/Meta-Llama-3-8B-Instruct",
                    out_uri="s3://b/run/_train/sft")


ALL_OPTIONS = dict(gpus_per_node=4, scratch_size="500Gi", env={"NCCL_DEBUG": "INFO"}, pod_labels={"team": "ml"},
                   pod_annotations={"a.example.com/x": "1"}, kueue_queue="gpu-queue",
                   extra_resources={"vpc.amazonaws.com/efa": "32"}, node_selector={"pool": "h100"},
                   tolerations=(Toleration(key="gpu", operator="Equal", value="yes", effect="NoExecute",
                                           toleration_seconds=60),), runtime="my-torch", runtime_kind="TrainingRuntime")


def _pod(manifest):
    return manifest["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
        "template"]["spec"]["template"]


@pytest.mark.parametrize("nodes,options", [(1, {}), (2, {}), (4, ALL_OPTIONS)])
def test_trainjob_validates_against_the_crd(schema, nodes, options):
    manifest = build_trainjob(_spec(nodes, **options))
    jsonschema.validate(manifest, schema)
    assert yaml.safe_load(yaml.safe_dump(manifest)) == manifest
    assert manifest["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and manifest["kind"] == "TrainJob"
    trainer = manifest["spec"]["trainer"]
    assert trainer["numNodes"] == nodes and trainer["numProcPerNode"] == options.get("gpus_per_node", 8)
    gpus = str(options.get("gpus_per_node", 8))
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == gpus
    assert trainer["command"] == ["/bin/bash", "-c"] and "cai train sft --launcher local" in trainer["args"][0]
    assert "PET_NODE_RANK" in trainer["args"][0]
    env = {e["name"]: e for e in trainer["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "cai-hf", "key": "token"}
    assert "OPENAI_API_KEY" not in env and env["AWS_ENDPOINT_URL_S3"]["value"] == "http://minio:9000"
    pod = _pod(manifest)
    assert pod["spec"]["serviceAccountName"] == "cai-train" and pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["spec"]["containers"] == [{"name": "node", "volumeMounts": [
        {"name": "dshm", "mountPath": "/dev/shm"}, {"name": "scratch", "mountPath": "/scratch"}]}]
    assert pod["metadata"]["labels"]["cai/run-id"] == "20261123-101500-a1b2c3"
    assert manifest["metadata"]["annotations"]["cai/spec-hash"] == spec_hash(manifest)


def test_every_cluster_option_lands(schema):
    manifest = build_trainjob(_spec(2, **ALL_OPTIONS))
    assert manifest["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "TrainingRuntime",
                                              "name": "my-torch"}
    assert manifest["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    res = manifest["spec"]["trainer"]["resourcesPerNode"]
    assert res["requests"]["vpc.amazonaws.com/efa"] == "32" == res["limits"]["vpc.amazonaws.com/efa"]
    assert res["requests"]["ephemeral-storage"] == "500Gi"  # /scratch's disk, for the scheduler
    pod = _pod(manifest)
    assert pod["metadata"]["labels"]["team"] == "ml"
    assert pod["metadata"]["annotations"] == {"a.example.com/x": "1"}
    assert pod["spec"]["nodeSelector"] == {"pool": "h100"}
    assert pod["spec"]["tolerations"] == [{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoExecute",
                                           "tolerationSeconds": 60}]
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert vols["dshm"]["emptyDir"]["medium"] == "Memory" and vols["scratch"]["emptyDir"] == {"sizeLimit": "500Gi"}
    assert {e["name"]: e.get("value") for e in manifest["spec"]["trainer"]["env"]}["NCCL_DEBUG"] == "INFO"


def test_defaults_and_same_name_and_hash_inputs_as_the_pytorchjob():
    spec = _spec()
    tj, pj = build_trainjob(spec), build_job(spec)
    assert tj["spec"]["runtimeRef"]["kind"] == "ClusterTrainingRuntime"
    assert tj["spec"]["runtimeRef"]["name"] == "torch-distributed"
    assert tj["metadata"]["name"] == pj["metadata"]["name"] and tj["metadata"]["labels"] == pj["metadata"]["labels"]
    assert build_trainjob(_spec(2))["metadata"]["annotations"]["cai/spec-hash"] != \
        tj["metadata"]["annotations"]["cai/spec-hash"]
    assert kind_of(tj) is TRAINJOB


def test_a_broken_trainjob_fails_the_schema(schema):
    manifest = build_trainjob(_spec())
    manifest["spec"]["trainer"]["numNodes"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(manifest, schema)


def _cond(kind, status="True", reason="", message=""):
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-12-04T00:00:00Z"}


@pytest.mark.parametrize("status,phase", [
    ({}, "Pending"),
    ({"conditions": [_cond("Created", reason="JobSetCreated")]}, "Created"),
    ({"conditions": [_cond("Created")], "jobsStatus": [{"name": "node", "active": 2}]}, "Running"),
    ({"conditions": [_cond("Created"), _cond("Complete", reason="JobSetCompleted")]}, "Succeeded"),
    ({"conditions": [_cond("Created"), _cond("Failed", reason="JobSetFailed", message="boom")]}, "Failed"),
    ({"conditions": [_cond("Suspended")]}, "Suspended"),
    ({"conditions": [_cond("Complete", status="False")], "jobsStatus": [{"name": "node", "ready": 1}]}, "Running"),
])
def test_state_from_conditions(status, phase):
    state = trainjob_state({"status": status})
    assert state.phase == phase
    if phase == "Failed":
        assert state.message == "boom" and state.done


def test_master_selector_names_the_rank0_jobset_pod():
    sel = master_selector("cai-sft-x")
    assert "jobset.sigs.k8s.io/jobset-name=cai-sft-x" in sel and "batch.kubernetes.io/job-completion-index=0" in sel


def test_dry_run_prints_the_trainjob(schema):
    result = CliRunner().invoke(train_cmd, ["sft", "--launcher", "trainjob", "--dry-run", "--data", "s3://b/sft.jsonl",
                                            "--out", "s3://b/sft", "--set", "train.nodes=2"])
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load(result.output)
    assert manifest["kind"] == "TrainJob" and manifest["spec"]["trainer"]["numNodes"] == 2
    jsonschema.validate(manifest, schema)


@pytest.mark.parametrize("key,value,word", [("launcher", "trainjobs", "launcher"),
                                            ("runtime_kind", "Runtime", "runtime_kind"),
                                            ("runtime", "Not_A_Name", "runtime")])
def test_invalid_values_name_the_key(key, value, word):
    with pytest.raises(ConfigError, match=word):
        LauncherConfig.from_dict({key: value})


def test_local_paths_are_refused_for_trainjob():
    with pytest.raises(ConfigError, match="train.launcher trainjob"):
        job_spec("sft", SFTStageConfig(), LauncherConfig(launcher="trainjob"), ClusterConfig(), run_id="r",
                 data_uri="/tmp/x.jsonl", model_uri="tiny", out_uri="s3://b/o")


# ------------------------------------------------------------------ launcher scenarios on the fake API server


@pytest.fixture
def fake():
    from tests.fake_k8s import FakeK8s

    server = FakeK8s(kind="trainjob", step_s=0.05).start()
    yield server
    server.stop()


def _launcher(fake, lines, **kw):
    return Launcher(fake.api_client(), "kubeflow", poll_interval_s=0.3, emit=lines.append, kind=TRAINJOB,
                    delete_wait_s=5, **kw)


def test_trainjob_succeeds_with_the_rank0_pods_log(fake):
    lines: list[str] = []
    manifest = build_trainjob(_spec())
    final = _launcher(fake, lines).run(manifest)
    assert trainjob_state(final).phase == "Succeeded"
    assert "[rank0] step 3 loss 1.52" in lines
    assert any("trainjob" in line and "Succeeded" in line for line in lines)
    assert any("labelSelector=jobset.sigs.k8s.io" in path or "labelSelector=jobset.sigs.k8s.io%2F" in path
               or "jobset-name" in path for _, path in fake.requests)


def test_trainjob_failure_carries_the_message_and_termination_message(fake):
    from tests.fake_k8s import FAIL_MESSAGE

    fake.scenario = "fail"
    with pytest.raises(TrainingJobFailed) as info:
        _launcher(fake, []).run(build_trainjob(_spec()))
    text = str(info.value)
    assert "trainjob kubeflow/" in text and FAIL_MESSAGE in text and "has failed" in text


def test_trainjob_timeout_deletes_it(fake):
    from cai_core.k8s.launcher import TrainingJobTimeout

    fake.scenario = "hang"
    manifest = build_trainjob(_spec())
    with pytest.raises(TrainingJobTimeout):
        _launcher(fake, [], timeout_s=1.0).run(manifest)
    assert fake.deleted == [manifest["metadata"]["name"]]
    assert any(m == "DELETE" and "/trainer.kubeflow.org/v1alpha1/" in p for m, p in fake.requests)


def test_the_charts_role_grants_trainjobs_when_that_launcher_is_chosen(tmp_path):
    from tests.k8s.test_helm_chart import ALLOWED_RULES, TRAINJOB_ALLOWED_RULES, kinds, role_rules, template
    from tests.k8s_tools import tool

    (role,) = kinds(template(tool("helm"), tmp_path, {"runConfig": {"train": {"launcher": "trainjob"}}}), "Role")
    assert role_rules(role) == TRAINJOB_ALLOWED_RULES
    (default_role,) = kinds(template(tool("helm"), tmp_path / "default"), "Role")
    assert role_rules(default_role) == ALLOWED_RULES


def test_a_trainjob_that_cannot_be_scheduled_says_why(fake):
    from cai_core.k8s.launcher import TrainingJobTimeout
    from tests.fake_k8s import UNSCHEDULABLE

    fake.scenario = "unschedulable"
    lines: list[str] = []
    manifest = build_trainjob(_spec())
    with pytest.raises(TrainingJobTimeout):
        _launcher(fake, lines, timeout_s=2).run(manifest)
    assert any(line.endswith(f"not scheduled (Unschedulable: {UNSCHEDULABLE})") and "trainjob " in line
               for line in lines), lines
