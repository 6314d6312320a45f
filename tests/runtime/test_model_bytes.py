"""Bytes moved per run for a simulated 1 GB model, against SeaweedFS: each model is written once.

sft then dpo run through `engine.execute` the way their KFP components call it, each training through a
PyTorchJob (the fake API server; its `on_success` hook is the job's rank 0 and uploads the trained weights).
What the launcher steps move is counted on the boto3 client (request bodies sent, GetObject bodies received),
apart from what the simulated job itself writes. A generation step's staging (`vllm_stage.stage_model`, what a
gate or pairs pod does before `vllm serve`) reads the weights once, where they are used.

CAI_TEST_MODEL_BYTES sets the simulated model's size (default 1 GiB).
"""
from __future__ import annotations

import functools
import itertools
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from cai_core import records, storage
from cai_core.config.run import RunConfig
from cai_core.llm import vllm_stage
from cai_core.runtime import artifacts, model_ref
from cai_core.runtime.engine import execute, payload
from cai_core.storage import s3 as s3_storage
from tests.fake_k8s import FakeK8s

MODEL_BYTES = int(os.environ.get("CAI_TEST_MODEL_BYTES", str(1 << 30)))
SMALL = 1 << 20  # what a launcher step may move: data, logs, metrics, the reference (far below one model)

pytestmark = pytest.mark.s3


@pytest.fixture
def traffic(monkeypatch):
    """Counter of bytes by (phase, 'sent'|'received'); set `phase[0]` to attribute what follows."""
    counts: Counter = Counter()
    phase = ["launcher"]
    original = s3_storage._make_client.__wrapped__

    def on_send(request, **_):
        if request.method in ("PUT", "POST"):
            counts[(phase[0], "sent")] += int(request.headers.get("Content-Length") or 0)

    def on_get(parsed, **_):
        counts[(phase[0], "received")] += int(parsed.get("ContentLength") or 0)

    @functools.lru_cache(maxsize=16)
    def counted(cfg, endpoint, env):
        client = original(cfg, endpoint, env)
        client.meta.events.register("before-send.s3", on_send)
        client.meta.events.register("after-call.s3.GetObject", on_get)
        return client

    monkeypatch.setattr(s3_storage, "_make_client", counted)
    yield counts, phase


def _write_model(directory: Path, size: int) -> None:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text('{"model_type": "llama"}')
    block = bytes(range(256)) * 4096  # 1 MiB
    with open(directory / "model.safetensors", "wb") as fh:
        left = size
        while left > 0:
            fh.write(block[:min(left, len(block))])
            left -= len(block)


class Cluster:
    """The fake API server whose jobs' rank 0 uploads a trained model of `model_bytes` (sync.publish_final's
    layout: model/, train_log.jsonl, result.json under <out>/final), and the run's config and input data."""

    def __init__(self, bucket: str, tmp_path: Path, phase: list[str]):
        self.fake = FakeK8s(step_s=0.1).start()
        self.tmp, self.phase, self.jobs, self.model_bytes = tmp_path, phase, [], MODEL_BYTES
        self.fake.on_success.append(self.rank_zero)
        self.run_root = f"s3://{bucket}/runs/bytes"
        self.cfg = RunConfig.from_dict({"output_dir": f"s3://{bucket}/runs", "train": {
            "launcher": "pytorchjob", "poll_interval_s": 0.2, "namespace": "kubeflow"}})
        self.data = tmp_path / "clean_revisions"
        records.write_jsonl(self.data / artifacts.SFT_ROWS, [{"id": "a", "prompt": "p", "response": "r"}])
        self.outs = itertools.count()

    def rank_zero(self, job):
        self.phase[0] = "job"
        final = self.tmp / f"job{len(self.jobs)}" / "final"
        self.jobs.append(job)
        _write_model(final / artifacts.MODEL_DIR, self.model_bytes)
        records.write_jsonl(final / artifacts.TRAIN_LOG, [{"step": 1, "loss": 1.0}])
        outputs = {"model": "model", "train_log": "train_log.jsonl"}
        (final / "result.json").write_text(json.dumps({"outputs": outputs, "metrics": {"steps": 1.0}, "details": {}}))
        storage.upload_dir(str(final), storage.join(job["metadata"]["annotations"]["cai/out"], "final"))
        self.phase[0] = "launcher"

    def step(self, name: str, inputs: dict) -> tuple[dict, Path]:
        """One step as its component runs it; each call a fresh output artifact, as in KFP."""
        out = self.tmp / "kfp" / f"{name}-{next(self.outs)}"
        stage = execute(name, payload(self.cfg, name), {k: str(v) for k, v in inputs.items()}, str(out), self.run_root)
        return stage, out


@pytest.fixture
def cluster(s3_bucket, tmp_path, monkeypatch, traffic):
    for var in ("KUBERNETES_SERVICE_HOST", "CAI_CLUSTER_CONFIG", "CAI_RUN_ID", "CAI_POD_NAME"):
        monkeypatch.delenv(var, raising=False)
    made = Cluster(s3_bucket, tmp_path, traffic[1])
    monkeypatch.setenv("KUBECONFIG", made.fake.kubeconfig(tmp_path / "kubeconfig"))
    yield made
    made.fake.stop()


def test_each_model_is_written_once_and_read_where_it_is_used(cluster, tmp_path, traffic):
    counts, _ = traffic
    jobs, run_root, step = cluster.jobs, cluster.run_root, cluster.step
    prefs = tmp_path / "judge"
    records.write_jsonl(prefs / artifacts.PREFERENCES, [{"id": "a", "prompt": "p", "chosen": "x", "rejected": "y",
                                                          "principle": "q", "confidence": 1.0}])
    sft_stage, sft_out = step("sft", {"data": cluster.data})
    # KFP hands the dpo pod a copy of the sft artifact (through its pipeline root): that copy is small
    dpo_stage, dpo_out = step("dpo", {"preferences": prefs, "model": sft_out})
    artifact_bytes = sum(f.stat().st_size for out in (sft_out, dpo_out) for f in out.rglob("*") if f.is_file())

    assert len(jobs) == 2
    assert counts[("job", "sent")] >= 2 * MODEL_BYTES  # the two trained models, written by their jobs
    assert counts[("job", "sent")] < 2 * MODEL_BYTES + SMALL  # ... once each
    assert counts[("launcher", "sent")] < SMALL, counts  # no launcher step uploads weights
    assert counts[("launcher", "received")] < SMALL, counts  # ... or downloads them
    assert artifact_bytes < SMALL  # nor do KFP's artifacts carry them
    sft_weights = model_ref.location(sft_out)
    assert jobs[1]["metadata"]["annotations"]["cai/model"] == sft_weights  # dpo reads them in place
    assert sft_weights == f"{run_root}/_train/sft/{sft_stage['fingerprint']}/final/model"
    assert json.loads((sft_out / artifacts.MODEL_REF).read_text())["bytes"] > MODEL_BYTES
    published = storage.list_files(f"{run_root}/dpo")
    assert f"{run_root}/dpo/{artifacts.MODEL_REF}" in published
    assert not any("/dpo/model/" in uri for uri in published)

    # a generation pod stages the weights it serves: one read of one model
    before = counts[("launcher", "received")]
    staged = vllm_stage.stage_model(model_ref.location(dpo_out), str(tmp_path / "stage"))
    assert (staged / "model.safetensors").stat().st_size == MODEL_BYTES
    moved = counts[("launcher", "received")] - before
    assert MODEL_BYTES <= moved < MODEL_BYTES + SMALL
    vllm_stage.unstage(staged)

    # a rerun reuses both steps: no job, no weights moved
    counts.clear()
    assert step("sft", {"data": cluster.data})[0]["fingerprint"] == sft_stage["fingerprint"]
    assert len(jobs) == 2 and counts[("launcher", "received")] < SMALL and counts[("job", "sent")] == 0
    assert dpo_stage["outputs"]["model"] == artifacts.MODEL_REF


def test_a_reference_to_weights_that_are_gone_trains_again(cluster):
    """Reuse checks that the weights a published model.json names still exist (someone pruned _train/)."""
    cluster.model_bytes = 1024
    first, out = cluster.step("sft", {"data": cluster.data})
    weights = model_ref.location(out)
    storage.delete_prefix(weights.rsplit("/", 1)[0])
    with cluster.fake.lock:
        cluster.fake.jobs.clear()  # the finished job is gone too (its ttlSecondsAfterFinished)
    second, _ = cluster.step("sft", {"data": cluster.data})
    assert len(cluster.jobs) == 2 and second["fingerprint"] == first["fingerprint"]
    assert storage.exists(storage.join(weights, "model.safetensors"))
