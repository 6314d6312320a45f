"""`cai compile` with every non-default cluster option: each reaches the compiled YAML, on the pods it is for.

The golden file (tests/golden/pipeline.yaml) covers the default config only; here the ConfigMap mount, the CPU
pods' placement, the pull policy, the GPU resource name, the generation image, the pipeline root and the
model staging volume are set away from their defaults and looked up in the YAML the backend would parse.
"""
from __future__ import annotations

import pytest
import yaml

from cai_core.runtime.steps import GENERATION_STEPS, STEP_NAMES
from tests.pipelines.test_compile import _compile, each, tasks_by_step

OPTIONS = ["cluster.config_map=cai-settings", "cluster.config_map_mount=/etc/cai-settings",
           "cluster.cpu_tolerations=[{key: dedicated, operator: Equal, value: cpu-pool, effect: NoSchedule}]",
           "cluster.cpu_node_selector={pool: cpu-nodes}", "cluster.image_pull_policy=Always",
           "cluster.gpu_resource=amd.com/gpu", "cluster.generation_image=trainer",
           "cluster.pipeline_root=s3://team-bucket/kfp", "cluster.generation_stage_volume=ephemeral",
           "cluster.generation_stage_storage_class=fast-nvme"]


@pytest.fixture(scope="module")
def options(tmp_path_factory):
    cfg, _, out, docs = _compile(tmp_path_factory.mktemp("options"), OPTIONS)
    return cfg, out.read_text(), tasks_by_step(docs)


@pytest.fixture(scope="module")
def defaults(tmp_path_factory):
    cfg, _, out, docs = _compile(tmp_path_factory.mktemp("defaults"))
    return cfg, out.read_text(), tasks_by_step(docs)


def _each(by_step, steps):
    return [(s, c, k) for s, _, c, k in each(by_step, steps)]


def test_every_step_is_compiled(options):
    assert set(GENERATION_STEPS) | {"prepare_prompts", "clean_revisions", "sft", "dpo", "judge", "report"} <= \
        set(options[2])


def test_the_config_map_is_mounted_into_every_pod(options, defaults):
    for step, _, k8s in _each(options[2], STEP_NAMES):
        mounts = k8s.get("configMapAsVolume", [])
        assert [(m["configMapName"], m["mountPath"], m.get("optional", False)) for m in mounts] == \
            [("cai-settings", "/etc/cai-settings", False)], step
    assert all("configMapAsVolume" not in k for _, _, k in _each(defaults[2], STEP_NAMES))


def test_cpu_pods_get_their_own_tolerations_and_node_selector(options):
    cpu_steps = set(STEP_NAMES) - set(GENERATION_STEPS)
    assert _each(options[2], cpu_steps)
    for step, _, k8s in _each(options[2], cpu_steps):
        assert k8s["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "cpu-pool",
                                       "effect": "NoSchedule"}], step
        assert k8s["nodeSelector"]["labels"] == {"pool": "cpu-nodes"}, step
    for step, _, k8s in _each(options[2], GENERATION_STEPS):  # the GPU pods keep the GPU placement
        assert k8s["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}], step
        assert k8s["nodeSelector"]["labels"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, step


def test_the_image_pull_policy_reaches_every_pod(options, defaults):
    for step, _, k8s in _each(options[2], STEP_NAMES):
        assert k8s.get("imagePullPolicy") == "Always", step
    assert all(k.get("imagePullPolicy") in (None, "IfNotPresent") for _, _, k in _each(defaults[2], STEP_NAMES))


def test_the_gpu_resource_name_is_the_configured_one(options):
    assert _each(options[2], GENERATION_STEPS)
    for step, container, _ in _each(options[2], GENERATION_STEPS):
        accel = container["resources"]["accelerator"]
        assert accel["resourceType"] == "amd.com/gpu" and accel["resourceCount"] == "8", step
    assert "resourceType: nvidia.com/gpu" not in options[1]


def test_generation_steps_use_the_chosen_image(options, defaults):
    cfg = options[0]
    trainer = cfg.cluster.image("trainer")
    for step, container, _ in _each(options[2], GENERATION_STEPS):
        assert container["image"] == trainer, step
    for step, container, _ in _each(options[2], set(STEP_NAMES) - set(GENERATION_STEPS)):
        assert container["image"] == cfg.cluster.step_image(step) and "cai-vllm" not in container["image"], step
    assert "cai-vllm" not in options[1]
    assert {c["image"] for _, c, _ in _each(defaults[2], GENERATION_STEPS)} == {defaults[0].cluster.image("vllm")}


def test_the_pipeline_root_is_the_teams(options, defaults):
    assert next(yaml.safe_load_all(options[1]))["defaultPipelineRoot"] == "s3://team-bucket/kfp"
    assert "defaultPipelineRoot" not in next(yaml.safe_load_all(defaults[1]))  # the backend's own default


def test_models_are_staged_on_a_requested_volume_when_asked(options, defaults):
    stage_dir = options[0].vllm.stage_dir
    assert _each(options[2], GENERATION_STEPS)
    for step, _, k8s in _each(options[2], GENERATION_STEPS):
        assert k8s["genericEphemeralVolume"] == [{"volumeName": "models", "mountPath": stage_dir,
                                                  "accessModes": ["ReadWriteOnce"], "size": "200Gi",
                                                  "storageClassName": "fast-nvme"}], step
        assert [m["volumeName"] for m in k8s["emptyDirMounts"]] == ["dshm"], step
    for step, _, k8s in _each(defaults[2], GENERATION_STEPS):
        assert "genericEphemeralVolume" not in k8s, step
        assert {"volumeName": "models", "mountPath": stage_dir, "sizeLimit": "200Gi"} in k8s["emptyDirMounts"], step
    cpu_steps = set(STEP_NAMES) - set(GENERATION_STEPS)
    assert all("genericEphemeralVolume" not in k for _, _, k in _each(options[2], cpu_steps))
