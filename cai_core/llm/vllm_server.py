"""Generation backend `vllm`: local `vllm serve` processes driven through the OpenAI-compatible client.

On a generation pod (the vllm image, one pod with `gpus` GPUs) `VLLMChatModel(model)`
starts, on first use, ``data_parallel_replicas`` servers of ``tensor_parallel_size`` GPUs
each (``tensor_parallel_size x data_parallel_replicas == gpus``; the default is one
server over all 8 GPUs, the cluster config may choose 8 x TP=1, see benchmarks/PLAN.md):

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
* `close()` (or leaving the ``with`` block, or interpreter exit) sends SIGTERM to every
  server's process group, then SIGKILL after `stop_timeout_s`.

`vllm` is never imported here: the servers are separate processes, and the package
exists only in images/vllm. The layout comes from the run config and, on the cluster,
from the env the platform sets (CAI_GPUS, CAI_VLLM_TENSOR_PARALLEL_SIZE,
CAI_VLLM_DATA_PARALLEL_REPLICAS), see `VLLMConfig.from_env`.
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

ENV_GPUS = "CAI_GPUS"
ENV_TP = "CAI_VLLM_TENSOR_PARALLEL_SIZE"
ENV_DP = "CAI_VLLM_DATA_PARALLEL_REPLICAS"


@dataclass(frozen=True)
class VLLMConfig(ConfigBase):
    #: Executable providing `vllm serve` (on PATH in the vllm image).
    command: str = "vllm"
    #: GPUs the servers use together; tensor_parallel_size x data_parallel_replicas must equal it.
    gpus: int = 8
    #: GPUs per server (tensor parallelism).
    tensor_parallel_size: int = 8
    #: Servers (replicas), each on its own GPUs and port; requests go round-robin over them.
    data_parallel_replicas: int = 1
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
        for name in ("gpus", "tensor_parallel_size", "data_parallel_replicas"):
            require(getattr(self, name) >= 1, name, "must be >= 1")
        layouts = ", ".join(f"{t}x{self.gpus // t}" for t in range(1, self.gpus + 1) if self.gpus % t == 0)
        require(self.tensor_parallel_size * self.data_parallel_replicas == self.gpus, "tensor_parallel_size",
                f"tensor_parallel_size ({self.tensor_parallel_size}) x data_parallel_replicas "
                f"({self.data_parallel_replicas}) must equal gpus ({self.gpus}); layouts TP x replicas that use "
                f"all {self.gpus}: {layouts}")
        require(0 <= self.base_port <= 65535 - self.data_parallel_replicas, "base_port", "must be a free port range")
        require(self.startup_timeout_s > 0, "startup_timeout_s", "must be > 0")
        require(self.stop_timeout_s >= 0, "stop_timeout_s", "must be >= 0")
        require(0 < self.gpu_memory_utilization <= 1, "gpu_memory_utilization", "must be in (0, 1]")
        require(self.max_model_len >= 0, "max_model_len", "must be >= 0")
        require(self.max_logprobs >= 0, "max_logprobs", "must be >= 0")
        require(1 <= self.max_concurrency <= 4096, "max_concurrency", "must be in [1, 4096]")
        require(self.request_timeout_s > 0, "request_timeout_s", "must be > 0")

    @classmethod
    def from_env(cls, base: "VLLMConfig | None" = None, env: dict | None = None) -> "VLLMConfig":
        """`base` (default: the defaults) with the layout the cluster platform put in the env."""
        env = os.environ if env is None else env
        changes: dict[str, int] = {}
        for var, name in ((ENV_GPUS, "gpus"), (ENV_TP, "tensor_parallel_size"), (ENV_DP, "data_parallel_replicas")):
            raw = env.get(var)
            if raw:
                try:
                    changes[name] = int(raw)
                except ValueError:
                    raise CaiError(f"{var}={raw!r}: expected an integer") from None
        base = base if base is not None else cls()
        if not changes:
            return base
        data = {**base.to_dict(), **changes}
        return cls.from_dict(data, path="vllm (from env)")


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
    return [",".join(devices[r * t:(r + 1) * t]) for r in range(cfg.data_parallel_replicas)]


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
    """The replicas of one model: start (and wait for /health), stop. A context manager."""

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

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}/v1" for p in self.ports]

    def start(self) -> "VLLMServers":
        if self.procs:
            return self
        cfg = self.cfg
        n = cfg.data_parallel_replicas
        self.devices = gpu_layout(cfg, self.env.get("CUDA_VISIBLE_DEVICES"))
        self.ports = [cfg.base_port + r for r in range(n)] if cfg.base_port else free_ports(n)
        atexit.register(self.stop)
        t0 = time.monotonic()
        try:
            for r in range(n):
                cmd = server_args(cfg, self.model, self.ports[r], self.served_name)
                env = {**self.env, "CUDA_VISIBLE_DEVICES": self.devices[r]}
                log(f"vllm: starting replica {r} on GPUs {self.devices[r]}, port {self.ports[r]}: {' '.join(cmd)}")
                try:
                    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
                except OSError as exc:
                    raise CaiError(f"vllm: cannot run {cfg.command!r} ({exc.strerror}); the vllm backend needs the "
                                   "vllm image (images/vllm) or `vllm` on PATH") from None
                self.procs.append(proc)
                self.commands.append(cmd)
                tail: collections.deque = collections.deque(maxlen=40)
                self.tails.append(tail)
                thread = threading.Thread(target=self._pump, args=(r, proc, tail), daemon=True, name=f"vllm-log-{r}")
                thread.start()
                self._threads.append(thread)
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        log(f"vllm: {n} replica(s) of {self.model} ready in {time.monotonic() - t0:.1f}s "
            f"(TP={cfg.tensor_parallel_size}, ports {', '.join(map(str, self.ports))})")
        return self

    def _pump(self, r: int, proc: subprocess.Popen, tail: collections.deque) -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            tail.append(line)
            self.echo(f"[vllm {r}] {line}")
        proc.stdout.close()

    def _wait_ready(self, t0: float) -> None:
        pending = set(range(len(self.procs)))
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
        procs, self.procs = self.procs, []
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
        """Request i to replica i mod n; all replicas concurrently; results in request order."""
        self.start()
        n = len(self.clients)
        if n == 1 or len(items) <= 1:
            part = (list(items), list(per_item)) if per_item is not None else (list(items),)
            return list(getattr(self.clients[0], method)(*part, *args))
        results: list[Any] = [None] * len(items)
        errors: list[BaseException] = []

        def work(r: int) -> None:
            idx = list(range(r, len(items), n))
            if not idx:
                return
            try:
                part = [items[i] for i in idx]
                extra = ([per_item[i] for i in idx],) if per_item is not None else ()
                for i, value in zip(idx, getattr(self.clients[r], method)(part, *extra, *args)):
                    results[i] = value
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(r,), name=f"vllm-client-{r}") for r in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
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
                           max_concurrency=cfg.max_concurrency)


def load_policy_model(name_or_path: str, model_cfg: Any = None, vllm_cfg: VLLMConfig | None = None):
    """The policy model for `model_cfg.backend`: transformers in process (default) or vLLM servers."""
    backend = getattr(model_cfg, "backend", "transformers")
    if backend == "vllm":
        from cai_core.models.registry import is_embedded, resolve_model

        path = resolve_model(name_or_path) if is_embedded(name_or_path) else name_or_path
        return VLLMChatModel(path, VLLMConfig.from_env(vllm_cfg))
    from cai_core.llm import load_policy

    return load_policy(name_or_path, getattr(model_cfg, "device", "cpu"), getattr(model_cfg, "batch_size", 16))


__all__ = ["VLLMChatModel", "VLLMConfig", "VLLMServers", "gpu_layout", "load_policy_model", "server_args"]
