"""Generation backend `vllm`: local `vllm serve` processes driven through the OpenAI-compatible client.

On a generation pod (the vllm image, one pod with `vllm.gpus` GPUs) `VLLMChatModel(model, cfg)`
starts, on first use, ``data_parallel_replicas`` servers of ``tensor_parallel_size`` GPUs
each (``tensor_parallel_size x data_parallel_replicas == gpus``; 0 replicas = ``gpus / tensor_parallel_size``,
so the layout is one setting; the default is one server over all 8 GPUs, TP=8; an 8B model is faster as
8 x TP=1, see benchmarks/PLAN.md):

* an ``s3://`` model is first staged to ``<stage_dir>`` (`cai_core.llm.vllm_stage`: the boto3
  transfer manager, progress lines) and the servers read the local copy, removed at `close()`;
* replica r gets its own GPUs (``CUDA_VISIBLE_DEVICES``: the r-th slice of the visible
  GPUs) and its own port on 127.0.0.1, and runs
  ``vllm serve <model> --host 127.0.0.1 --port P --tensor-parallel-size T
  --served-model-name <name> --enable-prefix-caching --gpu-memory-utilization U
  --dtype D --max-logprobs L --seed S [--max-model-len N] [extra_args...]``
  in its own process group;
* every server's output is streamed line by line into this process's log
  (``[vllm r] ...``), the last lines are kept for error messages;
* start-up waits until every ``GET /health`` answers 200, failing with the server's last
  log lines when a process exits first, or when `startup_timeout_s` passes;
* requests go round-robin over the replicas (request i to replica i mod n), each replica
  through its own `OpenAIChatModel` (the shared client: high concurrency, retries), all
  replicas at once;
* a replica that dies while serving is restarted (at most `max_restarts` times) or dropped, with one log
  line (``vllm: replica 2 (port P) died with code C: <last log lines>; restarting (1 of N)`` /
  ``...; dropping it, 3 replicas left``); the requests that failed on it are sent again to the live
  replicas. Only when every replica is gone does the call fail;
* `close()` (or leaving the ``with`` block, or interpreter exit) sends SIGTERM to every
  server's process group, then SIGKILL after `stop_timeout_s`.

`vllm` is never imported here: the servers are separate processes, and the package
exists only in images/vllm. `VLLMConfig` is the run config's `vllm` section, the one place for the
layout and the server options, locally and on the cluster: the cluster's generation pods request
`vllm.gpus` GPUs (pipelines/cluster.py) and their steps read the same section from their payload.
"""
from __future__ import annotations

import atexit
import collections
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from cai_core.config.base import ConfigBase, require
from cai_core.errors import CaiError
from cai_core.llm.base import Message, Sampling
from cai_core.progress import log


@dataclass(frozen=True)
class VLLMConfig(ConfigBase):
    #: Executable providing `vllm serve` (on PATH in the vllm image).
    command: str = "vllm"
    #: GPUs the servers use together (on the cluster: each generation pod's GPU limit);
    #: tensor_parallel_size x data_parallel_replicas must equal it.
    gpus: int = 8
    #: GPUs per server (tensor parallelism). 8 (one server over the pod's 8 GPUs) serves any model that fits
    #: in 8 GPUs; an 8B model is faster as 8 servers of 1 (tensor_parallel_size: 1, see benchmarks/PLAN.md).
    tensor_parallel_size: int = 8
    #: Servers (replicas), each on its own GPUs and port; requests go round-robin over them.
    #: 0 = gpus / tensor_parallel_size (so changing tensor_parallel_size alone changes the layout).
    data_parallel_replicas: int = 0
    #: Where an s3:// model is downloaded before `vllm serve` reads it (on the cluster: an emptyDir of
    #: cluster.generation_stage_size mounted there); the copy is removed when the servers stop.
    stage_dir: str = "/tmp/cai-models"
    #: Restarts of a replica that dies while serving; past them it is dropped and the others carry on.
    max_restarts: int = 1
    #: Retries of one request on its replica (connection errors, 5xx) before it is sent to another replica.
    request_retries: int = 6
    #: Port of replica 0 (replica r uses base_port + r); 0 = free ports picked at start.
    base_port: int = 0
    #: Seconds to wait for every server's /health to answer 200.
    startup_timeout_s: float = 1800.0
    #: Seconds between SIGTERM and SIGKILL when stopping.
    stop_timeout_s: float = 30.0
    #: Automatic prefix caching (shared prompt prefixes: constitution text, few-shot framing, turn 1).
    enable_prefix_caching: bool = True
    #: Share of each GPU's memory vLLM may use.
    gpu_memory_utilization: float = 0.9
    #: Context length the servers allow (0 = the model's own).
    max_model_len: int = 0
    #: Weights' dtype (auto = the checkpoint's).
    dtype: str = "auto"
    #: Most top log-probabilities one request may ask for (judging needs up to 20).
    max_logprobs: int = 20
    #: Requests in flight per replica.
    max_concurrency: int = 256
    #: Seconds before one request times out.
    request_timeout_s: float = 600.0
    #: Server seed (each request also carries its own seed).
    seed: int = 0
    #: More arguments for `vllm serve`, e.g. ["--enforce-eager"].
    extra_args: tuple[str, ...] = ()

    def validate(self) -> None:
        require(bool(self.command.strip()), "command", "must not be empty")
        for name in ("gpus", "tensor_parallel_size"):
            require(getattr(self, name) >= 1, name, "must be >= 1")
        require(self.data_parallel_replicas >= 0, "data_parallel_replicas",
                "must be >= 0 (0 = gpus / tensor_parallel_size)")
        layouts = ", ".join(f"{t}x{self.gpus // t}" for t in range(1, self.gpus + 1) if self.gpus % t == 0)
        replicas = self.data_parallel_replicas or f"0 = {self.gpus}/{self.tensor_parallel_size}"
        require(self.tensor_parallel_size * self.replicas == self.gpus, "tensor_parallel_size",
                f"tensor_parallel_size ({self.tensor_parallel_size}) x data_parallel_replicas "
                f"({replicas}) must equal gpus ({self.gpus}); layouts TP x replicas that use "
                f"all {self.gpus}: {layouts}")
        require(self.stage_dir.startswith("/"), "stage_dir", f"must be an absolute path, got {self.stage_dir!r}")
        require(0 <= self.max_restarts <= 100, "max_restarts", "must be between 0 and 100")
        require(0 <= self.request_retries <= 100, "request_retries", "must be between 0 and 100")
        require(0 <= self.base_port <= 65535 - self.replicas, "base_port", "must be a free port range")
        require(self.startup_timeout_s > 0, "startup_timeout_s", "must be > 0")
        require(self.stop_timeout_s >= 0, "stop_timeout_s", "must be >= 0")
        require(0 < self.gpu_memory_utilization <= 1, "gpu_memory_utilization", "must be in (0, 1]")
        require(self.max_model_len >= 0, "max_model_len", "must be >= 0")
        require(self.max_logprobs >= 0, "max_logprobs", "must be >= 0")
        require(1 <= self.max_concurrency <= 4096, "max_concurrency", "must be in [1, 4096]")
        require(self.request_timeout_s > 0, "request_timeout_s", "must be > 0")

    @property
    def replicas(self) -> int:
        """Servers started: data_parallel_replicas, or gpus / tensor_parallel_size when it is 0."""
        return self.data_parallel_replicas or max(1, self.gpus // self.tensor_parallel_size)


def server_args(cfg: VLLMConfig, model: str, port: int, served_name: str) -> list[str]:
    """The `vllm serve` command line of one replica."""
    args = [cfg.command, "serve", model, "--host", "127.0.0.1", "--port", str(port),
            "--tensor-parallel-size", str(cfg.tensor_parallel_size), "--served-model-name", served_name,
            "--enable-prefix-caching" if cfg.enable_prefix_caching else "--no-enable-prefix-caching",
            "--gpu-memory-utilization", f"{cfg.gpu_memory_utilization:g}", "--dtype", cfg.dtype,
            "--max-logprobs", str(cfg.max_logprobs), "--seed", str(cfg.seed)]
    if cfg.max_model_len:
        args += ["--max-model-len", str(cfg.max_model_len)]
    return args + list(cfg.extra_args)


def gpu_layout(cfg: VLLMConfig, visible: str | None = None) -> list[str]:
    """CUDA_VISIBLE_DEVICES of each replica: consecutive slices of the visible GPUs (default 0..gpus-1)."""
    devices = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(g) for g in range(cfg.gpus)]
    if len(devices) < cfg.gpus:
        raise CaiError(f"vllm: {cfg.gpus} GPUs configured but only {len(devices)} visible "
                       f"(CUDA_VISIBLE_DEVICES={visible!r})")
    t = cfg.tensor_parallel_size
    return [",".join(devices[r * t:(r + 1) * t]) for r in range(cfg.replicas)]


def free_ports(n: int) -> list[int]:
    """`n` distinct free TCP ports on 127.0.0.1 (held together while picked, so they differ; free on return)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _healthy(port: int, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class VLLMServers:
    """The replicas of one model: start (and wait for /health), restart or drop a dead one, stop."""

    def __init__(self, model: str, cfg: VLLMConfig | None = None, served_name: str | None = None,
                 echo: Callable[[str], None] | None = None, env: dict | None = None):
        self.model = model
        self.cfg = cfg or VLLMConfig()
        self.served_name = served_name or model
        self.echo = echo or _echo
        self.env = dict(os.environ if env is None else env)
        self.procs: list[subprocess.Popen] = []
        self.ports: list[int] = []
        self.commands: list[list[str]] = []
        self.devices: list[str] = []
        self.tails: list[collections.deque] = []
        self._threads: list[threading.Thread] = []
        #: Replicas still serving (a dropped one leaves), and the restarts each has had.
        self.live: list[int] = []
        self.restarts: list[int] = []
        #: The local copy of an s3:// model (None: the servers read `model` itself).
        self.staged: Any = None
        self._lock = threading.Lock()

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}/v1" for p in self.ports]

    @property
    def local_model(self) -> str:
        """What `vllm serve` reads: the staged copy of an s3:// model, else `model`."""
        return str(self.staged) if self.staged is not None else self.model

    def start(self) -> "VLLMServers":
        if self.procs:
            return self
        cfg = self.cfg
        n = cfg.replicas
        self.devices = gpu_layout(cfg, self.env.get("CUDA_VISIBLE_DEVICES"))
        atexit.register(self.stop)
        t0 = time.monotonic()
        try:
            from cai_core import storage

            if storage.is_remote(self.model) and self.staged is None:
                from cai_core.llm.vllm_stage import stage_model

                self.staged = stage_model(self.model, cfg.stage_dir)
            self.ports = [cfg.base_port + r for r in range(n)] if cfg.base_port else free_ports(n)
            self.procs, self.commands, self.tails = [None] * n, [[]] * n, [collections.deque()] * n  # type: ignore
            for r in range(n):
                self._spawn(r)
            self.live, self.restarts = list(range(n)), [0] * n
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        log(f"vllm: {n} replica(s) of {self.model} ready in {time.monotonic() - t0:.1f}s "
            f"(TP={cfg.tensor_parallel_size}, ports {', '.join(map(str, self.ports))})")
        return self

    def _spawn(self, r: int) -> None:
        cfg = self.cfg
        cmd = server_args(cfg, self.local_model, self.ports[r], self.served_name)
        env = {**self.env, "CUDA_VISIBLE_DEVICES": self.devices[r]}
        log(f"vllm: starting replica {r} on GPUs {self.devices[r]}, port {self.ports[r]}: {' '.join(cmd)}")
        try:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            raise CaiError(f"vllm: cannot run {cfg.command!r} ({exc.strerror}); the vllm backend needs the "
                           "vllm image (images/vllm) or `vllm` on PATH") from None
        tail: collections.deque = collections.deque(maxlen=40)
        self.procs[r], self.commands[r], self.tails[r] = proc, cmd, tail
        thread = threading.Thread(target=self._pump, args=(r, proc, tail), daemon=True, name=f"vllm-log-{r}")
        thread.start()
        self._threads.append(thread)

    def exit_code(self, r: int, wait_s: float = 0.0) -> int | None:
        """Replica r's exit code, None while it runs (waiting up to `wait_s` for one that is going down)."""
        proc = self.procs[r] if r < len(self.procs) else None
        if proc is None:
            return None
        try:
            return proc.wait(wait_s) if wait_s > 0 else proc.poll()
        except subprocess.TimeoutExpired:
            return None

    def replace(self, r: int, code: int) -> bool:
        """Replica r died with `code`: restart it (True) or drop it (False); CaiError when none is left."""
        with self._lock:
            if r not in self.live:
                return False
            time.sleep(0.1)  # let the log pump read the last lines
            lines = [ln for ln in list(self.tails[r])[-3:] if ln.strip()]
            died = (f"vllm: replica {r} (port {self.ports[r]}) died with code {code}: "
                    f"{' | '.join(lines) or '(no output)'}")
            if self.restarts[r] < self.cfg.max_restarts:
                self.restarts[r] += 1
                log(f"{died}; restarting ({self.restarts[r]} of {self.cfg.max_restarts})")
                try:
                    _signal_group(self.procs[r], signal.SIGKILL, quiet=True)  # workers the server left behind
                    self._spawn(r)
                    self._wait_ready(time.monotonic(), only=[r])
                    return True
                except CaiError as exc:
                    died, code = f"vllm: replica {r} (port {self.ports[r]}) did not come back: {exc}", -1
            self.live.remove(r)
            if not self.live:
                raise CaiError(f"{died}; no replica left (all {len(self.procs)} died), the step fails")
            log(f"{died}; dropping it, {len(self.live)} replica{'s' if len(self.live) != 1 else ''} left")
            return False

    def _pump(self, r: int, proc: subprocess.Popen, tail: collections.deque) -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            tail.append(line)
            self.echo(f"[vllm {r}] {line}")
        proc.stdout.close()

    def _wait_ready(self, t0: float, only: Sequence[int] | None = None) -> None:
        pending = set(range(len(self.procs)) if only is None else only)
        delay = 0.2
        while pending:
            for r in sorted(pending):
                code = self.procs[r].poll()
                if code is not None:
                    time.sleep(0.1)  # let the log pump read the last lines
                    raise CaiError(f"vllm: replica {r} (port {self.ports[r]}) exited with code {code} before it was "
                                   f"ready; its last log lines:\n" + self._tail(r))
                if _healthy(self.ports[r]):
                    pending.discard(r)
            if not pending:
                return
            if time.monotonic() - t0 > self.cfg.startup_timeout_s:
                raise CaiError(f"vllm: replica(s) {sorted(pending)} not healthy after {self.cfg.startup_timeout_s:g}s "
                               f"(GET /health); last log lines of replica {min(pending)}:\n" + self._tail(min(pending)))
            time.sleep(delay)
            delay = min(2.0, delay * 1.5)

    def _tail(self, r: int) -> str:
        lines = list(self.tails[r]) if r < len(self.tails) else []
        return "\n".join(lines[-15:]) or "(no output)"

    def stop(self) -> None:
        """SIGTERM every server's process group, SIGKILL what is left after stop_timeout_s."""
        procs, self.procs = [p for p in self.procs if p is not None], []
        self.live = []
        for proc in procs:
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + self.cfg.stop_timeout_s
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(10)
            else:
                _signal_group(proc, signal.SIGKILL, quiet=True)  # workers the server left behind
        for thread in self._threads:
            thread.join(5)
        self._threads = []
        if procs:
            log(f"vllm: stopped {len(procs)} replica(s) of {self.model}")
        if self.staged is not None:
            from cai_core.llm.vllm_stage import unstage

            unstage(self.staged)
            self.staged = None
        try:
            atexit.unregister(self.stop)
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> "VLLMServers":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _signal_group(proc: subprocess.Popen, sig: int, quiet: bool = False) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session: the group is the server and its workers
    except (ProcessLookupError, PermissionError):
        if not quiet and proc.poll() is None:
            proc.send_signal(sig)


def _echo(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class VLLMChatModel:
    """`ChatModel` over local vLLM servers; started on first use, stopped by `close()`."""

    remote = True  # stages send whole tasks at once: the servers batch continuously

    def __init__(self, model: str, cfg: VLLMConfig | None = None, *, served_name: str | None = None,
                 client_factory: Callable[[str, str, VLLMConfig], Any] | None = None, env: dict | None = None):
        self.model = model
        self.cfg = cfg or VLLMConfig()
        self.name = served_name or model
        self.servers = VLLMServers(model, self.cfg, served_name=self.name, env=env)
        self._client_factory = client_factory or _openai_client
        self.clients: list[Any] = []

    def start(self) -> "VLLMChatModel":
        if not self.clients:
            self.servers.start()
            self.clients = [self._client_factory(self.name, url, self.cfg) for url in self.servers.urls]
        return self

    def _spread(self, method: str, items: Sequence, per_item: Sequence | None, *args: Any) -> list:
        """Request i to live replica i mod n, all replicas concurrently; results in request order.

        A replica that died during the call is restarted or dropped (`VLLMServers.replace`), and the requests
        that failed on it (an exception, or a failed reply) are spread again over the live replicas.
        """
        self.start()
        results: list[Any] = [None] * len(items)
        pending = list(range(len(items)))
        while pending:
            live = list(self.servers.live)
            shares = {r: pending[k::len(live)] for k, r in enumerate(live)}
            outcomes: dict[int, tuple[list | None, BaseException | None]] = {}

            def work(r: int) -> None:
                idx = shares[r]
                try:
                    part = [items[i] for i in idx]
                    extra = ([per_item[i] for i in idx],) if per_item is not None else ()
                    outcomes[r] = (list(getattr(self.clients[r], method)(part, *extra, *args)), None)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                    outcomes[r] = (None, exc)

            busy = [r for r in live if shares[r]]
            if len(busy) == 1:
                work(busy[0])
            else:
                threads = [threading.Thread(target=work, args=(r,), name=f"vllm-client-{r}") for r in busy]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            again: list[int] = []
            for r in busy:
                values, exc = outcomes[r]
                failed = [j for j, v in enumerate(values or []) if getattr(v, "failure", None) is not None]
                code = self.servers.exit_code(r, wait_s=2.0 if exc is not None or failed else 0.0)
                if code is None or (exc is None and not failed):
                    if exc is not None:
                        raise exc
                    for i, value in zip(shares[r], values):  # type: ignore[arg-type]
                        results[i] = value
                    continue
                restarted = self.servers.replace(r, code)  # CaiError when no replica is left
                if restarted:
                    self.clients[r] = self._client_factory(self.name, self.servers.urls[r], self.cfg)
                retry = set(range(len(shares[r]))) if exc is not None else set(failed)
                for j, i in enumerate(shares[r]):
                    if j in retry:
                        again.append(i)
                    else:
                        results[i] = values[j]  # type: ignore[index]
            pending = sorted(again)
        return results

    def chat(self, conversations: Sequence[Sequence[Message]], sampling: Sequence[Sampling]) -> list[str]:
        if len(conversations) != len(sampling):
            raise ValueError("one Sampling per conversation")
        return self._spread("chat", conversations, sampling)

    def complete(self, prompts: Sequence[str], sampling: Sequence[Sampling]) -> list[str]:
        if len(prompts) != len(sampling):
            raise ValueError("one Sampling per prompt")
        return self._spread("complete", prompts, sampling)

    def choice_logprobs(self, conversations: Sequence[Sequence[Message]], choices: Sequence[str]) -> list[list[float]]:
        return self._spread("choice_logprobs", conversations, None, list(choices))

    def close(self) -> None:
        for client in self.clients:
            close = getattr(client, "close", None)
            if callable(close):
                close()
        self.clients = []
        self.servers.stop()

    def __enter__(self) -> "VLLMChatModel":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _openai_client(name: str, base_url: str, cfg: VLLMConfig) -> Any:
    from cai_core.llm.openai_backend import OpenAIChatModel

    return OpenAIChatModel(name, base_url=base_url, api_key="EMPTY", timeout_s=cfg.request_timeout_s,
                           max_concurrency=cfg.max_concurrency, max_retries=cfg.request_retries)


def load_policy_model(name_or_path: str, model_cfg: Any = None, vllm_cfg: VLLMConfig | None = None):
    """The policy model for `model_cfg.backend`: transformers in process (default) or vLLM servers.

    `vllm_cfg` is the run config's `vllm` section (the step's payload carries it); None: its defaults.
    An s3:// `name_or_path` is staged to `vllm_cfg.stage_dir`: when the servers start, or (transformers) here.
    """
    backend = getattr(model_cfg, "backend", "transformers")
    if backend == "vllm":
        from cai_core.models.registry import is_embedded, resolve_model

        path = resolve_model(name_or_path) if is_embedded(name_or_path) else name_or_path
        return VLLMChatModel(path, vllm_cfg if vllm_cfg is not None else VLLMConfig())
    from cai_core import storage
    from cai_core.llm import load_policy

    if storage.is_remote(name_or_path):  # weights a training job wrote (a model.json reference): staged first
        from cai_core.llm.vllm_stage import stage_model

        name_or_path = str(stage_model(name_or_path, (vllm_cfg or VLLMConfig()).stage_dir))
    return load_policy(name_or_path, getattr(model_cfg, "device", "cpu"), getattr(model_cfg, "batch_size", 16))


__all__ = ["VLLMChatModel", "VLLMConfig", "VLLMServers", "gpu_layout", "load_policy_model", "server_args"]
