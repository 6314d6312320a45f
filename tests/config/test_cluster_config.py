"""ClusterConfig and the built-in cluster config: defaults, documentation, and every static check."""
from __future__ import annotations

import dataclasses

import pytest

from cai_core.config.base import field_docs
from cai_core.config.cluster import ClusterConfig, SecretRef, SecretsConfig, Toleration
from cai_core.config.loading import default_cluster_config_path, load_cluster_run_config, load_run_config
from cai_core.config.run import RunConfig
from cai_core.errors import ConfigError
from cai_core.k8s.validate import image_reference_problem
from cai_core.runtime.steps import GENERATION_STEPS, STEP_NAMES, TRAINING_STEPS


def test_builtin_cluster_config_loads_with_load_run_config():
    cfg = load_run_config(default_cluster_config_path())
    assert cfg.model.name_or_path == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert cfg.teacher.backend == "openai"
    assert cfg.output_dir.startswith("s3://")
    c = cfg.cluster
    assert cfg.vllm.gpus == 8 and cfg.vllm.tensor_parallel_size * cfg.vllm.replicas == 8
    assert c.node_selector == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert c.tolerations == (Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"),)
    assert set(c.secrets.refs()) == {"openai_api_key", "aws_access_key_id", "aws_secret_access_key", "hf_token"}
    assert load_cluster_run_config() == cfg  # the same thing through the cluster loader


def test_dataclass_defaults_are_valid_and_match_the_yaml_where_it_matters():
    c = ClusterConfig()
    assert c.image("core") == f"ghcr.io/cai-project/cai-core:{c.image_tag()}"
    assert c.step_image("revise").startswith("ghcr.io/cai-project/cai-vllm:")
    assert c.step_image("sft").startswith("ghcr.io/cai-project/cai-trainer:")
    assert c.step_image("judge").startswith("ghcr.io/cai-project/cai-core:")
    assert RunConfig().cluster == c


@pytest.mark.parametrize("cls", [ClusterConfig, SecretsConfig, SecretRef, Toleration])
def test_every_field_is_documented(cls):
    docs = field_docs(cls)
    missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
    assert not missing, f"{cls.__name__}: fields without a '#:' comment: {missing}"


def test_step_names_match_the_runtime():
    from cai_core.runtime.adapters import ADAPTERS

    assert set(ADAPTERS) == set(STEP_NAMES), "each step of cai_core.runtime.steps.STEPS needs one adapter"
    assert set(GENERATION_STEPS) | set(TRAINING_STEPS) <= set(STEP_NAMES)


def _err(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_cluster_run_config(None, overrides)
    return str(info.value)


@pytest.mark.parametrize("tp,dp", [(8, 1), (4, 2), (2, 4), (1, 8)])
def test_parallel_layouts_that_fill_the_gpus(tp, dp):
    cfg = load_cluster_run_config(None, [f"vllm.tensor_parallel_size={tp}", f"vllm.data_parallel_replicas={dp}"])
    assert cfg.vllm.tensor_parallel_size * cfg.vllm.replicas == 8
    assert load_cluster_run_config(None, [f"vllm.tensor_parallel_size={tp}"]).vllm.replicas == dp  # one setting


def test_gpu_layout_that_does_not_divide():
    msg = _err(["vllm.tensor_parallel_size=3", "vllm.data_parallel_replicas=1"])
    assert "vllm.tensor_parallel_size" in msg and "data_parallel_replicas (1) must equal gpus (8)" in msg
    assert "1x8, 2x4, 4x2, 8x1" in msg
    msg = _err(["vllm.gpus=4", "vllm.tensor_parallel_size=8"])
    assert "must equal gpus (4)" in msg and "1x4, 2x2, 4x1" in msg
    assert "must be >= 1" in _err(["vllm.gpus=0"])
    for key in ("generation_gpus", "tensor_parallel_size", "data_parallel_replicas"):  # one place for the layout
        assert f"cluster.{key}: moved to vllm." in _err([f"cluster.{key}=8"])


@pytest.mark.parametrize("override,needle", [
    ("cluster.registry=GHCR.io/Bad Name", "cluster.registry"),
    ("cluster.registry=ghcr.io/UpperCase", "cluster.registry"),
    ("cluster.tag=bad tag!", "cluster.tag"),
    ("cluster.tag=-starts-with-dash", "cluster.tag"),
    ("cluster.core_image=ghcr.io/org/cai-core", "has no tag or digest"),
    ("cluster.trainer_image=ghcr.io/org/Trainer:1", "cluster.trainer_image"),
    ("cluster.vllm_image=ghcr.io/org/vllm:1 2", "cluster.vllm_image"),
    ("cluster.vllm_image=ghcr.io/org/vllm@sha256:xyz", "not a valid image reference"),
])
def test_invalid_image_references(override, needle):
    assert needle in _err([override])


@pytest.mark.parametrize("ref", [
    "localhost:5000/cai-core:0.1.0", "registry.example.com:443/team/sub/cai-core:v1.2_3",
    "cai-core:1", "ghcr.io/org/cai-vllm@sha256:" + "a" * 64, "ghcr.io/org/cai-vllm:1@sha256:" + "b" * 64,
])
def test_valid_image_references(ref):
    assert image_reference_problem(ref) is None
    assert ClusterConfig(core_image=ref).image("core") == ref


def test_registry_and_tag_make_the_images():
    cfg = load_cluster_run_config(None, ["cluster.registry=registry.example.com:5000/ml", "cluster.tag=2026.11.1"])
    assert cfg.cluster.image("vllm") == "registry.example.com:5000/ml/cai-vllm:2026.11.1"
    assert ClusterConfig(tag="").image_tag() == __import__("cai_core").__version__.replace("+", "-")


@pytest.mark.parametrize("override,needle", [
    ("cluster.secrets.openai_api_key={secret: Bad_Name, key: k}", "cluster.secrets.openai_api_key.secret"),
    ("cluster.secrets.openai_api_key={secret: ok, key: 'bad key'}", "not a valid Secret key"),
    ("cluster.secrets.hf_token={secret: ok, key: 'a/b'}", "cluster.secrets.hf_token.key"),
    ("cluster.secrets.hf_token={secret: ok}", "cluster.secrets.hf_token.key"),
    ("cluster.secrets.aws_access_key_id=null", "set both aws_access_key_id and aws_secret_access_key"),
    ("cluster.secrets.openai_api_key={secret: ok, key: k, value: sk-123}", "unknown config key"),
])
def test_secret_references_are_checked(override, needle):
    assert needle in _err([override])


def test_secret_refs_may_be_left_out():
    cfg = load_cluster_run_config(None, ["cluster.secrets.aws_access_key_id=null",
                                         "cluster.secrets.aws_secret_access_key=null", "cluster.secrets.hf_token=null"])
    assert set(cfg.cluster.secrets.refs()) == {"openai_api_key"}


@pytest.mark.parametrize("override,needle", [
    ("cluster.pipeline_root=/data/kfp", "cluster.pipeline_root: must be an s3://, minio:// or gs:// URI"),
    ("cluster.generation_stage_volume=pvc", "cluster.generation_stage_volume"),
    ("cluster.generation_stage_storage_class=Fast_NVMe", "'Fast_NVMe' is not a valid StorageClass name"),
])
def test_artifact_and_staging_storage_are_checked(override, needle):
    assert needle in _err([override])


@pytest.mark.parametrize("override,needle", [
    ("cluster.retry_steps=[revise, sfft]", "unknown step(s) 'sfft'"),
    ("cluster.no_cache_steps=[prepare]", "cluster.no_cache_steps"),
    ("cluster.timeouts_s={sft: 10, trian: 5}", "cluster.timeouts_s"),
    ("cluster.timeouts_s={sft: -1}", "must be >= 0"),
    ("cluster.retries=-1", "cluster.retries"),
    ("cluster.retry_backoff_factor=0.5", "cluster.retry_backoff_factor"),
    ("cluster.shm_size=lots", "cluster.shm_size"),
    ("cluster.generation_memory=1.5Gi", "memory quantity"),
    ("cluster.cpu=two", "CPU quantity"),
    ("cluster.node_selector={'bad key!': x}", "not a valid label key"),
    ("cluster.node_selector={gpu: 'H100 80GB'}", "not a valid label value"),
    ("cluster.tolerations=[{key: a, operator: Exists, value: b}]", "must be empty with operator Exists"),
    ("cluster.tolerations=[{key: a, operator: Sometimes}]", "cluster.tolerations[0].operator"),
    ("cluster.env={OPENAI_API_KEY: sk-123}", "looks like a secret"),
    ("cluster.env={'1BAD': x}", "not a valid environment variable name"),
    ("cluster.namespace=Team_A", "cluster.namespace"),
    ("cluster.kfp_host=kubeflow.example.com", "must start with http"),
    ("cluster.config_map=Bad_Map", "cluster.config_map"),
    ("cluster.image_pull_secrets=[Bad_Secret]", "cluster.image_pull_secrets"),
    ("cluster.nodes=2", "unknown config key"),
])
def test_range_and_name_checks(override, needle):
    assert needle in _err([override])


def test_a_user_file_replaces_the_node_selector(tmp_path):
    path = tmp_path / "gke.yaml"
    path.write_text("cluster:\n  node_selector: {cloud.google.com/gke-accelerator: nvidia-h100-80gb}\n"
                    "  timeouts_s: {judge: 60}\n")
    cfg = load_cluster_run_config(path)
    assert cfg.cluster.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert cfg.cluster.timeout_for("judge") == 60 and cfg.cluster.timeout_for("sft") == 172800  # merged
    assert cfg.model.name_or_path == "meta-llama/Meta-Llama-3-8B-Instruct"  # the built-in cluster config below


def test_errors_in_a_user_file_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("vllm:\n  tensor_parallel_size: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: vllm.tensor_parallel_size"):
        load_cluster_run_config(path)
