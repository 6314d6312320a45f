"""`cai compile`: the cluster pipeline YAML, parsed the way the KFP backend parses it.

Golden file: tests/golden/pipeline.yaml is the default cluster config compiled and
normalised (KFP SDK version, cai version, derived run id). After an intended change
to the pipeline, the components, a stage config default or the cluster settings,
regenerate it with

    CAI_UPDATE_GOLDEN=1 python -m pytest tests/pipelines/test_compile.py -k golden

and review the diff before committing it.
"""
from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb
from kfp.pipeline_spec import pipeline_spec_pb2

import cai_core
from cai_core.cli.commands.compile import compile_cmd
from cai_core.config.loading import load_cluster_run_config
from cai_core.errors import CaiError, ConfigError
from cai_core.runtime.engine import payload
from cai_core.runtime.steps import GENERATION_STEPS, STEP_NAMES, STEPS, TRAINING_STEPS
from cai_pipelines.cluster import compile_pipeline

GOLDEN = Path(__file__).parents[1] / "golden" / "pipeline.yaml"
PARAM_OF_STEP = {"prepare_prompts": "prompts_config", "prepare_eval": "eval_prompts_config",
                 "revise": "revise_config", "clean_revisions": "clean_config", "clean_pairs": "clean_config",
                 "sft": "sft_config", "pairs": "pairs_config", "discover": "discover_config", "judge": "judge_config", "dpo": "dpo_config",
                 "gate": "gate_config", "evaluate": "evaluate_config", "report": "report_config"}


def _compile(tmp_path: Path, overrides=(), name="pipeline.yaml"):
    cfg = load_cluster_run_config(None, list(overrides))
    out = tmp_path / name
    result = compile_pipeline(cfg, out)
    docs = list(yaml.safe_load_all(out.read_text()))
    return cfg, result, out, docs


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("compile"))


def tasks_by_step(docs):
    """step -> [(task spec, container spec, kubernetes executor config), ...] from the parsed YAML, for the
    tasks of every DAG (those inside dsl.If/Else too); a step may appear more than once (report)."""
    spec, platform = docs
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    containers = spec["deploymentSpec"]["executors"]
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    out: dict[str, list] = {}
    for dag in dags:
        for task in dag["tasks"].values():
            executor = spec["components"][task["componentRef"]["name"]].get("executorLabel")
            if executor is None:
                continue  # a sub-DAG (condition branch)
            step = k8s[executor]["podMetadata"]["labels"]["cai/stage"]
            out.setdefault(step, []).append((task, containers[executor]["container"], k8s[executor]))
    return out


@pytest.fixture(scope="module")
def by_step(compiled):
    return tasks_by_step(compiled[3])


def each(by_step, steps=None):
    """(step, task, container, k8s) for every task of the given steps (default: all)."""
    for step, entries in by_step.items():
        if steps is None or step in steps:
            for task, container, k8s in entries:
                yield step, task, container, k8s


def test_both_documents_parse_as_the_backend_parses_them(compiled):
    _, _, _, docs = compiled
    assert len(docs) == 2
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
    platform = json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec())
    assert spec.pipeline_info.name == "cai"
    executors = platform.platforms["kubernetes"].deployment_spec.executors
    assert len(executors) == len(docs[0]["deploymentSpec"]["executors"])
    for name, struct in docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"].items():
        json_format.ParseDict(struct, k8s_pb.KubernetesExecutorConfig())  # strict: unknown fields fail


def test_every_step_is_there(by_step):
    # discover: only with judge.constitution=discover; compare: only in the ablation pipeline
    assert set(STEP_NAMES) - {"discover", "compare"} <= set(by_step) <= set(STEP_NAMES)


def test_discover_runs_before_judge_and_feeds_it(tmp_path):
    cfg, _, _, (spec, _) = _compile(tmp_path, ["judge.constitution=discover", "discover.source=s3://b/prefs.jsonl"])
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["judge"]["inputs"]["artifacts"]["constitution"]["taskOutputArtifact"] == {
        "outputArtifactKey": "constitution", "producerTask": "discover"}
    assert json.loads(spec["root"]["inputDefinitions"]["parameters"]["discover_config"]["defaultValue"])[
        "discover"]["source"] == "s3://b/prefs.jsonl"


def test_images_come_from_the_config(compiled, by_step, tmp_path):
    cfg = compiled[0]
    for step, _, container, _ in each(by_step):
        assert container["image"] == cfg.cluster.step_image(step)
    assert {c["image"].rsplit(":", 1)[0] for _, _, c, _ in each(by_step, GENERATION_STEPS)} == \
        {"ghcr.io/cai-project/cai-vllm"}
    assert {c["image"].rsplit(":", 1)[0] for _, _, c, _ in each(by_step, TRAINING_STEPS)} == \
        {"ghcr.io/cai-project/cai-trainer"}
    generation_tasks = len(list(each(by_step, GENERATION_STEPS)))
    _, _, out, _ = _compile(tmp_path, ["cluster.registry=registry.example.com:5000/ml", "cluster.tag=v7",
                                       "cluster.vllm_image=mirror.example.com/vllm-cai@sha256:" + "c" * 64])
    text = out.read_text()
    assert "ghcr.io" not in text
    assert "registry.example.com:5000/ml/cai-core:v7" in text and "registry.example.com:5000/ml/cai-trainer:v7" in text
    assert text.count("image: mirror.example.com/vllm-cai@sha256:") == generation_tasks


def test_generation_pods_get_gpus_placement_and_shm(by_step):
    assert set(GENERATION_STEPS) - {"gate"} <= set(by_step)
    for step, _, container, k8s in each(by_step, GENERATION_STEPS):
        accel = container["resources"]["accelerator"]
        assert accel["resourceType"] == "nvidia.com/gpu" and accel["resourceCount"] == "8", step
        assert container["resources"]["resourceMemoryLimit"] == "256Gi"
        assert k8s["nodeSelector"]["labels"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        assert k8s["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert k8s["emptyDirMounts"] == [{"volumeName": "dshm", "mountPath": "/dev/shm", "medium": "Memory",
                                          "sizeLimit": "64Gi"},
                                         {"volumeName": "models", "mountPath": "/tmp/cai-models", "sizeLimit": "200Gi"}]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert not any(name.startswith(("CAI_VLLM", "CAI_GPUS")) for name in env)  # the layout is the payload's
    for step, _, container, k8s in each(by_step, set(STEP_NAMES) - set(GENERATION_STEPS)):
        assert "accelerator" not in container.get("resources", {}), step
        assert "nodeSelector" not in k8s and "tolerations" not in k8s and "emptyDirMounts" not in k8s, step


def test_parallel_layout_reaches_the_pods(tmp_path):
    import json

    _, _, out, docs = _compile(tmp_path, ["vllm.gpus=4", "vllm.tensor_parallel_size=2", "vllm.max_model_len=4096"])
    params = docs[0]["root"]["inputDefinitions"]["parameters"]
    payloads = {name[:-len("_config")]: json.loads(p["defaultValue"]) for name, p in params.items()
                if name.endswith("_config")}
    for step in ("revise", "pairs", "gate", "evaluate"):  # the generation steps read the vllm section
        assert payloads[step]["vllm"]["tensor_parallel_size"] == 2 and payloads[step]["vllm"]["max_model_len"] == 4096
    assert not any("vllm" in payloads[step] for step in payloads if step not in ("revise", "pairs", "gate", "evaluate"))
    for step, _, container, _k8s in each(tasks_by_step(docs), GENERATION_STEPS):
        assert container["resources"]["accelerator"]["resourceCount"] == "4", step  # the pod's GPUs: vllm.gpus


def _secret_env(k8s) -> dict[str, tuple[str, str]]:
    return {m["envVar"]: (s["secretName"], m["secretKey"]) for s in k8s.get("secretAsEnv", []) for m in s["keyToEnv"]}


def test_secrets_reach_only_the_pods_that_read_them(by_step):
    for step, _, _, k8s in each(by_step):
        env = _secret_env(k8s)
        assert env["AWS_ACCESS_KEY_ID"] == ("cai-s3", "access-key-id"), step
        assert env["AWS_SECRET_ACCESS_KEY"] == ("cai-s3", "secret-access-key"), step
        assert ("OPENAI_API_KEY" in env) == (step in ("clean_revisions", "clean_pairs", "judge", "evaluate")), step
        # the model loaders, and the prepare steps (an hf: prompts source may be gated)
        assert ("HF_TOKEN" in env) == (step in ("prepare_prompts", "prepare_eval", "revise", "sft", "pairs", "dpo",
                                                "gate", "evaluate")), step
        assert all("optional" not in s for s in k8s["secretAsEnv"])  # absent = required; KFP < 2.15 refuses the field


def test_no_secret_value_is_in_the_yaml(compiled):
    text = compiled[2].read_text()
    assert not re.search(r"sk-[A-Za-z0-9]{8,}|AKIA[0-9A-Z]{16}|hf_[A-Za-z0-9]{20,}", text)


def test_labels_for_kubectl(compiled, by_step):
    # No cai/run-id: a label cannot take a run-time value, and the package names no run (the PyTorchJobs,
    # created at run time, carry it).
    for step, _, _, k8s in each(by_step):
        assert k8s["podMetadata"]["labels"] == {"app": "cai", "cai/stage": step}


def test_retries_timeouts_and_caching(compiled, by_step):
    c = compiled[0].cluster
    for step, task, _, k8s in each(by_step):
        retry = task.get("retryPolicy")
        if step in c.retry_steps:
            assert retry == {"maxRetryCount": 2, "backoffDuration": "60s", "backoffFactor": 2.0,
                             "backoffMaxDuration": "3600s"}, step
        else:
            assert retry is None, step
        assert int(k8s["activeDeadlineSeconds"]) == c.timeout_for(step)
        caching = task.get("cachingOptions", {})
        assert bool(caching.get("enableCache", False)) == (step not in ("prepare_prompts", "prepare_eval")), step
    assert {"sft", "dpo"}.isdisjoint(c.retry_steps)
    assert int(by_step["sft"][0][2]["activeDeadlineSeconds"]) == 172800


def test_training_launchers_get_what_the_pytorchjob_needs(compiled, by_step):
    cfg = compiled[0]
    for step, _, container, k8s in each(by_step, TRAINING_STEPS):
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["CAI_TRAINER_IMAGE"] == cfg.cluster.image("trainer")
        launched = json.loads(env["CAI_CLUSTER_CONFIG"])
        assert launched["node_selector"] == cfg.cluster.node_selector and launched["shm_size"] == "64Gi"
        assert {f["name"] for f in k8s["fieldPathAsEnv"]} == {"CAI_POD_NAME", "CAI_POD_UID"}
        assert "accelerator" not in container["resources"]  # a small CPU launcher pod


def test_each_step_receives_only_its_own_config(compiled, by_step):
    cfg, _, _, (spec, _) = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    for step, task, _, _ in each(by_step):
        ref = task["inputs"]["parameters"]["config"]["componentInputParameter"].removeprefix("pipelinechannel--")
        assert ref == PARAM_OF_STEP[step], step
        sections = set(json.loads(params[ref]["defaultValue"]))
        assert sections == set(STEPS[step].used(cfg)) <= set(STEPS[step].sections), step
        assert "run_id" not in sections and ("cluster" not in sections or step in TRAINING_STEPS)
        assert params[ref]["defaultValue"] == payload(cfg, step)


def test_changing_one_stage_changes_only_its_own_inputs(tmp_path, compiled):
    before = compiled[3][0]["root"]["inputDefinitions"]["parameters"]
    after = _compile(tmp_path, ["sft.learning_rate=1.0e-5", "cluster.tolerations=[]"]
                     )[3][0]["root"]["inputDefinitions"]["parameters"]
    changed = {k for k in before if before[k].get("defaultValue") != after[k].get("defaultValue")}
    assert changed == {"sft_config"}


def test_the_package_names_no_run(compiled, by_step, tmp_path):
    from kfp import dsl

    from cai_core.runtime.run_root import resolve_run_root, run_id_of

    cfg, result, out, (spec, _) = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert result.run_id == "" and params["run_root"]["defaultValue"] == f"{cfg.output_dir}/{{run_id}}"
    assert "base_model" not in params  # the model comes from each step's config payload (its model section)
    for step, task, container, _ in each(by_step):
        inputs = task["inputs"]["parameters"]
        assert inputs["kfp_run_id"]["runtimeValue"]["constant"] == dsl.PIPELINE_JOB_ID_PLACEHOLDER, step
        assert inputs["run_root"]["componentInputParameter"].removeprefix("pipelinechannel--") == "run_root", step
        assert "CAI_RUN_ID" not in {e["name"] for e in container.get("env", [])}, step
    # the same config compiles to the same bytes: nothing of a run is in them
    assert _compile(tmp_path, name="again.yaml")[2].read_text() == out.read_text()
    # two runs of the one package are two runs
    roots = {resolve_run_root(params["run_root"]["defaultValue"], kfp) for kfp in ("uuid-1", "uuid-2")}
    assert roots == {f"{cfg.output_dir}/uuid-1", f"{cfg.output_dir}/uuid-2"}
    assert run_id_of(f"{cfg.output_dir}/uuid-1") == "uuid-1"


def test_a_fixed_run_id_is_the_run_root_default(tmp_path):
    cfg, result, _, (spec, _) = _compile(tmp_path, ["run_id=resume-7"])
    assert result.run_id == "resume-7"
    assert spec["root"]["inputDefinitions"]["parameters"]["run_root"]["defaultValue"] == f"{cfg.output_dir}/resume-7"


@pytest.mark.parametrize("overrides,needle", [
    (["output_dir=runs"], "output_dir: 'runs' is a local path"),
    (["run_id=-bad-"], "cannot label the run's pods"),
    (["run_id=" + "x" * 64], "cannot label the run's pods"),
    (["cluster.secrets.openai_api_key=null"], "cluster.secrets.openai_api_key: teacher.backend is openai"),
])
def test_compile_preflight(tmp_path, overrides, needle):
    cfg = load_cluster_run_config(None, overrides)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        compile_pipeline(cfg, tmp_path / "p.yaml")
    assert not (tmp_path / "p.yaml").exists()


def test_cli_compile_default_and_overrides(tmp_path):
    runner = CliRunner()
    out = tmp_path / "p.yaml"
    result = runner.invoke(compile_cmd, ["-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "cai-vllm" in result.output and "revise, pairs, " in result.output
    assert len(list(yaml.safe_load_all(out.read_text()))) == 2
    cfgfile = tmp_path / "mine.yaml"
    cfgfile.write_text("cluster:\n  registry: reg.example.com/team\n")
    result = runner.invoke(compile_cmd, ["--config", str(cfgfile), "--set", "cluster.tag=t1", "--run-id", "r1",
                                         "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "reg.example.com/team/cai-core:t1" in text and "defaultValue: s3://cai-runs/runs/r1\n" in text


@pytest.mark.parametrize("args,needle", [
    (["--set", "vllm.tensor_parallel_size=3"], "vllm.tensor_parallel_size"),
    (["--set", "cluster.tensor_parallel_size=8"], "moved to vllm.tensor_parallel_size"),
    (["--set", "cluster.core_image=Not An Image"], "cluster.core_image"),
    (["--set", "cluster.secrets.s3={secret: a, key: b}"], "unknown config key"),
])
def test_cli_compile_bad_input(tmp_path, args, needle):
    out = tmp_path / "p.yaml"
    result = CliRunner().invoke(compile_cmd, args + ["-o", str(out)])
    assert isinstance(result.exception, CaiError) and needle in str(result.exception)
    assert not out.exists()


def test_local_pipeline_is_unchanged_by_the_cluster_layer(tmp_path):
    """build_pipeline without a platform (what `cai run` uses) carries no Kubernetes settings."""
    from kfp import compiler

    from cai_core.config.loading import load_run_config
    from cai_pipelines.cai_pipeline import build_pipeline

    out = tmp_path / "local.yaml"
    compiler.Compiler().compile(build_pipeline(load_run_config(), run_root="runs/x"), str(out))
    docs = list(yaml.safe_load_all(out.read_text()))
    assert len(docs) == 1 and "platforms" not in docs[0]


def normalise(text: str, run_id: str) -> str:
    """Replace what changes without a change to the pipeline: SDK version, cai version, derived run id."""
    text = re.sub(r"sdkVersion: kfp-[0-9A-Za-z.+-]+", "sdkVersion: kfp-<version>", text)
    text = text.replace(f":{cai_core.__version__.replace('+', '-')}\n", ":<cai-version>\n")
    return text.replace(run_id, "<run-id>") if run_id else text


def test_golden(compiled):
    _, result, out, _ = compiled
    actual = normalise(out.read_text(), result.run_id)
    if os.environ.get("CAI_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(actual)
    expected = GOLDEN.read_text() if GOLDEN.exists() else ""
    if actual != expected:
        diff = "".join(list(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                                 "tests/golden/pipeline.yaml", "compiled"))[:80])
        pytest.fail("the compiled pipeline differs from tests/golden/pipeline.yaml; if the change is intended, "
                    "regenerate it with\n    CAI_UPDATE_GOLDEN=1 python -m pytest tests/pipelines/test_compile.py -k golden\n"
                    + diff)


def test_a_run_root_that_names_no_run_needs_the_kfp_run_id():
    from cai_core.errors import StageError
    from cai_core.runtime.run_root import resolve_run_root, run_id_of

    assert resolve_run_root("s3://b/runs/r-1", "uuid-9") == "s3://b/runs/r-1"  # cai submit --run-id r-1
    assert run_id_of("s3://b/runs/r-1/") == "r-1"
    for missing in ("", "{{$.pipeline_job_uuid}}"):  # not given, or not resolved by the backend
        with pytest.raises(StageError, match="got no KFP run id"):
            resolve_run_root("s3://b/runs/{run_id}", missing)


def test_the_result_carries_the_documents_written(compiled):
    _, result, _, docs = compiled
    assert result.documents == docs and len(docs) == 2  # what submit checks is what the file holds
    assert all("optional" not in ref for e in docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
               .values() for ref in e.get("secretAsEnv", []))
