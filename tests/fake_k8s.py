"""A fake Kubernetes API server for the PyTorchJob launcher's tests.

What an API server itself does is now tested on a real one (tests/k8s_real: kube-apiserver v1.20.2 with the
real PyTorchJob CRD, RBAC and TokenRequest tokens; test_launcher_real.py runs the launcher's job-level scenarios
there: pending then timeout and delete, Created/Running/Succeeded, Failed, 409 and re-attach, replacing a failed
job, refusing a running job of another spec, a job deleted by someone else, SIGTERM, too many restarts, a real
403 and 401). That server has no controllers, scheduler or kubelet, so this fake is kept only for what it cannot
show: pods and their container statuses (restart counts, termination messages in the failure message), the
master pod's log stream (follow, reconnect after a container restart without printing a line twice, the last
lines in a failure), a job that succeeds with outputs on S3 (`on_success` hooks, the pipeline step tests), and
errors injected on demand (watch ``ERROR`` events and HTTP errors such as 410 Gone or 500: test_watch_errors.py;
`reject`).

It speaks HTTP on 127.0.0.1 (a free port) and the real `kubernetes` client
talks to it unchanged. What it serves, the way the API server and the training
operator behave:

* ``/apis/kubeflow.org/v1/namespaces/<ns>/pytorchjobs``: POST creates (201, or
  409 AlreadyExists with a Status body); GET lists, and with ``watch=true``
  streams events as chunked JSON lines (``ADDED`` / ``MODIFIED`` /
  ``DELETED``) after ``resourceVersion``, filtered by ``fieldSelector``
  metadata.name, ending after ``timeoutSeconds``;
* ``.../pytorchjobs/<name>``: GET (404 NotFound Status when absent), DELETE
  (the job and its pods go; watchers get ``DELETED``);
* ``/api/v1/namespaces/<ns>/pods/<pod>`` (GET) and ``.../pods/<pod>/log``
  (``follow=true`` keeps the chunked stream open while the container runs).

Each created job plays a *scenario* in a thread, like the operator would:

* ``succeed``: Created, Running (master pod, log lines), Succeeded;
* ``fail``: Created, Running, the master container exits 1 with a
  termination message, Failed with the operator's message;
* ``hang``: Created, Running, then nothing (until deleted);
* ``restart``: Created, Running, the container dies and is restarted
  (Restarting, restartCount 1, a new log), Running, Succeeded;
* ``pending``: no status at all;
* ``unschedulable``: Created, and a master pod the scheduler cannot place (``PodScheduled=False``,
  `UNSCHEDULABLE`), then nothing (until deleted);
* ``image_pull``: Created, and a master pod scheduled whose container waits in ``ImagePullBackOff``.

``FakeK8s(kind="trainjob")`` serves Kubeflow Trainer v2 TrainJobs instead, at
``/apis/trainer.kubeflow.org/v1alpha1/namespaces/<ns>/trainjobs``, the way the trainer and JobSet do: the
conditions are Created, Complete and Failed (Running is ``status.jobsStatus[].active``), the rank-0 pod is
``<job>-node-0-0-<suffix>`` (container ``node``) with JobSet's labels, found through
``GET /api/v1/namespaces/<ns>/pods?labelSelector=...``.

`on_success(job)` hooks let a test put the job's outputs where the launcher
will look (S3). `requests` records every call; `deleted` the deleted names;
`reject` makes a verb answer an error status (e.g. 403 on create); `watch_errors` makes the next watch
requests meet an ``ERROR`` event (410 Gone / Expired, or another code) or an HTTP error, as a real API server
does when a watch's resourceVersion is too old.
"""
from __future__ import annotations

import datetime as _dt
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

JOBS = re.compile(r"^/apis/kubeflow\.org/v1/namespaces/([^/]+)/pytorchjobs(?:/([^/]+))?$")
TRAINJOBS = re.compile(r"^/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/([^/]+)/trainjobs(?:/([^/]+))?$")
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+?)(/log)?$")
POD_LIST = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
#: Per kind: the path, the resource, apiVersion, Kind, container of the rank-0 pod.
KINDS = {"pytorchjob": (JOBS, "pytorchjobs.kubeflow.org", "kubeflow.org/v1", "PyTorchJob", "pytorch"),
         "trainjob": (TRAINJOBS, "trainjobs.trainer.kubeflow.org", "trainer.kubeflow.org/v1alpha1", "TrainJob",
                      "node")}

LOG_LINES = ["[rank0] step 1 loss 2.31", "[rank0] step 2 loss 1.87", "[rank0] step 3 loss 1.52"]
RESTART_LINES = ["[rank0] resuming from checkpoint-2", "[rank0] step 3 loss 1.50"]
UNSCHEDULABLE = ("0/12 nodes are available: 4 node(s) had untolerated taint {dedicated: cpu}, "
                 "8 Insufficient nvidia.com/gpu. preemption: 0/12 nodes are available.")
IMAGE_PULL = 'Back-off pulling image "registry.example.com/cai-trainer:0.1.0"'
FAIL_MESSAGE = "InputError: /scratch/work/in/sft.jsonl:3: field 'response': empty text"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class FakeK8s:
    """The server's state; start() serves it, stop() ends it."""

    def __init__(self, scenario: str = "succeed", step_s: float = 0.15, kind: str = "pytorchjob"):
        self.kind = kind
        self.jobs_re, self.resource, self.api_version, self.kind_name, self.container = KINDS[kind]
        self.scenario = scenario
        self.scenarios: dict[str, str] = {}  # job name -> scenario (else self.scenario)
        self.step_s = step_s
        self.lock = threading.Condition()
        self.rv = 0
        self.jobs: dict[tuple[str, str], dict] = {}
        self.events: list[tuple[int, str, str, dict]] = []  # (rv, ns, type, object)
        self.pods: dict[tuple[str, str], dict] = {}
        self.logs: dict[tuple[str, str], dict[int, list[str]]] = {}  # pod -> restart count -> lines
        self.requests: list[tuple[str, str]] = []
        self.deleted: list[str] = []
        self.created: list[str] = []
        self.reject: dict[str, tuple[int, str]] = {}  # verb ("create", "get", "delete") -> (status, reason)
        self.on_success: list = []
        #: Errors the next watch requests meet, one per request, oldest first: ("event", code) streams an
        #: ``ERROR`` event with a Status of that code (410: "too old resource version", as the API server sends
        #: when a watch's resourceVersion was compacted away) and ends the stream; ("http", code) answers the
        #: watch request itself with that status.
        self.watch_errors: list[tuple[str, int]] = []
        self.watch_errors_sent: list[tuple[str, int]] = []
        self._stopping = False
        self.server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "FakeK8s":
        fake = self

        class Handler(_Handler):
            state = fake

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        with self.lock:
            self._stopping = True
            self.lock.notify_all()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def api_client(self):
        from kubernetes import client

        config = client.Configuration()
        config.host = self.url
        return client.ApiClient(config)

    def kubeconfig(self, path) -> str:
        """A kubeconfig file pointing at this server (for load_kube_config)."""
        import yaml

        doc = {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
               "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
               "users": [{"name": "fake", "user": {"token": "fake-token"}}],
               "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "kubeflow"}}]}
        path.write_text(yaml.safe_dump(doc))
        return str(path)

    # ------------------------------------------------------------------ state changes (hold self.lock)

    def _bump(self, ns: str, kind: str, obj: dict) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.events.append((self.rv, ns, kind, json.loads(json.dumps(obj))))
        self.lock.notify_all()

    def add_job(self, ns: str, obj: dict, scenario: str | None = None) -> dict:
        """Store a job as if created (also used by tests to plant an existing one)."""
        with self.lock:
            name = obj["metadata"]["name"]
            obj = json.loads(json.dumps(obj))
            obj["metadata"].update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
            obj.setdefault("status", {})
            self.jobs[(ns, name)] = obj
            self.created.append(name)
            self._bump(ns, "ADDED", obj)
        chosen = scenario or self.scenarios.get(name, self.scenario)
        threading.Thread(target=self._play, args=(ns, name, obj["metadata"]["uid"], chosen), daemon=True).start()
        return obj

    def set_condition(self, ns: str, name: str, kind: str, reason: str = "", message: str = "") -> None:
        with self.lock:
            job = self.jobs.get((ns, name))
            if job is None:
                return
            if self.kind == "trainjob":  # the trainer: no Running/Restarting condition, Complete for Succeeded
                if kind in ("Running", "Restarting"):
                    job["status"]["jobsStatus"] = [{"name": "node", "active": 1 if kind == "Running" else 0,
                                                    "ready": 0, "succeeded": 0, "failed": 0, "suspended": 0}]
                    return self._bump(ns, "MODIFIED", job)
                kind = {"Succeeded": "Complete"}.get(kind, kind)
                reason = {"Complete": "JobSetCompleted", "Failed": "JobSetFailed"}.get(kind, reason)
                message = message.replace("PyTorchJob", "TrainJob")
            conds = job["status"].setdefault("conditions", [])
            for c in conds:
                if c["type"] != "Created" and c["type"] != kind:
                    c["status"] = "False"
            found = next((c for c in conds if c["type"] == kind), None)
            if found is None:
                found = {"type": kind}
                conds.append(found)
            found.update(status="True", reason=reason or f"PyTorchJob{kind}", message=message or
                         f"PyTorchJob {name} is {kind.lower()}.", lastUpdateTime=_now(), lastTransitionTime=_now())
            if kind in ("Succeeded", "Failed"):
                job["status"]["completionTime"] = _now()
            self._bump(ns, "MODIFIED", job)

    def _pod(self, ns: str, job: str) -> tuple[str, str]:
        return ns, f"{job}-node-0-0-x7k2q" if self.kind == "trainjob" else f"{job}-master-0"

    def _pod_labels(self, job: str) -> dict[str, str]:
        if self.kind == "trainjob":
            return {"jobset.sigs.k8s.io/jobset-name": job, "jobset.sigs.k8s.io/replicatedjob-name": "node",
                    "jobset.sigs.k8s.io/job-index": "0", "batch.kubernetes.io/job-completion-index": "0"}
        return {"training.kubeflow.org/job-name": job}

    def start_container(self, ns: str, job: str, restarts: int = 0, last_state: dict | None = None) -> None:
        with self.lock:
            key = self._pod(ns, job)
            self.pods[key] = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": key[1], "namespace": ns, "labels": self._pod_labels(job),
                             "creationTimestamp": _now()},
                "status": {"phase": "Running", "containerStatuses": [{
                    "name": self.container, "image": "trainer", "imageID": "", "ready": True, "restartCount": restarts,
                    "state": {"running": {"startedAt": _now()}}, "lastState": last_state or {}}]}}
            self.logs.setdefault(key, {})[restarts] = []
            self.lock.notify_all()

    def pending_pod(self, ns: str, job: str, scenario: str) -> None:
        """A master pod that does not run: not scheduled, or its image not pulled."""
        with self.lock:
            key = self._pod(ns, job)
            status: dict = {"phase": "Pending"}
            if scenario == "unschedulable":
                status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                         "message": UNSCHEDULABLE, "lastTransitionTime": _now()}]
            else:
                status["conditions"] = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()}]
                status["containerStatuses"] = [{
                    "name": self.container, "image": "trainer", "imageID": "", "ready": False, "restartCount": 0,
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": IMAGE_PULL}}}]
            self.pods[key] = {"apiVersion": "v1", "kind": "Pod", "status": status,
                              "metadata": {"name": key[1], "namespace": ns, "labels": self._pod_labels(job),
                                           "creationTimestamp": _now()}}

    def log(self, ns: str, job: str, *lines: str) -> None:
        with self.lock:
            key = self._pod(ns, job)
            pod = self.pods.get(key)
            if pod is None:
                return
            restarts = pod["status"]["containerStatuses"][0]["restartCount"]
            self.logs[key][restarts].extend(lines)
            self.lock.notify_all()

    def end_container(self, ns: str, job: str, exit_code: int, message: str = "") -> dict:
        with self.lock:
            pod = self.pods.get(self._pod(ns, job))
            if pod is None:
                return {}
            term = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                    "startedAt": _now(), "finishedAt": _now()}
            if message:
                term["message"] = message
            status = pod["status"]["containerStatuses"][0]
            status.update(state={"terminated": term}, ready=False)
            pod["status"]["phase"] = "Succeeded" if exit_code == 0 else "Failed"
            self.lock.notify_all()
            return {"terminated": term}

    def delete_job(self, ns: str, name: str) -> dict | None:
        with self.lock:
            job = self.jobs.pop((ns, name), None)
            if job is None:
                return None
            self.deleted.append(name)
            self.pods.pop(self._pod(ns, name), None)
            self._bump(ns, "DELETED", job)
            return job

    def alive(self, ns: str, name: str, uid: str) -> bool:
        with self.lock:
            job = self.jobs.get((ns, name))
            return not self._stopping and job is not None and job["metadata"]["uid"] == uid

    # ------------------------------------------------------------------ the operator

    def _play(self, ns: str, name: str, uid: str, scenario: str) -> None:
        def pause(n: float = 1.0) -> bool:
            time.sleep(self.step_s * n)
            return self.alive(ns, name, uid)

        if scenario == "pending" or not pause():
            return
        self.set_condition(ns, name, "Created", "PyTorchJobCreated", f"PyTorchJob {name} is created.")
        if not pause():
            return
        if scenario in ("unschedulable", "image_pull"):
            self.pending_pod(ns, name, scenario)
            return
        self.start_container(ns, name)
        self.set_condition(ns, name, "Running", "PyTorchJobRunning", f"PyTorchJob {ns}/{name} is running.")
        for line in LOG_LINES[:2]:
            if not pause(0.5):
                return
            self.log(ns, name, line)
        if scenario == "hang":
            return
        if scenario == "restart":
            if not pause():
                return
            last = self.end_container(ns, name, 137, "OOMKilled")
            self.set_condition(ns, name, "Restarting", "PyTorchJobRestarting",
                               f"PyTorchJob {name} is restarting because 1 Master replica(s) failed.")
            if not pause():
                return
            self.start_container(ns, name, restarts=1, last_state=last)
            self.set_condition(ns, name, "Running", "PyTorchJobRunning", f"PyTorchJob {ns}/{name} is running.")
            for line in RESTART_LINES:
                if not pause(0.5):
                    return
                self.log(ns, name, line)
        else:
            self.log(ns, name, LOG_LINES[2])
        if not pause():
            return
        if scenario == "fail":
            self.log(ns, name, f"error: {FAIL_MESSAGE}")
            self.end_container(ns, name, 1, FAIL_MESSAGE)
            self.set_condition(ns, name, "Failed", "PyTorchJobFailed",
                               f"PyTorchJob {ns}/{name} has failed because 1 Master replica(s) failed.")
            return
        with self.lock:
            job = json.loads(json.dumps(self.jobs.get((ns, name)) or {}))
        for hook in self.on_success:
            hook(job)
        self.end_container(ns, name, 0)
        self.set_condition(ns, name, "Succeeded", "PyTorchJobSucceeded",
                           f"PyTorchJob {ns}/{name} successfully completed.")


class _Handler(BaseHTTPRequestHandler):
    state: FakeK8s
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    # ------------------------------------------------------------------ plumbing

    def _json(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_chunked(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> bool:
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
            return True
        except OSError:
            return False

    def _end_chunked(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _rejected(self, verb: str) -> bool:
        if verb in self.state.reject:
            code, reason = self.state.reject[verb]
            self._json(code, _status(code, reason, f"{self.state.resource} is forbidden: {verb} ({reason})"))
            return True
        return False

    # ------------------------------------------------------------------ verbs

    def do_POST(self):
        url = urlparse(self.path)
        self.state.requests.append(("POST", self.path))
        m = self.state.jobs_re.match(url.path)
        if not m or m.group(2):
            return self._json(404, _status(404, "NotFound", "the server could not find the requested resource"))
        if self._rejected("create"):
            return
        ns, body = m.group(1), self._body()
        name = body.get("metadata", {}).get("name", "")
        with self.state.lock:
            exists = (ns, name) in self.state.jobs
        if exists:
            return self._json(409, _status(409, "AlreadyExists",
                                           f'{self.state.resource} "{name}" already exists'))
        obj = self.state.add_job(ns, body)
        self._json(201, obj)

    def do_DELETE(self):
        url = urlparse(self.path)
        self.state.requests.append(("DELETE", self.path))
        m = self.state.jobs_re.match(url.path)
        if not m or not m.group(2):
            return self._json(404, _status(404, "NotFound", "not found"))
        if self._rejected("delete"):
            return
        self._body()
        job = self.state.delete_job(m.group(1), m.group(2))
        if job is None:
            return self._json(404, _status(404, "NotFound", f'{self.state.resource} "{m.group(2)}" not found'))
        self._json(200, job)

    def do_GET(self):
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.state.requests.append(("GET", self.path))
        m = self.state.jobs_re.match(url.path)
        if m:
            ns, name = m.groups()
            if name:
                if self._rejected("get"):
                    return
                with self.state.lock:
                    job = self.state.jobs.get((ns, name))
                    job = json.loads(json.dumps(job)) if job else None
                if job is None:
                    return self._json(404, _status(404, "NotFound", f'{self.state.resource} "{name}" not found'))
                return self._json(200, job)
            if query.get("watch") in ("true", "1", "True"):
                return self._watch(ns, query)
            with self.state.lock:
                items = [json.loads(json.dumps(j)) for (n, _), j in self.state.jobs.items() if n == ns]
                rv = str(self.state.rv)
            return self._json(200, {"apiVersion": self.state.api_version, "kind": f"{self.state.kind_name}List",
                                    "metadata": {"resourceVersion": rv}, "items": items})
        m = POD_LIST.match(url.path)
        if m:
            want = dict(p.split("=", 1) for p in query.get("labelSelector", "").split(",") if "=" in p)
            with self.state.lock:
                items = [json.loads(json.dumps(p)) for (n, _), p in self.state.pods.items() if n == m.group(1)
                         and all(p["metadata"]["labels"].get(k) == v for k, v in want.items())]
            return self._json(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
        m = PODS.match(url.path)
        if m:
            ns, pod, is_log = m.groups()
            if is_log:
                return self._log(ns, pod, query)
            with self.state.lock:
                obj = self.state.pods.get((ns, pod))
                obj = json.loads(json.dumps(obj)) if obj else None
            if obj is None:
                return self._json(404, _status(404, "NotFound", f'pods "{pod}" not found'))
            return self._json(200, obj)
        self._json(404, _status(404, "NotFound", "the server could not find the requested resource"))

    def _watch(self, ns: str, query: dict) -> None:
        with self.state.lock:
            error = self.state.watch_errors.pop(0) if self.state.watch_errors else None
            if error:
                self.state.watch_errors_sent.append(error)
        if error:
            how, code = error
            reason, message = (("Expired", f"too old resource version: {query.get('resourceVersion', '')} "
                                           f"({self.state.rv})") if code == 410
                               else ("InternalError", "etcdserver: request timed out"))
            if how == "http":
                return self._json(code, _status(code, reason, message))
            self._start_chunked("application/json")
            self._chunk(json.dumps({"type": "ERROR", "object": _status(code, reason, message)}).encode() + b"\n")
            return self._end_chunked()
        selector = query.get("fieldSelector", "")
        want = selector.split("=", 1)[1] if selector.startswith("metadata.name=") else None
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 30)
        state = self.state
        self._start_chunked("application/json")
        with state.lock:
            if query.get("resourceVersion"):
                since = int(query["resourceVersion"])
            else:  # no version: the current objects first, as ADDED
                since = state.rv
                for (n, name), job in state.jobs.items():
                    if n == ns and want in (None, name):
                        if not self._chunk(json.dumps({"type": "ADDED", "object": job}).encode() + b"\n"):
                            return
        while True:
            with state.lock:
                pending = [e for e in state.events if e[0] > since and e[1] == ns
                           and want in (None, e[3]["metadata"]["name"])]
                if not pending:
                    left = deadline - time.monotonic()
                    if left <= 0 or state._stopping:
                        break
                    state.lock.wait(min(left, 0.2))
                    continue
            for rv, _, kind, obj in pending:
                since = rv
                if not self._chunk(json.dumps({"type": kind, "object": obj}).encode() + b"\n"):
                    return
        self._end_chunked()

    def _log(self, ns: str, pod: str, query: dict) -> None:
        state = self.state
        key = (ns, pod)
        with state.lock:
            obj = state.pods.get(key)
            if obj is None:
                return self._json(404, _status(404, "NotFound", f'pods "{pod}" not found'))
            status = obj["status"]["containerStatuses"][0]
            restarts = status["restartCount"]
        follow = query.get("follow") in ("true", "1", "True")
        self._start_chunked("text/plain")
        sent = 0
        while True:
            with state.lock:
                obj = state.pods.get(key)
                lines = state.logs.get(key, {}).get(restarts, [])
                new = lines[sent:]
                current = obj is not None and obj["status"]["containerStatuses"][0]["restartCount"] == restarts
                running = current and "running" in obj["status"]["containerStatuses"][0]["state"]
                if not new and follow and running and not state._stopping:
                    state.lock.wait(0.2)
                    continue
            for line in new:
                if not self._chunk(line.encode() + b"\n"):
                    return
            sent += len(new)
            if not follow or not running:
                break
        self._end_chunked()
