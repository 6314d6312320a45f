"""Create a PyTorchJob (or re-attach to it), watch it, stream its master's log.

`Launcher.run(manifest)`:

1. **create** the job; on 409 (a job of this name exists: the launcher pod was
   retried, or the run was resubmitted) it **re-attaches** when the existing
   job has the same ``cai/spec-hash`` and has not failed; a failed or finished
   job of another spec is deleted and created afresh (the trainer resumes from
   the last checkpoint on S3); a *running* job of another spec is an error
   (two configs must not train into one output);
2. **watches** the job's status conditions (Created, Running, Restarting,
   Succeeded, Failed) with a watch of at most ``poll_interval_s`` at a time;
3. **streams** the master pod's log (``<job>-master-0``, container
   ``pytorch``, ``follow=true``) into our log, from a thread, reconnecting when
   the container is restarted and never printing a line twice;
4. ends when the job **succeeds**; **fails** with a `TrainingJobFailed` (a
   `CaiError`, so the component exits non-zero) carrying the Failed
   condition's message, the master container's termination message (``cai
   train`` writes its error there) and the last lines of its log; on
   **timeout** (``timeout_s``) or **cancellation** (SIGTERM: KFP cancelling
   the run or the pod's deadline; or Ctrl-C) it **deletes** the job and its
   pods, then raises `TrainingJobTimeout` / `TrainingJobCancelled`.

A job deleted by someone else while we watch is an error too. Kubernetes API
errors are `CaiError`s naming the call and the status.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from cai_core.errors import CaiError
from cai_core.k8s.pytorchjob import ANNOTATION_MAX_RESTARTS, ANNOTATION_SPEC, CONTAINER, GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)

TERMINAL = ("Succeeded", "Failed")
LOG_TAIL = 30
READ_TIMEOUT_S = 300  # a silent log stream is reopened after this long (lines already printed are skipped)


class TrainingJobError(CaiError):
    """The training job did not succeed."""


class TrainingJobFailed(TrainingJobError):
    """The PyTorchJob's status says Failed."""


class TrainingJobTimeout(TrainingJobError):
    """The job ran longer than timeout_s; it was deleted."""


class TrainingJobCancelled(TrainingJobError):
    """SIGTERM or Ctrl-C while waiting; the job was deleted."""

    exit_code = 130


class _Cancelled(BaseException):
    """Raised in the main thread by the SIGTERM handler (a BaseException, like KeyboardInterrupt)."""


@dataclass(frozen=True)
class JobState:
    phase: str  # Pending (no condition yet), Created, Running, Restarting, Suspended, Succeeded, Failed
    reason: str = ""
    message: str = ""

    @property
    def done(self) -> bool:
        return self.phase in TERMINAL


def job_state(obj: dict[str, Any]) -> JobState:
    """The job's phase from its status conditions (a true Succeeded or Failed wins; else the last true one)."""
    conditions = [c for c in ((obj.get("status") or {}).get("conditions") or []) if c.get("status") == "True"]
    for kind in TERMINAL:
        for c in conditions:
            if c.get("type") == kind:
                return JobState(kind, c.get("reason", ""), c.get("message", ""))
    if not conditions:
        return JobState("Pending")
    last = max(enumerate(conditions), key=lambda ic: (ic[1].get("lastTransitionTime") or "", ic[0]))[1]
    return JobState(last.get("type", "Unknown"), last.get("reason", ""), last.get("message", ""))


def api_client_from_environment():
    """An ApiClient: in a pod its service account, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    import os

    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:  # KUBECONFIG is read now, not when kubernetes was imported
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
        except (config.ConfigException, OSError) as exc:
            raise CaiError(f"no Kubernetes credentials: not in a pod, and no usable kubeconfig ({exc})") from None
    return client.ApiClient()


def _api_error(exc: Exception, what: str) -> CaiError:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", "") or ""
    body = getattr(exc, "body", "") or ""
    detail = ""
    if body:
        import json

        with contextlib.suppress(ValueError, TypeError):
            detail = json.loads(body).get("message", "")
    hint = {401: " (credentials rejected)", 403: " (the service account lacks RBAC rights: see charts/cai Role)",
            404: " (is the Kubeflow training operator installed? its CRD pytorchjobs.kubeflow.org is missing)"
            if "create" in what else ""}.get(status, "")
    return CaiError(f"Kubernetes API: {what} failed: {status} {reason}{': ' + detail if detail else ''}{hint}")


class LogStreamer(threading.Thread):
    """Follows the master pod's log; reconnects after container restarts without printing a line twice."""

    def __init__(self, core, namespace: str, pod: str, emit: Callable[[str], None], retry_s: float = 1.0):
        super().__init__(name=f"log-{pod}", daemon=True)
        self.core, self.namespace, self.pod, self.emit, self.retry_s = core, namespace, pod, emit, retry_s
        self.tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL)
        self._seen: dict[int, int] = {}  # container restart count -> lines already emitted
        self._halt = threading.Event()
        self._resp = None

    def stop(self, join_s: float = 5.0) -> None:
        """End the stream: shut the socket down (closing it from another thread could block) and join."""
        self._halt.set()
        resp = self._resp
        if resp is not None and hasattr(resp, "shutdown"):
            with contextlib.suppress(Exception):
                resp.shutdown()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(join_s)

    def catch_up(self) -> None:
        """After the container ended: print what the stream has not printed yet (call once stopped)."""
        from kubernetes.client.rest import ApiException

        try:
            restarts = self._restarts()
            if restarts is None:
                return
            text = self.core.read_namespaced_pod_log(self.pod, self.namespace, container=CONTAINER)
        except (ApiException, OSError, ValueError):
            return
        lines = (text or "").splitlines()
        for line in lines[self._seen.get(restarts, 0):]:
            self.tail.append(line)
            self.emit(line)
        self._seen[restarts] = max(self._seen.get(restarts, 0), len(lines))

    def _restarts(self) -> int | None:
        """The container's restart count, or None while it has not started."""
        pod = self.core.read_namespaced_pod(self.pod, self.namespace)
        for status in (pod.status.container_statuses or []) if pod.status else []:
            if status.name == CONTAINER:
                started = status.state and (status.state.running or status.state.terminated)
                return status.restart_count or 0 if started else None
        return None

    def run(self) -> None:
        from kubernetes.client.rest import ApiException
        from kubernetes.watch.watch import iter_resp_lines

        while not self._halt.is_set():
            try:
                restarts = self._restarts()
                if restarts is None:
                    self._halt.wait(self.retry_s)
                    continue
                self._resp = self.core.read_namespaced_pod_log(
                    self.pod, self.namespace, container=CONTAINER, follow=True, _preload_content=False,
                    _request_timeout=(10, READ_TIMEOUT_S))
                count = 0
                for line in iter_resp_lines(self._resp):
                    if self._halt.is_set():
                        break
                    count += 1
                    if count > self._seen.get(restarts, 0):
                        self._seen[restarts] = count
                        self.tail.append(line)
                        self.emit(line)
            except ApiException as exc:
                if exc.status not in (400, 404):  # 400: container not ready yet; 404: pod not created yet
                    log.debug("log stream of %s: %s", self.pod, exc)
            except Exception as exc:  # connection dropped: reconnect
                log.debug("log stream of %s ended: %s", self.pod, exc)
            finally:
                resp, self._resp = self._resp, None
                if resp is not None:
                    with contextlib.suppress(Exception):
                        resp.release_conn()
            self._halt.wait(self.retry_s)


class Launcher:
    """Runs one PyTorchJob to its end (see module doc)."""

    def __init__(self, api_client, namespace: str, *, poll_interval_s: float = 10.0, timeout_s: float = 0,
                 stream_logs: bool = True, emit: Callable[[str], None] | None = None,
                 delete_wait_s: float = 120.0):
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self.stream_logs = stream_logs
        self.emit = emit or (lambda line: print(line, flush=True))
        self.delete_wait_s = delete_wait_s
        self.events: list[str] = []  # what happened, for the caller's details and the tests

    # ------------------------------------------------------------------ API calls

    def _note(self, text: str) -> None:
        self.events.append(text)
        self.emit(f"[launcher] {text}")

    def get(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.rest import ApiException

        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _api_error(exc, f"get pytorchjob {self.namespace}/{name}") from None

    def delete(self, name: str, wait: bool = False) -> None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name,
                                                        body=client.V1DeleteOptions(propagation_policy="Background"))
        except ApiException as exc:
            if exc.status != 404:
                raise _api_error(exc, f"delete pytorchjob {self.namespace}/{name}") from None
        if wait:
            deadline = time.monotonic() + self.delete_wait_s
            while self.get(name) is not None:
                if time.monotonic() > deadline:
                    raise CaiError(f"pytorchjob {self.namespace}/{name} is still there {self.delete_wait_s:.0f} s "
                                   "after it was deleted")
                time.sleep(min(self.poll_interval_s, 1.0))

    def submit(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create the job, or re-attach to / replace an existing one of the same name (see module doc)."""
        from kubernetes.client.rest import ApiException

        name = manifest["metadata"]["name"]
        want = manifest["metadata"].get("annotations", {}).get(ANNOTATION_SPEC)
        for _ in range(3):
            try:
                created = self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                                      manifest)
                self._note(f"created pytorchjob {self.namespace}/{name}")
                return created
            except ApiException as exc:
                if exc.status != 409:
                    raise _api_error(exc, f"create pytorchjob {self.namespace}/{name}") from None
            existing = self.get(name)
            if existing is None:
                continue  # deleted in between: create again
            state = job_state(existing)
            same = (existing.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_SPEC) == want
            if same and state.phase != "Failed":
                self._note(f"re-attached to existing pytorchjob {self.namespace}/{name} ({state.phase})")
                return existing
            if not same and not state.done:
                raise CaiError(f"pytorchjob {self.namespace}/{name} of this run and stage is {state.phase} with "
                               "another config (its cai/spec-hash differs); delete it "
                               f"(kubectl delete pytorchjob -n {self.namespace} {name}) or use another run id")
            why = "failed" if state.phase == "Failed" else "has another config"
            self._note(f"existing pytorchjob {self.namespace}/{name} {why} ({state.message or state.phase}); "
                       "deleting it and starting a new attempt")
            self.delete(name, wait=True)
        raise CaiError(f"could not create pytorchjob {self.namespace}/{name}: it keeps coming back")

    # ------------------------------------------------------------------ watching

    def _watch_once(self, name: str, resource_version: str | None, seconds: float):
        """Yield job objects from one watch request of at most `seconds`."""
        from kubernetes import watch
        from kubernetes.client.rest import ApiException

        w = watch.Watch()
        kwargs: dict[str, Any] = dict(field_selector=f"metadata.name={name}",
                                      timeout_seconds=max(1, int(round(seconds))),
                                      _request_timeout=seconds + 30)
        if resource_version:
            kwargs["resource_version"] = resource_version
        try:
            for event in w.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                  PLURAL, **kwargs):
                obj = event.get("raw_object") or event.get("object")
                if event.get("type") == "DELETED":
                    yield None
                    return
                if isinstance(obj, dict) and obj.get("metadata", {}).get("name") == name:
                    yield obj
        except ApiException as exc:
            if exc.status == 410:  # resource version too old: the caller re-reads the job
                return
            raise _api_error(exc, f"watch pytorchjob {self.namespace}/{name}") from None
        finally:
            w.stop()

    def wait(self, name: str, deadline: float | None = None) -> dict[str, Any]:
        """Block until the job succeeds (its final object) or raise (failed, deleted, timed out)."""
        streamer: LogStreamer | None = None
        last_phase = None
        restarts: set[str] = set()  # lastTransitionTime of each Restarting condition seen
        try:
            while True:
                obj = self.get(name)
                if obj is None:
                    raise TrainingJobError(f"pytorchjob {self.namespace}/{name} was deleted before it finished")
                rv = obj.get("metadata", {}).get("resourceVersion")
                for current in itertools.chain([obj], self._watch_once(name, rv, self._slice(deadline))):
                    if current is None:
                        raise TrainingJobError(f"pytorchjob {self.namespace}/{name} was deleted before it "
                                               "finished")
                    state = job_state(current)
                    if state.done and streamer is not None:
                        self._drain(streamer)
                    if state.phase != last_phase:
                        last_phase = state.phase
                        self._note(f"pytorchjob {name}: {state.phase}"
                                   + (f" ({state.reason}: {state.message})" if state.message else ""))
                    if self.stream_logs and streamer is None and state.phase not in ("Pending", "Created"):
                        streamer = LogStreamer(self.core, self.namespace, f"{name}-master-0", self.emit,
                                               retry_s=min(1.0, self.poll_interval_s))
                        streamer.start()
                    if state.phase == "Restarting":
                        self._bound_restarts(name, current, restarts)
                    if state.phase == "Succeeded":
                        return current
                    if state.phase == "Failed":
                        raise TrainingJobFailed(self._failure_message(name, state, streamer))
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                if deadline is not None and time.monotonic() >= deadline:
                    raise TrainingJobTimeout(f"pytorchjob {self.namespace}/{name} did not finish within "
                                             f"{self.timeout_s:.0f} s")
        finally:
            if streamer is not None:
                streamer.stop()

    def _bound_restarts(self, name: str, job: dict[str, Any], seen: set[str]) -> None:
        """Count a new Restarting transition; past the job's cai/max-restarts delete it and fail.

        A multi-node job restarts under restartPolicy ExitCode, which ignores backoffLimit (pytorchjob.py)."""
        limit = ((job.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_MAX_RESTARTS)
        cond = next((c for c in (job.get("status") or {}).get("conditions") or []
                     if c.get("type") == "Restarting" and c.get("status") == "True"), {})
        seen.add(cond.get("lastTransitionTime") or f"#{len(seen)}")
        if limit is not None and len(seen) > int(limit):
            self._note(f"pytorchjob {name} restarted {len(seen)} time(s), more than train.restarts={limit}: deleting it")
            self.delete(name)
            raise TrainingJobFailed(f"pytorchjob {self.namespace}/{name} failed: it restarted {len(seen)} time(s), "
                                    f"more than train.restarts={limit} allows ({cond.get('message', 'Restarting')}); "
                                    "it was deleted")

    def _slice(self, deadline: float | None) -> float:
        if deadline is None:
            return self.poll_interval_s
        return max(0.05, min(self.poll_interval_s, deadline - time.monotonic()))

    @staticmethod
    def _drain(streamer: LogStreamer, seconds: float = 2.0) -> None:
        """The job ended: let the stream print what it has, stop it, print the rest from one last read."""
        end = time.monotonic() + seconds
        while streamer.is_alive() and streamer._resp is not None and time.monotonic() < end:
            time.sleep(0.05)  # the follow stream ends by itself once the container has terminated
        streamer.stop()
        streamer.catch_up()

    def _failure_message(self, name: str, state: JobState, streamer: LogStreamer | None) -> str:
        parts = [f"pytorchjob {self.namespace}/{name} failed: {state.message or state.reason or 'Failed'}"]
        with contextlib.suppress(Exception):
            pod = self.core.read_namespaced_pod(f"{name}-master-0", self.namespace)
            for status in pod.status.container_statuses or []:
                term = status.state.terminated if status.state else None
                term = term or (status.last_state.terminated if status.last_state else None)
                if status.name == CONTAINER and term is not None:
                    parts.append(f"master container: exit code {term.exit_code}"
                                 + (f", {term.reason}" if term.reason else "")
                                 + (f": {term.message.strip()}" if term.message else ""))
        if streamer is not None and streamer.tail:
            parts.append("last lines of the master's log:\n  " + "\n  ".join(streamer.tail))
        return "\n".join(parts)

    # ------------------------------------------------------------------ all of it

    def run(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Submit and wait; on timeout, SIGTERM or Ctrl-C delete the job (see module doc)."""
        name = manifest["metadata"]["name"]
        deadline = time.monotonic() + self.timeout_s if self.timeout_s else None
        with _sigterm_raises():
            try:
                self.submit(manifest)
                return self.wait(name, deadline)
            except TrainingJobTimeout:
                self._note(f"timed out after {self.timeout_s:.0f} s: deleting pytorchjob {name}")
                self.delete(name)
                raise
            except (_Cancelled, KeyboardInterrupt):
                self._note(f"cancelled: deleting pytorchjob {name}")
                self.delete(name)
                raise TrainingJobCancelled(f"cancelled: pytorchjob {self.namespace}/{name} was deleted") from None


@contextlib.contextmanager
def _sigterm_raises():
    """While inside, SIGTERM raises _Cancelled in the main thread (elsewhere signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Cancelled()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__ = ["JobState", "Launcher", "LogStreamer", "TrainingJobCancelled", "TrainingJobError", "TrainingJobFailed",
           "TrainingJobTimeout", "api_client_from_environment", "job_state"]
