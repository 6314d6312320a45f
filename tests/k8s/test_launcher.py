"""The PyTorchJob launcher against a fake Kubernetes API server (tests/fake_k8s.py) that the real `kubernetes`
client talks HTTP to; `cai train`; and the training stages' bad-input checks, which all fail before any model
weights are loaded (before any GPU time on the cluster)."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cai_core import storage
from cai_core.cli.commands.train import train_cmd
from cai_core.errors import CaiError, InputError
from cai_core.k8s.config import LauncherConfig
from cai_core.k8s.launcher import (Launcher, TrainingJobCancelled, TrainingJobError, TrainingJobFailed,
                                   TrainingJobTimeout, api_client_from_environment, job_state)
from cai_core.k8s.pytorchjob import JobSpec, build_job
from cai_core.models import tiny
from cai_core.records import write_jsonl
from cai_core.runtime import model_ref
from cai_core.stages import dpo, sft
from cai_core.stages.base import StageResult
from cai_core.training.distributed import Dist
from cai_core.training.launch import run_training_step
from cai_core.training.sync import remote_checkpoints, restore_checkpoint
from tests.fake_k8s import FAIL_MESSAGE, IMAGE_PULL, LOG_LINES, RESTART_LINES, UNSCHEDULABLE, FakeK8s

NS = "kubeflow"


@pytest.fixture
def fake():
    server = FakeK8s(step_s=0.1).start()
    yield server
    server.stop()


def _manifest(run_id="run-1", stage="sft", **changes) -> dict:
    spec = JobSpec(stage=stage, run_id=run_id, namespace=NS, image="ghcr.io/cai-project/cai-trainer:0.1.0",
                   data_uri="s3://b/in.jsonl", model_uri="tiny", out_uri="s3://b/out", config={stage: {}}, **changes)
    return build_job(spec)


def _launcher(fake, lines=None, **kw) -> Launcher:
    kw.setdefault("poll_interval_s", 0.5)
    return Launcher(fake.api_client(), NS, emit=(lines.append if lines is not None else (lambda _: None)), **kw)


def _wait_for(predicate, seconds=10.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


# ----------------------------------------------------------------------------- job states


def test_job_state_reads_the_conditions():
    assert job_state({}).phase == "Pending"
    running = {"status": {"conditions": [{"type": "Created", "status": "True"},
                                         {"type": "Running", "status": "True", "message": "m"}]}}
    assert job_state(running).phase == "Running"
    done = {"status": {"conditions": [{"type": "Created", "status": "True"}, {"type": "Running", "status": "False"},
                                      {"type": "Succeeded", "status": "True"}]}}
    assert job_state(done).done and job_state(done).phase == "Succeeded"
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True", "message": "boom"}]}}
    assert job_state(failed) .message == "boom"


# ----------------------------------------------------------------------------- the launcher


def test_success_streams_the_master_log_once(fake):
    lines: list[str] = []
    launcher = _launcher(fake, lines)
    final = launcher.run(_manifest())
    assert job_state(final).phase == "Succeeded"
    log = [line for line in lines if not line.startswith("[launcher]")]
    assert log == LOG_LINES
    assert any("Running" in e for e in launcher.events) and "Succeeded" in launcher.events[-1]
    assert fake.created == [final["metadata"]["name"]] and not fake.deleted
    watches = [p for m, p in fake.requests if m == "GET" and "watch=true" in p.lower()]
    assert watches and all("fieldSelector=metadata.name" in p for p in watches)
    assert any(p.endswith("/log") or "/log?" in p for _, p in fake.requests)


def test_failure_raises_the_condition_and_termination_message(fake):
    fake.scenario = "fail"
    with pytest.raises(TrainingJobFailed) as err:
        _launcher(fake).run(_manifest())
    message = str(err.value)
    assert "has failed because 1 Master replica(s) failed" in message
    assert f"exit code 1, Error: {FAIL_MESSAGE}" in message
    assert "last lines of the master's log" in message and LOG_LINES[0] in message
    assert err.value.exit_code != 0


def test_hanging_job_times_out_and_is_deleted(fake):
    fake.scenario = "hang"
    manifest = _manifest()
    start = time.monotonic()
    with pytest.raises(TrainingJobTimeout, match="did not finish within 2 s"):
        _launcher(fake, timeout_s=2).run(manifest)
    assert time.monotonic() - start < 60  # the 2 s deadline fired (a hang would run until the job is deleted)
    assert fake.deleted == [manifest["metadata"]["name"]]
    assert ("DELETE", f"/apis/kubeflow.org/v1/namespaces/{NS}/pytorchjobs/{manifest['metadata']['name']}") in \
        fake.requests


@pytest.mark.parametrize("scenario, why", [
    ("unschedulable", f"not scheduled (Unschedulable: {UNSCHEDULABLE})"),
    ("image_pull", f"container pytorch waiting (ImagePullBackOff: {IMAGE_PULL})")])
def test_a_job_that_cannot_start_says_why_at_every_poll(fake, scenario, why):
    fake.scenario = scenario
    lines: list[str] = []
    manifest = _manifest()
    name = manifest["metadata"]["name"]
    with pytest.raises(TrainingJobTimeout):
        _launcher(fake, lines, poll_interval_s=1, timeout_s=4.5).run(manifest)
    said = [line for line in lines if line == f"[launcher] pytorchjob {name}: Created, pod {name}-master-0 {why}"]
    assert len(said) >= 3, lines  # one per poll (1 s, the shortest watch) once the pod exists, not once


def test_restarted_job_is_followed_to_the_end(fake):
    fake.scenario = "restart"
    lines: list[str] = []
    launcher = _launcher(fake, lines)
    launcher.run(_manifest())
    log = [line for line in lines if not line.startswith("[launcher]")]
    assert log == LOG_LINES[:2] + RESTART_LINES  # both containers' logs, no line twice
    phases = [e.split(": ", 1)[1].split(" ")[0] for e in launcher.events if e.startswith("pytorchjob ")]
    assert phases.index("Restarting") < len(phases) - 1 and phases[-1] == "Succeeded"
    assert phases.count("Running") == 2


def test_reattaches_to_the_existing_job_on_409(fake):
    manifest = _manifest()
    fake.add_job(NS, manifest, scenario="succeed")  # a previous launcher pod created it
    lines: list[str] = []
    launcher = _launcher(fake, lines)
    launcher.run(manifest)
    assert fake.created == [manifest["metadata"]["name"]]  # not created twice
    assert any("re-attached" in e for e in launcher.events)
    assert ("POST", f"/apis/kubeflow.org/v1/namespaces/{NS}/pytorchjobs") in fake.requests


def test_a_failed_job_of_the_same_name_is_replaced(fake):
    manifest = _manifest()
    fake.add_job(NS, manifest, scenario="fail")
    assert _wait_for(lambda: job_state(fake.jobs.get((NS, manifest["metadata"]["name"]), {})).phase == "Failed")
    launcher = _launcher(fake)
    launcher.run(manifest)  # the new attempt succeeds (the default scenario)
    name = manifest["metadata"]["name"]
    assert fake.deleted == [name] and fake.created == [name, name]
    assert any("deleting it and starting a new attempt" in e for e in launcher.events)


def test_a_running_job_of_another_config_is_not_touched(fake):
    other = _manifest(nodes=2)  # same run id and stage, so the same name; another spec
    fake.add_job(NS, other, scenario="hang")
    with pytest.raises(CaiError, match="with another config"):
        _launcher(fake).run(_manifest())
    assert not fake.deleted


def test_a_job_deleted_by_someone_else_is_an_error(fake):
    fake.scenario = "hang"
    manifest = _manifest()
    name = manifest["metadata"]["name"]
    threading.Timer(1.0, fake.delete_job, args=(NS, name)).start()
    with pytest.raises(TrainingJobError, match="was deleted before it finished"):
        _launcher(fake).run(manifest)


def test_sigterm_deletes_the_job(fake):
    fake.scenario = "hang"
    manifest = _manifest()
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(1.0, os.kill, args=(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        with pytest.raises(TrainingJobCancelled, match="was deleted"):
            _launcher(fake).run(manifest)
    finally:
        timer.cancel()
    assert fake.deleted == [manifest["metadata"]["name"]]
    assert signal.getsignal(signal.SIGTERM) == before  # our handler is gone again


def test_api_errors_are_clear(fake):
    fake.reject["create"] = (403, "Forbidden")
    with pytest.raises(CaiError, match=r"create pytorchjob .* failed: 403.*RBAC"):
        _launcher(fake).run(_manifest())


def test_client_from_a_kubeconfig(fake, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", fake.kubeconfig(tmp_path / "kubeconfig"))
    launcher = Launcher(api_client_from_environment(), NS)
    assert launcher.get("no-such-job") is None
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(CaiError, match="no Kubernetes credentials"):
        api_client_from_environment()


# ----------------------------------------------------------------------------- cai train --launcher pytorchjob


def test_cli_launches_and_watches(fake, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", fake.kubeconfig(tmp_path / "kubeconfig"))
    args = ["sft", "--launcher", "pytorchjob", "--data", "s3://b/run/in/sft.jsonl", "--out", "s3://b/run/_train/sft",
            "--run-id", "cli-run"]
    result = CliRunner().invoke(train_cmd, args)
    assert result.exit_code == 0, result.output
    assert LOG_LINES[-1] in result.output
    assert json.loads(result.output[result.output.index("{"):])["model"] == "s3://b/run/_train/sft/final/model"
    fake.scenario = "fail"
    result = CliRunner().invoke(train_cmd, args[:-1] + ["cli-run-2"])
    assert result.exit_code != 0 and isinstance(result.exception, TrainingJobFailed)
    assert FAIL_MESSAGE in str(result.exception)


# ----------------------------------------------------------------------------- a pipeline step through a job


def _fake_trainer_output(work_uri: str, tmp: Path, stage: str) -> None:
    """What the job's rank 0 uploads to <work>/final (see cai_core.training.sync.publish_final)."""
    final = tmp / "final"
    (final / "model").mkdir(parents=True)
    (final / "model" / "config.json").write_text('{"model_type": "llama"}')
    write_jsonl(final / "train_log.jsonl", [{"step": 1, "loss": 1.0}])
    (final / "result.json").write_text(json.dumps({"outputs": {"model": "model", "train_log": "train_log.jsonl"},
                                                   "metrics": {"steps": 1.0, "train_loss": 1.0},
                                                   "details": {"resumed_from": None}}))
    storage.upload_dir(str(final), storage.join(work_uri, "final"))


@pytest.mark.s3
def test_pipeline_step_runs_through_a_pytorchjob(fake, s3_bucket, tmp_path, monkeypatch):
    for var in ("CAI_CLUSTER_CONFIG", "CAI_POD_NAME", "CAI_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    run_root = f"s3://{s3_bucket}/runs/r1"
    data = tmp_path / "sft.jsonl"
    write_jsonl(data, [{"id": "a", "prompt": "p", "response": "r"}])
    seen = {}

    def on_success(job):
        seen["job"] = job
        _fake_trainer_output(job["metadata"]["annotations"]["cai/out"], tmp_path / "job", "sft")

    fake.on_success.append(on_success)
    cfgs = {"sft": sft.SFTStageConfig(deepspeed="zero3"),
            "train": LauncherConfig(launcher="pytorchjob", poll_interval_s=0.5, namespace=NS)}
    lines: list[str] = []
    out = tmp_path / "out"
    out.mkdir()
    result = run_training_step("sft", cfgs, data, "tiny", out, run_root, emit=lines.append,
                               api_client=fake.api_client(), fingerprint="fp1")
    assert isinstance(result, StageResult)
    work = f"{run_root}/_train/sft/fp1"
    # the weights stay where the job wrote them: the step's output refers to them, the rest is downloaded
    assert result.outputs["model"] == out / "model.json" and not (out / "model").exists()
    assert model_ref.location(out) == f"{work}/final/model" == result.details["model_uri"]
    assert json.loads((out / "model.json").read_text())["files"] == 1
    assert (out / "train_log.jsonl").exists() and result.outputs["train_log"] == out / "train_log.jsonl"
    assert result.metrics["steps"] == 1.0 and result.details["pytorchjob"] == seen["job"]["metadata"]["name"]
    annotations = seen["job"]["metadata"]["annotations"]
    assert annotations["cai/data"] == f"{work}/input/sft.jsonl"
    assert storage.read_text(annotations["cai/data"]) == data.read_text()  # the step's input went to S3 first
    assert annotations["cai/out"] == work
    assert LOG_LINES[0] in lines


@pytest.mark.s3
def test_dpo_step_trains_from_the_weights_the_sft_job_wrote(fake, s3_bucket, tmp_path, monkeypatch):
    """The SFT artifact refers to the weights on S3: the DPO job reads them there, nothing is copied; a local
    model directory (an SFT trained in process) is uploaded next to the job."""
    monkeypatch.delenv("CAI_CLUSTER_CONFIG", raising=False)
    run_root = f"s3://{s3_bucket}/runs/r2"
    weights = f"{run_root}/_train/sft/fp0/final/model"
    data = tmp_path / "train.jsonl"
    write_jsonl(data, [{"id": "a", "prompt": "p", "chosen": "x", "rejected": "y", "principle": "q",
                        "confidence": 1.0}])
    seen = []
    fake.on_success.append(lambda job: (seen.append(job), _fake_trainer_output(
        job["metadata"]["annotations"]["cai/out"], tmp_path / f"job{len(seen)}", "dpo")))
    cfgs = {"dpo": dpo.DPOStageConfig(), "train": LauncherConfig(launcher="pytorchjob", poll_interval_s=0.5)}
    run_training_step("dpo", cfgs, data, weights, tmp_path / "o1", run_root, api_client=fake.api_client())
    assert seen[0]["metadata"]["annotations"]["cai/model"] == weights
    assert storage.list_files(f"{run_root}/_train/dpo/input") == [f"{run_root}/_train/dpo/input/train.jsonl"]
    local_model = tmp_path / "sft_model"
    local_model.mkdir()
    (local_model / "config.json").write_text("{}")
    cfgs["train"] = LauncherConfig(launcher="pytorchjob", poll_interval_s=0.5, work_uri=f"{run_root}/_train/dpo2")
    run_training_step("dpo", cfgs, data, str(local_model), tmp_path / "o2", run_root,
                      api_client=fake.api_client())
    assert seen[1]["metadata"]["annotations"]["cai/model"] == f"{run_root}/_train/dpo2/input/model"
    assert storage.exists(f"{run_root}/_train/dpo2/input/model/config.json")


@pytest.mark.s3
def test_a_later_preference_round_gets_its_own_job_and_trains_from_the_last_round(fake, s3_bucket, tmp_path,
                                                                                   monkeypatch):
    """dpo_r2 (dpo.iterations: 2) starts from round 1's published DPO model, in its own work location and job."""
    for var in ("CAI_CLUSTER_CONFIG", "CAI_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    run_root = f"s3://{s3_bucket}/runs/r3"
    round_one_weights = f"{run_root}/_train/dpo/fp-r1/final/model"  # what round 1's model.json refers to
    data = tmp_path / "train.jsonl"
    write_jsonl(data, [{"id": "a", "prompt": "p", "chosen": "x", "rejected": "y", "principle": "q",
                        "confidence": 1.0}])
    seen = []
    fake.on_success.append(lambda job: (seen.append(job), _fake_trainer_output(
        job["metadata"]["annotations"]["cai/out"], tmp_path / f"job{len(seen)}", "dpo")))
    cfgs = {"dpo": dpo.DPOStageConfig(), "train": LauncherConfig(launcher="pytorchjob", poll_interval_s=0.5)}
    run_training_step("dpo", cfgs, data, round_one_weights, tmp_path / "o1", run_root,
                      api_client=fake.api_client(), step="dpo_r2")
    run_training_step("dpo", cfgs, data, round_one_weights, tmp_path / "o2", run_root,
                      api_client=fake.api_client())
    round_two, round_one = seen
    assert round_two["metadata"]["annotations"]["cai/model"] == round_one_weights
    assert round_two["metadata"]["annotations"]["cai/out"] == f"{run_root}/_train/dpo_r2"
    assert round_one["metadata"]["annotations"]["cai/out"] == f"{run_root}/_train/dpo"
    assert round_two["metadata"]["name"] != round_one["metadata"]["name"]
    assert round_two["metadata"]["labels"]["cai/stage"] == "dpo_r2"
    master = round_two["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert {"name": "CAI_STEP", "value": "dpo_r2"} in master["env"]
    assert " train dpo " in " ".join(master["command"] + master.get("args", []))  # the stage it trains is dpo


def test_pytorchjob_step_needs_remote_storage(tmp_path):
    cfgs = {"sft": sft.SFTStageConfig(), "train": LauncherConfig(launcher="pytorchjob")}
    with pytest.raises(CaiError, match="is local; set output_dir"):
        run_training_step("sft", cfgs, tmp_path / "d.jsonl", "tiny", tmp_path / "o", str(tmp_path / "runs"))


# ----------------------------------------------------------------------------- checkpoints on storage


def test_restore_picks_the_latest_complete_checkpoint(tmp_path):
    remote = tmp_path / "remote"  # storage treats local paths like S3 prefixes
    for step, complete in ((2, True), (4, True), (6, False)):
        part = tmp_path / f"ck{step}"
        part.mkdir()
        (part / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        (part / "cai_train_log.jsonl").write_text(json.dumps({"step": step}) + "\n")
        storage.upload_dir(str(part), str(remote / "checkpoints" / f"checkpoint-{step}" / "node-0"))
        if complete:
            storage.write_text(str(remote / "checkpoints" / f"checkpoint-{step}" / "_COMPLETE.json"),
                               json.dumps({"step": step, "nodes": 1, "world_size": 8}))
    assert [s for s, _ in remote_checkpoints(str(remote))] == [2, 4]
    local, work_out = tmp_path / "work" / "checkpoints", tmp_path / "work"
    step = restore_checkpoint(str(remote), local, work_out, Dist(world=8, local_world=8))
    assert step == 4 and json.loads((local / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4
    assert (work_out / "train_log.jsonl").read_text().startswith('{"step": 4')
    with pytest.raises(CaiError, match="written by 8 ranks, this job has 16"):
        restore_checkpoint(str(remote), tmp_path / "w2", tmp_path / "w2", Dist(world=16, local_world=8, node=1))


# ----------------------------------------------------------------------------- bad input: before any weights


@pytest.fixture
def no_weights(monkeypatch):
    """Fail the test if a stage loads model weights (every bad input must be caught before)."""
    def refuse(*args, **kwargs):
        raise AssertionError("model weights were loaded before the bad input was refused")

    monkeypatch.setattr(sft, "load_model", refuse)
    monkeypatch.setattr(dpo, "load_model", refuse)


def _rows(path: Path, long_text: str = "") -> Path:
    write_jsonl(path, [{"id": "a", "prompt": "Hi", "response": "Hello there."},
                       {"id": "b", "prompt": "Tell me a story.", "response": long_text or "Once."}])
    return path


def test_rows_longer_than_max_length_are_refused_when_asked(cache, tmp_path, no_weights):
    data = _rows(tmp_path / "sft.jsonl", long_text="word " * 400)
    out = tmp_path / "out"
    with pytest.raises(InputError) as err:
        sft.run(sft.SFTStageConfig(max_length=64, long_rows="error"), data, "tiny", out)
    assert f"{data}:2" in str(err.value) and "longer than max_length=64" in str(err.value)
    assert "1 of 2 rows" in str(err.value) and not out.exists()
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, [{"id": "a", "prompt": "p", "chosen": "x", "rejected": "y " * 300, "principle": "q",
                         "confidence": 1.0}])
    with pytest.raises(InputError, match=rf"{pairs}:1: 1 of 1 pairs are longer than max_length=32"):
        dpo.run(dpo.DPOStageConfig(max_length=32, long_rows="error"), pairs, "tiny", out)


def test_empty_dataset_and_missing_model(cache, tmp_path, no_weights):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        sft.run(sft.SFTStageConfig(), empty, "tiny", tmp_path / "o1")
    data = _rows(tmp_path / "sft.jsonl")
    with pytest.raises(InputError, match="model directory not found"):
        sft.run(sft.SFTStageConfig(), data, str(tmp_path / "no-model"), tmp_path / "o2")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    result = CliRunner().invoke(train_cmd, ["sft", "--data", str(empty), "--out", str(tmp_path / "o3")])
    assert result.exit_code != 0 and isinstance(result.exception, InputError)


def test_checkpoint_of_another_model_is_refused(cache, tmp_path, no_weights):
    data = _rows(tmp_path / "sft.jsonl")
    ckpt = tmp_path / "out" / "checkpoints" / "checkpoint-2"
    ckpt.mkdir(parents=True)
    config = json.loads((tiny.ensure_tiny_model(cache) / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "hidden_size": 4096, "num_hidden_layers": 32}))
    with pytest.raises(InputError) as err:
        sft.run(sft.SFTStageConfig(save_steps=2), data, "tiny", tmp_path / "out")
    assert "written for another model" in str(err.value) and "hidden_size: checkpoint 4096, model 64" in str(err.value)
    assert str(ckpt) in str(err.value)
    # resume: false ignores it
    (ckpt / "config.json").write_text(json.dumps(config))
    shards = ckpt / "global_step2"
    shards.mkdir()
    for rank in range(2):
        (shards / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").write_bytes(b"")
    with pytest.raises(InputError, match="DeepSpeed state of 2 ranks, but this run has 1"):
        sft.run(sft.SFTStageConfig(save_steps=2, deepspeed="zero3"), data, "tiny", tmp_path / "out")


def test_liger_kernels_missing_is_a_clear_error(cache, tmp_path, no_weights):
    import importlib.util

    if importlib.util.find_spec("liger_kernel") is not None:
        pytest.skip("liger-kernel is installed here")
    with pytest.raises(CaiError, match="liger-kernel package is not installed"):
        sft.run(sft.SFTStageConfig(use_liger_kernel=True), _rows(tmp_path / "d.jsonl"), "tiny", tmp_path / "o")


def test_cli_trains_in_process(cache, tmp_path):
    data = _rows(tmp_path / "sft.jsonl")
    result = CliRunner().invoke(train_cmd, ["sft", "--data", str(data), "--out", str(tmp_path / "out"),
                                            "--set", "sft.max_steps=2", "--set", "sft.per_device_batch_size=2"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{\n"):])
    assert summary["metrics"]["steps"] == 2 and Path(summary["outputs"]["model"]).is_dir()
    rows = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert all("tokens_per_s" in r for r in rows)


def test_a_multi_node_job_restarting_more_than_allowed_is_deleted(fake):
    """restartPolicy ExitCode ignores backoffLimit: the launcher counts Restarting transitions itself."""
    fake.scenario = "restart"
    manifest = _manifest(nodes=2, restarts=0)
    assert {r["restartPolicy"] for r in manifest["spec"]["pytorchReplicaSpecs"].values()} == {"ExitCode"}
    launcher = _launcher(fake)
    with pytest.raises(TrainingJobFailed, match=r"restarted 1 time\(s\), more than train.restarts=0 .*deleted"):
        launcher.run(manifest)
    assert _wait_for(lambda: fake.jobs.get((NS, manifest["metadata"]["name"])) is None)


def test_a_multi_node_job_within_its_restarts_is_followed_to_the_end(fake):
    fake.scenario = "restart"
    launcher = _launcher(fake)
    assert launcher.run(_manifest(nodes=2, restarts=1))["status"]["conditions"][-1]["type"] == "Succeeded"
