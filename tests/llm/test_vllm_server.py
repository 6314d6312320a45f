"""The vllm generation backend against a fake `vllm` executable (a tiny OpenAI-compatible server).

The fake is a script named `vllm` on PATH: `vllm serve MODEL --host H --port P ...` records
its argv and CUDA_VISIBLE_DEVICES, optionally waits or dies, then serves /health,
/v1/models, /v1/chat/completions and /v1/completions on the port; SIGTERM stops it.
"""
from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from cai_core.errors import CaiError
from cai_core.llm.base import Sampling
from cai_core.llm.vllm_server import (VLLMChatModel, VLLMConfig, VLLMServers, gpu_layout, load_policy_model,
                                      server_args)

FAKE_VLLM = r'''#!{python}
import json, os, signal, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = sys.argv[1:]
assert args[0] == "serve", args
model = args[1]
opts = {{}}
i = 2
while i < len(args):
    if args[i].startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("--"):
        opts[args[i]] = args[i + 1]; i += 2
    else:
        opts[args[i]] = True; i += 1
port = int(opts["--port"])
record = os.environ.get("FAKE_VLLM_RECORD")
if record:
    with open(os.path.join(record, f"{{port}}.json"), "w") as f:
        json.dump({{"argv": sys.argv[1:], "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid(),
                   "files": sorted(os.listdir(model)) if os.path.isdir(model) else None}}, f)
print(f"INFO fake vllm serving {{model}} on port {{port}}", flush=True)
if os.environ.get("FAKE_VLLM_FAIL"):
    print("ERROR CUDA out of memory (fake)", flush=True)
    sys.exit(3)
time.sleep(float(os.environ.get("FAKE_VLLM_DELAY", "0")))
name = opts.get("--served-model-name", model)
served = 0

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def _send(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/health":
            return self._send(200, {{}})
        if self.path == "/v1/models":
            return self._send(200, {{"object": "list", "data": [{{"id": name, "object": "model"}}]}})
        self._send(404, {{"error": {{"message": "not found"}}}})
    def do_POST(self):
        global served
        served += 1
        die = os.environ.get("FAKE_VLLM_DIE_CUDA") == os.environ.get("CUDA_VISIBLE_DEVICES")
        once = os.environ.get("FAKE_VLLM_DIE_ONCE")
        if die and served > int(os.environ.get("FAKE_VLLM_DIE_AFTER", "0")) and not (once and os.path.exists(once)):
            if once:
                open(once, "w").close()
            print("ERROR fake replica crashed", flush=True)
            os._exit(9)
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{{}}")
        if body.get("model") != name:
            return self._send(404, {{"error": {{"message": "model not found", "code": "model_not_found"}}}})
        usage = {{"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}}
        if self.path == "/v1/chat/completions":
            text = f"replica {{port}}: " + body["messages"][-1]["content"]
            choice = {{"index": 0, "message": {{"role": "assistant", "content": text}}, "finish_reason": "stop"}}
            if body.get("logprobs"):
                top = [{{"token": t, "logprob": lp, "bytes": None}} for t, lp in (("B", -0.1), ("A", -2.0), ("C", -3.0))]
                choice["logprobs"] = {{"content": [{{"token": "B", "logprob": -0.1, "bytes": None, "top_logprobs": top}}]}}
            return self._send(200, {{"id": "x", "object": "chat.completion", "created": 0, "model": name,
                                     "choices": [choice], "usage": usage}})
        if self.path == "/v1/completions":
            return self._send(200, {{"id": "x", "object": "text_completion", "created": 0, "model": name,
                                     "choices": [{{"index": 0, "text": f"replica {{port}}: " + body["prompt"],
                                                  "finish_reason": "stop", "logprobs": None}}], "usage": usage}})
        self._send(404, {{"error": {{"message": "not found"}}}})

server = ThreadingHTTPServer(("127.0.0.1", port), H)
signal.signal(signal.SIGTERM, lambda *a: (print("INFO shutting down", flush=True), os._exit(0)))
if os.environ.get("FAKE_VLLM_IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
server.serve_forever()
'''


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "vllm"
    exe.write_text(FAKE_VLLM.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    record = tmp_path / "record"
    record.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(record))
    for var in ("CUDA_VISIBLE_DEVICES", "FAKE_VLLM_FAIL", "FAKE_VLLM_DELAY", "FAKE_VLLM_IGNORE_TERM",
                "FAKE_VLLM_DIE_CUDA", "FAKE_VLLM_DIE_AFTER", "FAKE_VLLM_DIE_ONCE", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    return record


def _records(record: Path) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in record.glob("*.json")), key=lambda r: r["cuda"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_vllm_is_not_imported():
    import importlib

    importlib.import_module("cai_core.llm.vllm_server")
    assert "vllm" not in sys.modules


def test_server_args_default_layout_and_prefix_caching():
    cfg = VLLMConfig()
    assert (cfg.gpus, cfg.tensor_parallel_size, cfg.replicas) == (8, 8, 1)  # the card: one TP=8 server
    args = server_args(cfg, "/models/dpo", 8123, "dpo")
    assert args[:3] == ["vllm", "serve", "/models/dpo"]
    joined = " ".join(args)
    for part in ("--host 127.0.0.1", "--port 8123", "--tensor-parallel-size 8", "--served-model-name dpo",
                 "--enable-prefix-caching", "--max-logprobs 20", "--seed 0"):
        assert part in joined
    assert "--max-model-len" not in args
    custom = VLLMConfig(gpus=8, tensor_parallel_size=1, data_parallel_replicas=8, max_model_len=4096,
                        enable_prefix_caching=False, extra_args=("--enforce-eager",))
    args = server_args(custom, "m", 1, "m")
    assert "--no-enable-prefix-caching" in args and args[-1] == "--enforce-eager"
    assert args[args.index("--max-model-len") + 1] == "4096" and args[args.index("--tensor-parallel-size") + 1] == "1"


def test_gpu_layout_slices_visible_devices():
    assert gpu_layout(VLLMConfig()) == ["0,1,2,3,4,5,6,7"]
    assert gpu_layout(VLLMConfig(tensor_parallel_size=1, data_parallel_replicas=8)) == [str(g) for g in range(8)]
    assert gpu_layout(VLLMConfig(tensor_parallel_size=2, data_parallel_replicas=4)) == ["0,1", "2,3", "4,5", "6,7"]
    cfg = VLLMConfig(gpus=4, tensor_parallel_size=2, data_parallel_replicas=2)
    assert gpu_layout(cfg, "GPU-a,GPU-b,GPU-c,GPU-d") == ["GPU-a,GPU-b", "GPU-c,GPU-d"]
    with pytest.raises(CaiError, match="only 2 visible"):
        gpu_layout(cfg, "0,1")


def test_layout_must_use_every_gpu():
    with pytest.raises(CaiError, match=r"must equal gpus \(8\).*1x8, 2x4, 4x2, 8x1"):
        VLLMConfig(gpus=8, tensor_parallel_size=2, data_parallel_replicas=2)


def test_layout_is_one_setting_and_errors_name_both_keys():
    assert VLLMConfig().replicas == 1 and VLLMConfig(tensor_parallel_size=1).replicas == 8
    assert VLLMConfig(tensor_parallel_size=2).replicas == 4
    with pytest.raises(CaiError, match=r"tensor_parallel_size.*x data_parallel_replicas \(0 = 8/3\)"):
        VLLMConfig(tensor_parallel_size=3)
    with pytest.raises(CaiError, match="stage_dir: must be an absolute path"):
        VLLMConfig(stage_dir="models")


def test_vllm_section_of_the_run_config():
    from cai_core.config.loading import load_cluster_run_config, load_run_config
    from cai_core.errors import ConfigError

    cfg = load_run_config(None, ["vllm.tensor_parallel_size=2", "vllm.max_model_len=4096", "vllm.dtype=bfloat16",
                                 "vllm.gpu_memory_utilization=0.8", "vllm.extra_args=[--enforce-eager]"])
    assert (cfg.vllm.replicas, cfg.vllm.max_model_len, cfg.vllm.extra_args) == (4, 4096, ("--enforce-eager",))
    with pytest.raises(ConfigError, match=r"vllm\.tensor_parallel_sise: unknown config key.*tensor_parallel_size"):
        load_run_config(None, ["vllm.tensor_parallel_sise=2"])
    with pytest.raises(ConfigError, match=r"vllm\.tensor_parallel_size: .*data_parallel_replicas \(2\) must equal"):
        load_run_config(None, ["vllm.tensor_parallel_size=2", "vllm.data_parallel_replicas=2"])
    cluster = load_cluster_run_config(None)
    assert (cluster.vllm.tensor_parallel_size, cluster.vllm.replicas) == (1, 8)
    tp8 = load_cluster_run_config(None, ["vllm.tensor_parallel_size=8"])  # the card's TP=8 pod: one setting
    assert (tp8.vllm.tensor_parallel_size, tp8.vllm.replicas) == (8, 1)
    with pytest.raises(ConfigError, match="cluster.data_parallel_replicas: moved to vllm.data_parallel_replicas"):
        load_cluster_run_config(None, ["cluster.data_parallel_replicas=8"])


def test_replicas_start_on_their_own_gpus_and_ports_and_stop(fake_vllm, capsys):
    cfg = VLLMConfig(gpus=4, tensor_parallel_size=2, data_parallel_replicas=2, startup_timeout_s=30, stop_timeout_s=5)
    with VLLMServers("/models/sft", cfg, served_name="sft") as servers:
        assert len(servers.urls) == 2 and len(set(servers.ports)) == 2
        recs = _records(fake_vllm)
        assert [r["cuda"] for r in recs] == ["0,1", "2,3"]
        for r in recs:
            argv = r["argv"]
            assert argv[:2] == ["serve", "/models/sft"]
            assert argv[argv.index("--tensor-parallel-size") + 1] == "2" and "--enable-prefix-caching" in argv
        assert {int(r["argv"][r["argv"].index("--port") + 1]) for r in recs} == set(servers.ports)
        pids = [r["pid"] for r in recs]
        assert all(_alive(p) for p in pids)
    deadline = time.time() + 10
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "[vllm 0] INFO fake vllm serving /models/sft" in out and "[vllm 1] INFO fake vllm serving" in out
    assert "ready in" in out and "stopped 2 replica(s)" in out


def test_requests_round_robin_over_replicas_in_order(fake_vllm):
    cfg = VLLMConfig(gpus=2, tensor_parallel_size=1, data_parallel_replicas=2, startup_timeout_s=30, stop_timeout_s=5)
    with VLLMChatModel("/models/dpo", cfg, served_name="dpo") as model:
        ports = model.servers.ports
        convs = [[{"role": "user", "content": f"q{i}"}] for i in range(7)]
        out = model.chat(convs, [Sampling(temperature=0.0, max_new_tokens=8, seed=i) for i in range(7)])
        assert out == [f"replica {ports[i % 2]}: q{i}" for i in range(7)]
        done = model.complete(["a", "b", "c"], [Sampling(max_new_tokens=4)] * 3)
        assert done == [f"replica {ports[0]}: a", f"replica {ports[1]}: b", f"replica {ports[0]}: c"]
        lps = model.choice_logprobs(convs[:3], ["A", "B", "C"])
        assert [lp.index(max(lp)) for lp in lps] == [1, 1, 1]
    assert model.servers.procs == []


def test_server_that_dies_fails_with_its_log(fake_vllm, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_FAIL", "1")
    cfg = VLLMConfig(gpus=1, tensor_parallel_size=1, startup_timeout_s=30)
    with pytest.raises(CaiError, match=r"exited with code 3 before it was ready(.|\n)*CUDA out of memory"):
        VLLMServers("m", cfg).start()


def test_health_timeout_stops_the_servers(fake_vllm, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_DELAY", "30")
    cfg = VLLMConfig(gpus=2, tensor_parallel_size=1, data_parallel_replicas=2, startup_timeout_s=1.0, stop_timeout_s=5)
    servers = VLLMServers("m", cfg)
    t0 = time.time()
    with pytest.raises(CaiError, match=r"not healthy after 1s"):
        servers.start()
    assert time.time() - t0 < 28  # the 1 s health timeout fired, not the fake's 30 s start-up delay
    assert servers.procs == []
    for r in _records(fake_vllm):
        deadline = time.time() + 10
        while _alive(r["pid"]) and time.time() < deadline:
            time.sleep(0.05)
        assert not _alive(r["pid"])


def test_stop_kills_a_server_that_ignores_sigterm(fake_vllm, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_IGNORE_TERM", "1")
    cfg = VLLMConfig(gpus=1, tensor_parallel_size=1, startup_timeout_s=30, stop_timeout_s=0.5)
    servers = VLLMServers("m", cfg).start()
    pid = _records(fake_vllm)[0]["pid"]
    servers.stop()
    deadline = time.time() + 10
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_missing_executable_is_a_clear_error(fake_vllm):
    cfg = VLLMConfig(command="vllm-not-installed-here", gpus=1, tensor_parallel_size=1)
    with pytest.raises(CaiError, match="cannot run 'vllm-not-installed-here'.*vllm image"):
        VLLMServers("m", cfg).start()


def test_policy_backend_choice(fake_vllm):
    class ModelCfg:
        backend = "vllm"
        device = "cuda"
        batch_size = 8

    model = load_policy_model("/models/x", ModelCfg(), VLLMConfig(gpus=2, tensor_parallel_size=1))
    assert isinstance(model, VLLMChatModel) and model.cfg.replicas == 2
    assert model.servers.procs == []  # started lazily, on the first request
    assert load_policy_model("/models/x", ModelCfg()).cfg == VLLMConfig()
    ModelCfg.backend = "transformers"
    from cai_core.llm.transformers_backend import TransformersChatModel

    assert isinstance(load_policy_model("org/some-model", ModelCfg()), TransformersChatModel)  # loads lazily


def _chat(model, n):
    convs = [[{"role": "user", "content": f"q{i}"}] for i in range(n)]
    return model.chat(convs, [Sampling(temperature=0.0, max_new_tokens=8, seed=i) for i in range(n)])


def test_dead_replica_is_dropped_and_its_requests_go_to_the_others(fake_vllm, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_VLLM_DIE_CUDA", "1")
    monkeypatch.setenv("FAKE_VLLM_DIE_AFTER", "2")
    cfg = VLLMConfig(gpus=3, tensor_parallel_size=1, startup_timeout_s=30, stop_timeout_s=5, max_restarts=0,
                     request_retries=1)
    with VLLMChatModel("/models/dpo", cfg, served_name="dpo") as model:
        ports = model.servers.ports
        out = _chat(model, 12)
        assert [o.split(": ", 1)[1] for o in out] == [f"q{i}" for i in range(12)]  # every request answered
        assert model.servers.live == [0, 2]
        assert _chat(model, 4) == [f"replica {ports[[0, 2][i % 2]]}: q{i}" for i in range(4)]
    text = "".join(capsys.readouterr())
    assert f"vllm: replica 1 (port {ports[1]}) died with code 9: " in text and "fake replica crashed" in text
    assert "dropping it, 2 replicas left" in text


def test_dead_replica_is_restarted_once(fake_vllm, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("FAKE_VLLM_DIE_CUDA", "0")
    monkeypatch.setenv("FAKE_VLLM_DIE_AFTER", "1")
    monkeypatch.setenv("FAKE_VLLM_DIE_ONCE", str(tmp_path / "died"))
    cfg = VLLMConfig(gpus=2, tensor_parallel_size=1, startup_timeout_s=30, stop_timeout_s=5, request_retries=1)
    with VLLMChatModel("/models/dpo", cfg, served_name="dpo") as model:
        out = _chat(model, 6)
        assert [o.split(": ", 1)[1] for o in out] == [f"q{i}" for i in range(6)]
        assert model.servers.live == [0, 1] and model.servers.restarts == [1, 0]
    text = "".join(capsys.readouterr())
    assert "vllm: replica 0 (port" in text and "died with code 9: " in text and "restarting (1 of 1)" in text
    assert (tmp_path / "died").exists()


def test_all_replicas_dead_fails_the_call(fake_vllm, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_DIE_CUDA", "0")
    cfg = VLLMConfig(gpus=1, tensor_parallel_size=1, startup_timeout_s=30, stop_timeout_s=5, max_restarts=1,
                     request_retries=1)
    with VLLMChatModel("/models/dpo", cfg, served_name="dpo") as model:
        with pytest.raises(CaiError, match="no replica left"):
            _chat(model, 3)


@pytest.mark.s3
@pytest.mark.parametrize("layout", ["own", "step", "plain"])
def test_s3_model_is_staged_before_vllm_serve(fake_vllm, s3_bucket, s3_client, tmp_path, layout, capsys):
    from cai_core import storage

    src = tmp_path / "model"
    src.mkdir()
    (src / "config.json").write_text('{"model_type": "llama"}')
    (src / "model.safetensors").write_bytes(b"\0" * 4096)
    if layout == "own":
        storage.upload_dir(str(src), f"s3://{s3_bucket}/models/sft")
        uri = f"s3://{s3_bucket}/models/sft"
    elif layout == "step":  # a published step: the manifest is the step folder's
        step = tmp_path / "sft"
        (step / "model").mkdir(parents=True)
        for f in src.iterdir():
            (step / "model" / f.name).write_bytes(f.read_bytes())
        (step / "_stage.json").write_text("{}")
        storage.upload_dir(str(step), f"s3://{s3_bucket}/run/sft")
        uri = f"s3://{s3_bucket}/run/sft/model"
    else:  # copied there with `aws s3 sync`: no manifest
        for f in src.iterdir():
            s3_client.put_object(Bucket=s3_bucket, Key=f"plain/m/{f.name}", Body=f.read_bytes())
        uri = f"s3://{s3_bucket}/plain/m"
    stage = tmp_path / "stage"
    cfg = VLLMConfig(gpus=1, tensor_parallel_size=1, startup_timeout_s=30, stop_timeout_s=5, stage_dir=str(stage))
    with VLLMChatModel(uri, cfg, served_name="sft") as model:
        (rec,) = _records(fake_vllm)
        local = rec["argv"][1]
        assert local.startswith(str(stage) + "/") and not local.startswith("s3:")
        assert rec["files"] == ["config.json", "model.safetensors"]  # there before `vllm serve` started
        assert _chat(model, 1) == [f"replica {model.servers.ports[0]}: q0"]
    assert not Path(local).exists()  # removed with the servers
    assert f"vllm: staged {uri}" in "".join(capsys.readouterr())
