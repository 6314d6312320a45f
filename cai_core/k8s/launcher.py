"""Create a training job (or re-attach to it), watch it, stream its master's log.

One launcher for every job kind (`JobKind`: group/version/plural, the container, how the state is read from the
status, how the rank-0 pod is found): `PYTORCHJOB` (kubeflow.org/v1, pytorchjob.py; pod ``<job>-master-0``) and
`TRAINJOB` (trainer.kubeflow.org/v1alpha1, trainjob.py; conditions Created/Complete/Failed/Suspended, Running
from ``status.jobsStatus``; the rank-0 JobSet pod found by label selector). `Launcher(..., kind=TRAINJOB)`.

`Launcher.run(manifest)`:

1. **create** the job; on 409 (a job of this name exists: the launcher pod was
   retried, or the run was resubmitted) it **re-attaches** when the existing
   job has the same ``cai/spec-hash`` and has not failed; a failed or finished
   job of another spec is deleted and created afresh (the trainer resumes from
   the last checkpoint on S3); a *running* job of another spec is an error
   (two configs must not train into one output);
2. **watches** the job's status conditions (Created, Running, Restarting,
   Succeeded, Failed; a TrainJob's mapped to these by `trainjob_state`) with a watch of at most ``poll_interval_s`` at a time;
   while it is Pending or Created, every poll logs why its rank-0 pod does not run (`why_not_running`:
   the scheduler's PodScheduled=False message, or a waiting container's reason such as ImagePullBackOff);
3. **streams** the master pod's log (``<job>-master-0``, container
   ``pytorch``; a TrainJob's rank-0 pod, container ``node``; ``follow=true``) into our log, from a thread, reconnecting when
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

Why not kubeflow-training's ``TrainingClient`` (1.9) for the watch and the logs: its
``wait_for_job_conditions`` polls ``get`` every ``polling_interval`` and raises a bare RuntimeError
with the conditions on Failed (no termination message, no log tail) and TimeoutError without deleting
the job; ``create_job`` has no re-attach on 409; ``get_job_logs(follow=True)`` lists pods by label
(one more RBAC verb) and does not reconnect after a container restart; and it knows no Trainer v2
TrainJob. We use its models (``KubeflowOrgV1PyTorchJob`` in pytorchjob.py) and keep this loop, which
is a kubernetes-client watch with the same verbs the chart's Role grants.
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
from cai_core.k8s import pytorchjob, trainjob
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


def trainjob_state(obj: dict[str, Any]) -> JobState:
    """A TrainJob's phase: a true Failed wins, then Complete (-> Succeeded), Suspended; else Running while a JobSet
    job is active or ready (``status.jobsStatus``), Created once the trainer said so, Pending before."""
    status = obj.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    for kind, phase in (("Failed", "Failed"), ("Complete", "Succeeded"), ("Suspended", "Suspended")):
        if kind in conditions:
            c = conditions[kind]
            return JobState(phase, c.get("reason", ""), c.get("message", ""))
    if any((j.get("active") or 0) + (j.get("ready") or 0) > 0 for j in status.get("jobsStatus") or []):
        return JobState("Running")
    if "Created" in conditions:
        c = conditions["Created"]
        return JobState("Created", c.get("reason", ""), c.get("message", ""))
    return JobState("Pending")


@dataclass(frozen=True)
class JobKind:
    """What the launcher needs to know of a job kind."""

    noun: str  # in messages and kubectl: pytorchjob, trainjob
    group: str
    version: str
    plural: str
    container: str  # the training container of the rank-0 pod
    state: Callable[[dict[str, Any]], JobState]
    master_pod: Callable[[str], str] | None = None  # job name -> the rank-0 pod's fixed name
    master_selector: Callable[[str], str] | None = None  # else: job name -> label selector of the rank-0 pod
    missing: str = ""  # the 404 hint on create


PYTORCHJOB = JobKind("pytorchjob", GROUP, VERSION, PLURAL, CONTAINER, job_state,
                     master_pod=lambda name: f"{name}-master-0",
                     missing="is the Kubeflow training operator installed? its CRD pytorchjobs.kubeflow.org is missing")
TRAINJOB = JobKind("trainjob", trainjob.GROUP, trainjob.VERSION, trainjob.PLURAL, trainjob.CONTAINER, trainjob_state,
                   master_selector=trainjob.master_selector,
                   missing="is Kubeflow Trainer v2 installed? its CRD trainjobs.trainer.kubeflow.org is missing")
KINDS = {PYTORCHJOB.noun: PYTORCHJOB, TRAINJOB.noun: TRAINJOB}


def kind_of(manifest: dict[str, Any]) -> JobKind:
    """The JobKind of a manifest (by apiVersion and kind)."""
    if manifest.get("apiVersion") == trainjob.API_VERSION and manifest.get("kind") == trainjob.KIND:
        return TRAINJOB
    if manifest.get("apiVersion") == pytorchjob.API_VERSION and manifest.get("kind") == pytorchjob.KIND:
        return PYTORCHJOB
    raise CaiError(f"no launcher for {manifest.get('apiVersion')} {manifest.get('kind')}")


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


def _api_error(exc: Exception, what: str, kind: JobKind | None = None) -> CaiError:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", "") or ""
    body = getattr(exc, "body", "") or ""
    detail = ""
    if body:
        import json

        with contextlib.suppress(ValueError, TypeError):
            detail = json.loads(body).get("message", "")
    hint = {401: " (credentials rejected)", 403: " (the service account lacks RBAC rights: see charts/cai Role)",
            404: f" ({(kind or PYTORCHJOB).missing})" if "create" in what else ""}.get(status, "")
    return CaiError(f"Kubernetes API: {what} failed: {status} {reason}{': ' + detail if detail else ''}{hint}")


class LogStreamer(threading.Thread):
    """Follows the master pod's log; reconnects after container restarts without printing a line twice."""

    def __init__(self, core, namespace: str, pod: str | Callable[[], str | None], emit: Callable[[str], None],
                 retry_s: float = 1.0, container: str = CONTAINER):
        """`pod`: the pod's name, or a function that finds it (None while there is none: a TrainJob's JobSet pod)."""
        super().__init__(name=f"log-{pod if isinstance(pod, str) else 'master'}", daemon=True)
        self.core, self.namespace, self.emit, self.retry_s = core, namespace, emit, retry_s
        self._find = (lambda: pod) if isinstance(pod, str) else pod
        self.pod: str | None = pod if isinstance(pod, str) else None
        self.container = container
        self.tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL)
        self._seen: dict[tuple[str | None, int], int] = {}  # (pod, container restart count) -> lines emitted
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
            text = self.core.read_namespaced_pod_log(self.pod, self.namespace, container=self.container)
        except (ApiException, OSError, ValueError):
            return
        lines = (text or "").splitlines()
        key = (self.pod, restarts)
        for line in lines[self._seen.get(key, 0):]:
            self.tail.append(line)
            self.emit(line)
        self._seen[key] = max(self._seen.get(key, 0), len(lines))

    def _restarts(self) -> int | None:
        """The container's restart count, or None while it (or its pod) has not started."""
        self.pod = self._find() or self.pod
        if self.pod is None:
            return None
        pod = self.core.read_namespaced_pod(self.pod, self.namespace)
        for status in (pod.status.container_statuses or []) if pod.status else []:
            if status.name == self.container:
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
                    self.pod, self.namespace, container=self.container, follow=True, _preload_content=False,
                    _request_timeout=(10, READ_TIMEOUT_S))
                count = 0
                key = (self.pod, restarts)
                for line in iter_resp_lines(self._resp):
                    if self._halt.is_set():
                        break
                    count += 1
                    if count > self._seen.get(key, 0):
                        self._seen[key] = count
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
    """Runs one training job (a PyTorchJob, or another `JobKind`) to its end (see module doc)."""

    def __init__(self, api_client, namespace: str, *, poll_interval_s: float = 10.0, timeout_s: float = 0,
                 stream_logs: bool = True, emit: Callable[[str], None] | None = None,
                 delete_wait_s: float = 120.0, kind: JobKind = PYTORCHJOB):
        from kubernetes import client

        self.kind = kind
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

    def _gvp_ns(self) -> tuple[str, str, str, str]:
        return self.kind.group, self.kind.version, self.namespace, self.kind.plural

    def master_pod(self, name: str) -> str | None:
        """The rank-0 pod's name: fixed for a PyTorchJob; for a TrainJob the newest pod matching its selector."""
        if self.kind.master_pod is not None:
            return self.kind.master_pod(name)
        pod = self._newest_master_pod(name)
        return pod.metadata.name if pod is not None else None

    def _newest_master_pod(self, name: str):
        """A TrainJob's rank-0 pod (the newest matching its selector), or None; errors count as none."""
        from kubernetes.client.rest import ApiException

        try:
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.kind.master_selector(name)).items
        except (ApiException, OSError, ValueError):
            return None
        pods = sorted(pods, key=lambda p: (str(p.metadata.creation_timestamp or ""), p.metadata.name))
        return pods[-1] if pods else None

    def why_not_running(self, name: str) -> str | None:
        """Why the job's rank-0 pod is not running yet, from the pod itself: the scheduler's PodScheduled=False
        reason ("0/12 nodes are available: 12 Insufficient nvidia.com/gpu") or a waiting container's
        (ImagePullBackOff). None when there is no pod yet or nothing is wrong with it."""
        from kubernetes.client.rest import ApiException

        if self.kind.master_pod is None:
            pod = self._newest_master_pod(name)
        else:
            try:
                pod = self.core.read_namespaced_pod(self.kind.master_pod(name), self.namespace)
            except (ApiException, OSError, ValueError):
                return None
        if pod is None or pod.status is None:
            return None
        for cond in pod.status.conditions or []:
            if cond.type == "PodScheduled" and cond.status == "False":
                return f"pod {pod.metadata.name} not scheduled ({cond.reason or 'Unschedulable'}: {cond.message or '?'})"
        for status in pod.status.container_statuses or []:
            waiting = status.state.waiting if status.state else None
            if waiting is not None and waiting.reason not in (None, "ContainerCreating", "PodInitializing"):
                return (f"pod {pod.metadata.name} container {status.name} waiting ({waiting.reason}"
                        + (f": {waiting.message})" if waiting.message else ")"))
        return None

    def get(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.rest import ApiException

        try:
            return self.custom.get_namespaced_custom_object(*self._gvp_ns(), name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _api_error(exc, kind=self.kind, what=f"get {self.kind.noun} {self.namespace}/{name}") from None

    def delete(self, name: str, wait: bool = False) -> None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        try:
            self.custom.delete_namespaced_custom_object(*self._gvp_ns(), name,
                                                        body=client.V1DeleteOptions(propagation_policy="Background"))
        except ApiException as exc:
            if exc.status != 404:
                raise _api_error(exc, kind=self.kind, what=f"delete {self.kind.noun} {self.namespace}/{name}") from None
        if wait:
            deadline = time.monotonic() + self.delete_wait_s
            while self.get(name) is not None:
                if time.monotonic() > deadline:
                    raise CaiError(f"{self.kind.noun} {self.namespace}/{name} is still there {self.delete_wait_s:.0f} s "
                                   "after it was deleted")
                time.sleep(min(self.poll_interval_s, 1.0))

    def submit(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create the job, or re-attach to / replace an existing one of the same name (see module doc)."""
        from kubernetes.client.rest import ApiException

        name = manifest["metadata"]["name"]
        want = manifest["metadata"].get("annotations", {}).get(ANNOTATION_SPEC)
        for _ in range(3):
            try:
                created = self.custom.create_namespaced_custom_object(*self._gvp_ns(),
                                                                      manifest)
                self._note(f"created {self.kind.noun} {self.namespace}/{name}")
                return created
            except ApiException as exc:
                if exc.status != 409:
                    raise _api_error(exc, kind=self.kind, what=f"create {self.kind.noun} {self.namespace}/{name}") from None
            existing = self.get(name)
            if existing is None:
                continue  # deleted in between: create again
            state = self.kind.state(existing)
            same = (existing.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_SPEC) == want
            if same and state.phase != "Failed":
                self._note(f"re-attached to existing {self.kind.noun} {self.namespace}/{name} ({state.phase})")
                return existing
            if not same and not state.done:
                raise CaiError(f"{self.kind.noun} {self.namespace}/{name} of this run and stage is {state.phase} with "
                               "another config (its cai/spec-hash differs); delete it "
                               f"(kubectl delete {self.kind.noun} -n {self.namespace} {name}) or use another run id")
            why = "failed" if state.phase == "Failed" else "has another config"
            self._note(f"existing {self.kind.noun} {self.namespace}/{name} {why} ({state.message or state.phase}); "
                       "deleting it and starting a new attempt")
            self.delete(name, wait=True)
        raise CaiError(f"could not create {self.kind.noun} {self.namespace}/{name}: it keeps coming back")

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
            for event in w.stream(self.custom.list_namespaced_custom_object, *self._gvp_ns(), **kwargs):
                obj = event.get("raw_object") or event.get("object")
                if event.get("type") == "DELETED":
                    yield None
                    return
                if isinstance(obj, dict) and obj.get("metadata", {}).get("name") == name:
                    yield obj
        except ApiException as exc:
            if exc.status == 410:  # resource version too old: the caller re-reads the job
                return
            raise _api_error(exc, kind=self.kind, what=f"watch {self.kind.noun} {self.namespace}/{name}") from None
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
                    raise TrainingJobError(f"{self.kind.noun} {self.namespace}/{name} was deleted before it finished")
                rv = obj.get("metadata", {}).get("resourceVersion")
                phase = self.kind.state(obj).phase
                if phase in ("Pending", "Created"):  # every poll: an operator sees why it waits, not just "Created"
                    why = self.why_not_running(name)
                    if why:
                        self._note(f"{self.kind.noun} {name}: {phase}, {why}")
                for current in itertools.chain([obj], self._watch_once(name, rv, self._slice(deadline))):
                    if current is None:
                        raise TrainingJobError(f"{self.kind.noun} {self.namespace}/{name} was deleted before it "
                                               "finished")
                    state = self.kind.state(current)
                    if state.done and streamer is not None:
                        self._drain(streamer)
                    if state.phase != last_phase:
                        last_phase = state.phase
                        self._note(f"{self.kind.noun} {name}: {state.phase}"
                                   + (f" ({state.reason}: {state.message})" if state.message else ""))
                    if self.stream_logs and streamer is None and state.phase not in ("Pending", "Created"):
                        streamer = LogStreamer(self.core, self.namespace, lambda: self.master_pod(name), self.emit,
                                               retry_s=min(1.0, self.poll_interval_s), container=self.kind.container)
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
                    raise TrainingJobTimeout(f"{self.kind.noun} {self.namespace}/{name} did not finish within "
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
            self._note(f"{self.kind.noun} {name} restarted {len(seen)} time(s), more than train.restarts={limit}: deleting it")
            self.delete(name)
            raise TrainingJobFailed(f"{self.kind.noun} {self.namespace}/{name} failed: it restarted {len(seen)} time(s), "
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
        parts = [f"{self.kind.noun} {self.namespace}/{name} failed: {state.message or state.reason or 'Failed'}"]
        with contextlib.suppress(Exception):
            pod = self.core.read_namespaced_pod((streamer and streamer.pod) or self.master_pod(name), self.namespace)
            for status in pod.status.container_statuses or []:
                term = status.state.terminated if status.state else None
                term = term or (status.last_state.terminated if status.last_state else None)
                if status.name == self.kind.container and term is not None:
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
                self._note(f"timed out after {self.timeout_s:.0f} s: deleting {self.kind.noun} {name}")
                self.delete(name)
                raise
            except (_Cancelled, KeyboardInterrupt):
                self._note(f"cancelled: deleting {self.kind.noun} {name}")
                self.delete(name)
                raise TrainingJobCancelled(f"cancelled: {self.kind.noun} {self.namespace}/{name} was deleted") from None


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


__all__ = ["JobKind", "JobState", "KINDS", "Launcher", "PYTORCHJOB", "TRAINJOB", "kind_of", "trainjob_state", "LogStreamer", "TrainingJobCancelled", "TrainingJobError", "TrainingJobFailed",
           "TrainingJobTimeout", "api_client_from_environment", "job_state"]
