"""The pipeline on a Kubernetes cluster: platform settings, `cai compile`, `cai submit`.

`platform(cfg, run_id)` returns the function `build_pipeline` calls on every
task with its step name. It applies, from `cfg.cluster` (see cai_core/config/cluster.py):

* the image: `task.set_container_image(...)` (a public KFP API that overrides
  the component's `base_image` for this task only), so the registry and tag
  come from the config at compile time, without environment variables, module
  reloads or a fresh interpreter; generation steps get the vLLM image, the
  training launchers the trainer image, every other step the core image;
* pod labels `app=cai` and `cai/stage` (the step name). The package names no run: the run root is
  the pipeline parameter `run_root` (default `<output_dir>/{run_id}`, filled in at run time with KFP's
  run id, see cai_pipeline.build_pipeline), so the pods carry no `cai/run-id` label (a label cannot
  take a run-time value); the PyTorchJobs, created at run time, do;
* generation steps (revise, pairs, gate, evaluate and their preference-round copies): `nvidia.com/gpu` x
  `vllm.gpus`, the H100 node selector and tolerations, a memory-backed /dev/shm, an emptyDir (or, with
  `cluster.generation_stage_volume: ephemeral`, a generic ephemeral volume) of `cluster.generation_stage_size`
  at `vllm.stage_dir`, where an s3:// model (a trained one: its weights) is staged, CPU and memory.
  The vLLM layout is not passed as env: the step reads the `vllm` section from its payload, the same
  section whose `gpus` sets the pod's GPU limit here, so the two cannot disagree;
* training steps (sft, dpo: small launcher pods): CPU and memory, and what the
  PyTorchJob launcher needs as env: CAI_TRAINER_IMAGE, CAI_CLUSTER_CONFIG (the
  cluster section as JSON: node selector, tolerations, shm, secret refs) and
  the pod's name and uid (CAI_POD_NAME, CAI_POD_UID) for an owner reference;
* Secrets as env, each only where it is read: S3 keys everywhere, the teacher
  key for clean/judge/evaluate, the HF token where the policy model is loaded and where hf: data sets
  are read (prepare, discover; sft reads sft.helpful_data in its launcher pod);
* retries with exponential backoff on transient steps, pod deadlines, KFP
  caching off for the steps listed in no_cache_steps and for those that read the user's data sets
  (prepare, discover: DATA_STEPS), image pull secrets.

The config payloads stay per step (cai_core.runtime.engine.payload): the cluster
section reaches no payload, so changing a toleration does not invalidate
cached data steps.

Preflight (`preflight_static`, `check_kfp_host`, `check_secrets`) runs before
anything is compiled or submitted; each problem is one `CaiError`.
"""
from __future__ import annotations

import contextlib
import functools
import datetime as _dt
import io
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from cai_core import storage
from cai_core.config.cluster import ClusterConfig
from cai_core.config.run import RunConfig
from cai_core.errors import CaiError, ConfigError
from cai_core.k8s.validate import is_label_value
from cai_core.runtime.steps import GENERATION_STEPS, STEP_NAMES, TRAINING_STEPS, named
from cai_pipelines.backend_floor import backend_verdict, for_older_backends

#: Which steps read which Secret (least exposure: a pod gets only the keys it uses): the teacher's key
#: where the teacher may be called, the HF token where model weights are loaded.
TEACHER_STEPS = named(lambda step: step.needs_teacher)
MODEL_STEPS = named(lambda step: step.loads_model)
#: ... and the HF token also where hf: data sets are read (prepare, discover).
HF_STEPS = named(lambda step: step.loads_model or step.reads_datasets)
#: Steps KFP never serves from its cache, whatever no_cache_steps says: they read the user's data sets, whose
#: content may change under an unchanged config (a file rewritten in place, a new commit of an hf: dataset); the
#: engine's fingerprint of each source (cai_core.data.inputs.fingerprint) then decides whether to reuse the output.
DATA_STEPS = named(lambda step: step.reads_datasets)
SECRET_ENV = {"aws_access_key_id": "AWS_ACCESS_KEY_ID", "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
              "hf_token": "HF_TOKEN"}
LABEL_APP, LABEL_STAGE = "app", "cai/stage"
#: Where the KFP SDK's in-cluster credentials read a projected service account token.
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"


def secret_env(cfg: RunConfig, step: str) -> dict[str, tuple[str, str]]:
    """Env var -> (secret, key) for one step."""
    refs = cfg.cluster.secrets
    out: dict[str, tuple[str, str]] = {}
    for name, env in SECRET_ENV.items():
        ref = getattr(refs, name)
        if ref is None or (name == "hf_token" and step not in HF_STEPS):
            continue
        out[env] = (ref.secret, ref.key)
    if refs.openai_api_key is not None and step in TEACHER_STEPS:
        out[cfg.teacher.api_key_env] = (refs.openai_api_key.secret, refs.openai_api_key.key)
    return out


def platform(cfg: RunConfig) -> Callable:
    """The `platform(task, step)` hook of `build_pipeline` for this config (no run id: see the module doc)."""
    from kfp import kubernetes

    c: ClusterConfig = cfg.cluster

    def apply(task, step: str):
        # The step's kind in cai_core.runtime.steps decides its image and resources (generation, training, CPU).
        task.set_container_image(c.step_image(step))
        for key, value in ((LABEL_APP, "cai"), (LABEL_STAGE, step)):
            kubernetes.add_pod_label(task, key, value)
        task.set_caching_options(enable_caching=step not in c.no_cache_steps and step not in DATA_STEPS)
        if step in c.retry_steps and c.retries > 0:
            task.set_retry(num_retries=c.retries, backoff_duration=f"{c.retry_backoff_s}s",
                           backoff_factor=c.retry_backoff_factor, backoff_max_duration=f"{c.retry_backoff_max_s}s")
        if c.timeout_for(step) > 0:
            kubernetes.set_timeout(task, c.timeout_for(step))
        if c.image_pull_policy != "IfNotPresent":
            kubernetes.set_image_pull_policy(task, c.image_pull_policy)
        if c.image_pull_secrets:
            kubernetes.set_image_pull_secrets(task, list(c.image_pull_secrets))

        env = {"CAI_STEP": step, **c.env}
        by_secret: dict[str, dict[str, str]] = {}
        for var, (secret, key) in secret_env(cfg, step).items():
            by_secret.setdefault(secret, {})[key] = var
        for secret, mapping in sorted(by_secret.items()):
            kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=mapping)
        if c.config_map:
            kubernetes.use_config_map_as_volume(task, config_map_name=c.config_map, mount_path=c.config_map_mount)

        if step in GENERATION_STEPS:
            task.set_accelerator_type(c.gpu_resource)
            task.set_accelerator_limit(cfg.vllm.gpus)
            task.set_cpu_request(c.generation_cpu)
            task.set_memory_request(c.generation_memory)
            task.set_memory_limit(c.generation_memory)
            for key, value in sorted(c.node_selector.items()):
                kubernetes.add_node_selector(task, label_key=key, label_value=value)
            for t in c.tolerations:
                kubernetes.add_toleration(task, key=t.key or None, operator=t.operator, value=t.value or None,
                                          effect=t.effect or None, toleration_seconds=t.toleration_seconds)
            kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                                       size_limit=c.shm_size)
            # s3:// models are staged here before `vllm serve`. KFP cannot set an ephemeral-storage request, so
            # an emptyDir is only size-limited (the kubelet evicts past it); `ephemeral` requests the space as a
            # generic ephemeral volume (a PVC made and deleted with the pod) that the scheduler must find.
            if c.generation_stage_volume == "ephemeral":
                kubernetes.add_ephemeral_volume(task, volume_name="models", mount_path=cfg.vllm.stage_dir,
                                                access_modes=["ReadWriteOnce"], size=c.generation_stage_size,
                                                storage_class_name=c.generation_stage_storage_class or None)
            else:
                kubernetes.empty_dir_mount(task, volume_name="models", mount_path=cfg.vllm.stage_dir,
                                           size_limit=c.generation_stage_size)
        else:
            task.set_cpu_request(c.cpu)
            task.set_memory_request(c.memory)
            task.set_memory_limit(c.memory)
            for key, value in sorted(c.cpu_node_selector.items()):
                kubernetes.add_node_selector(task, label_key=key, label_value=value)
            for t in c.cpu_tolerations:
                kubernetes.add_toleration(task, key=t.key or None, operator=t.operator, value=t.value or None,
                                          effect=t.effect or None, toleration_seconds=t.toleration_seconds)
        if step in TRAINING_STEPS:
            env.update({"CAI_TRAINER_IMAGE": c.image("trainer"), "CAI_CLUSTER_CONFIG": c.to_json()})
            kubernetes.use_field_path_as_env(task, env_name="CAI_POD_NAME", field_path="metadata.name")
            kubernetes.use_field_path_as_env(task, env_name="CAI_POD_UID", field_path="metadata.uid")
        for key, value in sorted(env.items()):
            task.set_env_variable(key, value)
        return task

    return apply


# -- preflight ---------------------------------------------------------------------------

def new_run_id(cfg: RunConfig) -> str:
    """A fresh run id for a submission: date, time and a hash of the config."""
    if cfg.run_id:
        return cfg.run_id
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{cfg.fingerprint()[:6]}"


def preflight_static(cfg: RunConfig, run_id: str | None) -> None:
    """Checks that need no cluster. (Image references, the GPU layout, Secret names and keys were
    already checked when the config was loaded; this re-runs them for configs built in code.)
    `run_id` None: the package names no run (each run takes its KFP run id)."""
    cfg.cluster.validate()
    for ref in cfg.cluster.secrets.refs().values():
        ref.validate()
    if run_id is not None and not (run_id and len(run_id) <= 63 and is_label_value(run_id)):
        raise ConfigError(f"run_id: {run_id!r} cannot label the run's pods: use at most 63 letters, digits, "
                          "'-', '_' or '.', starting and ending with a letter or digit")
    if not storage.is_remote(cfg.output_dir):
        raise ConfigError(f"output_dir: {cfg.output_dir!r} is a local path; on a cluster every step runs in its "
                          "own pod, so use an s3://bucket/prefix")
    if cfg.teacher.backend == "openai" and cfg.teacher.base_url is None and cfg.cluster.secrets.openai_api_key is None:
        raise ConfigError("cluster.secrets.openai_api_key: teacher.backend is openai (the OpenAI API) but no Secret "
                          "holds the key; set {secret: <name>, key: <key>}")


class KfpUnreachable(OSError):
    """The KFP API did not answer (its reason: refused, unknown host, no answer in time, a TLS error)."""


@dataclass
class Http:
    """How to reach the KFP API (the options kfp.Client takes), and the preflight's two questions.

    Both go through kfp.Client: its generated REST APIs (`healthz`, `experiments`), on the client's own
    urllib3 pool with three changes a preflight needs, and which kfp.Client (2.17) does not offer. Its REST
    client follows redirects, so a Dex login page comes back as a 200 HTML body that fails to deserialize: here a
    redirect is an answer. `get_kfp_healthz` retries every error five times, 5 s apart, logging a traceback
    each time, then raises TimeoutError without the status: here there are no retries. `list_experiments`
    takes no timeout: here each request has `timeout_s`. Bodies are read raw, so healthz's `tag_name` (the
    backend's release, which the generated model drops) is kept. So a login page, a rejected token, a wrong
    namespace and a dead host are told apart (tests/cli/test_submit_cli.py)."""

    host: str
    token: str | None = None
    cookies: str | None = None
    ssl_ca_cert: str | None = None
    verify_ssl: bool = True
    proxy: str | None = None
    timeout_s: float = 5.0
    _client: object = field(default=None, init=False, repr=False, compare=False)

    def client(self):
        """A kfp.Client for this host and credentials whose requests neither follow redirects nor retry."""
        if self._client is None:
            import warnings

            import kfp

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "only works with Kubeflow Pipeline v2.0.0-beta.2+"
                # Given the literal default namespace 'kubeflow' (and no ~/.config/kfp/context.json naming one),
                # kfp.Client() itself calls get_kfp_healthz: five tries, no deadline. Any other name skips that; the
                # preflight passes its namespace to each call, so the client's own is never used.
                client = kfp.Client(host=self.host, namespace="cai-preflight", existing_token=self.token,
                                    cookies=self.cookies, proxy=self.proxy, ssl_ca_cert=self.ssl_ca_cert,
                                    verify_ssl=self.verify_ssl)
            pool = client._healthz_api.api_client.rest_client.pool_manager  # shared by every API of the client
            pool.request = functools.partial(pool.request, redirect=False, retries=False)
            self._client = client
        return self._client

    def healthz(self) -> tuple[int, dict, bytes]:
        """GET /apis/v2beta1/healthz: (status, headers, body)."""
        return self._ask(lambda c, **kw: c._healthz_api.healthz_service_get_healthz(**kw))

    def experiments(self, namespace: str | None, display_name: str | None = None) -> tuple[int, dict, bytes]:
        """GET /apis/v2beta1/experiments (one page of one, in `namespace`, named `display_name` if given)."""
        flt = json.dumps({"predicates": [{"key": "display_name", "operation": "EQUALS",
                                          "string_value": display_name}]}) if display_name else None
        query = {k: v for k, v in (("namespace", namespace), ("filter", flt)) if v}
        return self._ask(lambda c, **kw: c._experiment_api.experiment_service_list_experiments(page_size=1, **query,
                                                                                               **kw))

    def _ask(self, call) -> tuple[int, dict, bytes]:
        import urllib3
        from kfp_server_api import ApiException

        try:
            # (connect, read): the generated REST client ignores a float timeout (it takes an int or a pair)
            deadline = (self.timeout_s, self.timeout_s)
            response = call(self.client(), _preload_content=False, _request_timeout=deadline)
            return response.status, dict(response.headers), response.read(65536)
        except ApiException as exc:
            if not exc.status:  # the generated client's wrapping of a TLS error
                raise KfpUnreachable(f"TLS error: {exc.reason}") from None
            body = exc.body if isinstance(exc.body, bytes) else str(exc.body or "").encode()
            return exc.status, dict(exc.headers or {}), body[:65536]
        except urllib3.exceptions.HTTPError as exc:
            raise KfpUnreachable(_urllib3_reason(exc)) from None


def _urllib3_reason(exc: Exception) -> str:
    import urllib3

    if isinstance(exc, (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError)) and \
            not isinstance(exc, urllib3.exceptions.NewConnectionError):
        return "no answer in time"
    if isinstance(exc, urllib3.exceptions.NameResolutionError):
        return "unknown host name"
    if isinstance(exc, urllib3.exceptions.SSLError):
        return f"TLS error: {exc}"
    text = str(exc)
    if "refused" in text.lower():
        return "connection refused"
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return f"the connection broke ({text[:120]})"
    return text[:200] or type(exc).__name__


def _reason(exc: BaseException) -> str:
    """Why a request got no answer (`Http` raises KfpUnreachable with it; any other OSError says its own)."""
    return str(exc) or type(exc).__name__


def _message(body: bytes) -> str:
    try:
        data = json.loads(body)
        return str(data.get("message") or data.get("error") or "")[:200]
    except (ValueError, AttributeError):
        return body.decode("utf-8", "replace").strip().splitlines()[0][:200] if body.strip() else ""


def check_kfp_host(http: Http, namespace: str | None) -> str:
    """Fail fast when the KFP API does not answer or rejects the credentials; return the API version seen."""
    host = http.host
    if not host.startswith(("http://", "https://")):
        raise CaiError(f"kfp host {host!r}: must start with http:// or https://")
    try:
        status, headers, body = http.healthz()
    except OSError as exc:
        raise CaiError(f"kfp host {host} does not answer ({_reason(exc)} within {http.timeout_s:g}s): check the URL "
                       "or start a port-forward (kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80); "
                       "nothing was submitted") from None
    _check_auth(http, status, headers, body, "/apis/v2beta1/healthz")
    if status != 200:
        raise CaiError(f"kfp host {host} answered HTTP {status} on /apis/v2beta1/healthz"
                       f"{': ' + _message(body) if _message(body) else ''}; is this the Kubeflow Pipelines API? "
                       "nothing was submitted")
    try:
        health = json.loads(body)
        version = health.get("tag_name") or health.get("commit_sha") or "unknown"
    except ValueError:
        raise CaiError(f"kfp host {host} answered /apis/v2beta1/healthz with something that is not JSON "
                       f"({_message(body)!r}); is this the Kubeflow Pipelines API? nothing was submitted") from None
    try:
        status, headers, body = http.experiments(namespace)
    except OSError as exc:
        raise CaiError(f"kfp host {host} stopped answering ({_reason(exc)}); nothing was submitted") from None
    _check_auth(http, status, headers, body, "/apis/v2beta1/experiments")
    if status >= 400:
        raise CaiError(f"kfp host {host} refused to list experiments in namespace {namespace!r} (HTTP {status}"
                       f"{': ' + _message(body) if _message(body) else ''}); nothing was submitted")
    return str(version)


def _check_auth(http: Http, status: int, headers: dict, body: bytes, path: str) -> None:
    host = http.host
    if status in (301, 302, 303, 307, 308):
        where = {k.lower(): v for k, v in headers.items()}.get("location", "?")
        raise CaiError(f"kfp host {host} redirected {path} to a login page ({where}): pass a token "
                       "(--existing-token, or --token-file) or a session cookie (--cookies); nothing was submitted")
    if status in (401, 403):
        detail = _message(body)
        if http.token or http.cookies:
            raise CaiError(f"kfp host {host} rejected the token (HTTP {status}{': ' + detail if detail else ''}); "
                           "get a fresh one and check it may use the namespace; nothing was submitted")
        raise CaiError(f"kfp host {host} needs credentials (HTTP {status}{': ' + detail if detail else ''}): pass "
                       "--existing-token, --token-file or --cookies; nothing was submitted")


def check_secrets(cfg: RunConfig, namespace: str, kube_context: str | None = None,
                  timeout_s: float = 5.0) -> str:
    """Check with the Kubernetes API that every referenced Secret key exists in `namespace`.

    Raises CaiError for a missing Secret or key. Returns a note saying what was checked; when no
    cluster is configured, answers, or lets us read Secrets, the names were only checked statically.
    """
    refs = cfg.cluster.secrets.refs()
    if not refs:
        return "no Secrets referenced"
    try:
        from kubernetes import client, config
        from kubernetes.client.rest import ApiException
        from kubernetes.config.config_exception import ConfigException
    except ImportError:
        return "the kubernetes client is not installed: Secret names checked statically only"
    conf = client.Configuration()
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and kube_context is None:
            config.load_incluster_config(client_configuration=conf)
        else:  # KUBECONFIG read now: the client reads it only once, at import
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None, context=kube_context,
                                    client_configuration=conf)
    except (ConfigException, OSError, TypeError) as exc:
        return f"no Kubernetes cluster configured ({str(exc).splitlines()[0][:120]}): Secret names checked statically only"
    conf.retries = False  # one try each: preflight must fail fast
    api = client.CoreV1Api(client.ApiClient(conf))
    seen: dict[str, dict | None] = {}
    missing: list[str] = []
    for field_name, ref in refs.items():
        if ref.secret not in seen:
            try:
                secret = api.read_namespaced_secret(ref.secret, namespace, _request_timeout=timeout_s)
                seen[ref.secret] = {**(secret.data or {}), **(secret.string_data or {})}
            except ApiException as exc:
                if exc.status == 404:
                    seen[ref.secret] = None
                elif exc.status in (401, 403):
                    return (f"not allowed to read Secrets in namespace {namespace} (HTTP {exc.status}): "
                            "Secret names checked statically only")
                else:
                    return f"the Kubernetes API answered HTTP {exc.status}: Secret names checked statically only"
            except Exception as exc:  # urllib3 connection errors and timeouts
                return f"the Kubernetes API did not answer ({type(exc).__name__}): Secret names checked statically only"
        data = seen[ref.secret]
        if data is None:
            missing.append(f"cluster.secrets.{field_name}: Secret {ref.secret!r} does not exist in namespace {namespace}")
        elif ref.key not in data:
            keys = ", ".join(sorted(data)) or "none"
            missing.append(f"cluster.secrets.{field_name}: Secret {ref.secret!r} in namespace {namespace} has no key "
                           f"{ref.key!r} (its keys: {keys})")
    if missing:
        raise CaiError("; ".join(missing) + "; nothing was submitted")
    return f"{len(refs)} Secret keys found in namespace {namespace}"


# -- compile and submit --------------------------------------------------------------------

@dataclass
class Compiled:
    path: Path
    #: The run id the package's run_root default names; "" = none (each run takes its KFP run id).
    run_id: str
    run_root: str
    images: dict[str, str]
    #: The package's YAML documents (PipelineSpec, PlatformSpec) as written.
    documents: list = field(default_factory=list)


def compile_pipeline(cfg: RunConfig, out_path: str | Path, run_id: str | None = None) -> Compiled:
    """Write the cluster pipeline YAML (PipelineSpec + PlatformSpec) for `cfg` to `out_path`.

    Without a run id (`run_id` and cfg.run_id empty) the run_root parameter defaults to
    `<output_dir>/{run_id}` and every run of the package is a new run; with one it defaults to
    `<output_dir>/<run id>` (a package that resumes that run each time it is run)."""
    from kfp import compiler

    from cai_pipelines.cai_pipeline import build_pipeline, default_run_root

    run_id = run_id or cfg.run_id or None
    preflight_static(cfg, run_id)
    cfg = cfg.replace(run_id=run_id or "")
    run_root = storage.join(cfg.output_dir, run_id) if run_id else default_run_root(cfg)
    pipeline = build_pipeline(cfg, run_root=run_root, platform=platform(cfg), pipeline_root=cfg.cluster.pipeline_root)
    out = Path(out_path)
    if out.parent and not out.parent.exists():
        raise CaiError(f"{out}: the directory {out.parent} does not exist")
    compiler.Compiler().compile(pipeline, str(out))
    text = out.read_text(encoding="utf-8")
    package = list(yaml.safe_load_all(text))
    if for_older_backends(package):  # KFP backends before 2.15 refuse `optional` (cai_pipelines.backend_floor)
        header = "".join(line for line in text.splitlines(keepends=True)[:200] if line.startswith("#"))
        out.write_text(header + yaml.safe_dump_all(package, sort_keys=False), encoding="utf-8")
    images = {step: cfg.cluster.step_image(step) for step in STEP_NAMES}
    return Compiled(out, run_id or "", run_root, images, package)


@dataclass
class Submitted:
    kfp_run_id: str | None
    run_id: str
    run_name: str
    run_root: str
    url: str | None
    notes: list[str]
    skipped: bool = False
    state: str | None = None


def read_token_file(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        raise CaiError(f"{path}: cannot read the token file ({exc.strerror})") from None


def submit(cfg: RunConfig, host: str, namespace: str | None = None, experiment: str | None = None,
           run_name: str | None = None, token: str | None = None, *, cookies: str | None = None,
           ssl_ca_cert: str | None = None, verify_ssl: bool = True, proxy: str | None = None,
           service_account: str | None = None, run_id: str | None = None, check_cluster_secrets: bool = True,
           kube_context: str | None = None, skip_existing: bool = False, wait: bool = False,
           wait_timeout_s: float = 0, connect_timeout_s: float = 5.0, log: Callable[[str], None] = lambda s: None,
           token_file: str | None = None, wait_poll_s: float | None = None,
           backend_release: str | None = None) -> Submitted:
    """Preflight, compile and create one KFP run. Nothing is submitted when any check fails. `token_file`: where
    `token` was read (re-read while waiting, see `wait_for_run`). `backend_release`: the KFP backend's release
    when the caller's own preflight read it (`cai submit`'s check_access): the KFP API is not asked again."""
    c = cfg.cluster
    namespace = namespace or c.namespace
    experiment = experiment or c.experiment
    run_id = run_id or new_run_id(cfg)
    run_name = run_name or run_id
    service_account = service_account if service_account is not None else c.service_account
    preflight_static(cfg, run_id)
    notes = []
    version = backend_release
    if version is None:
        http = Http(host=host, token=token, cookies=cookies, ssl_ca_cert=ssl_ca_cert, verify_ssl=verify_ssl,
                    proxy=proxy, timeout_s=connect_timeout_s)
        version = check_kfp_host(http, namespace)
        notes.append(f"kfp host {host} answers (api {version})")
    if check_cluster_secrets:
        notes.append(check_secrets(cfg, namespace, kube_context=kube_context, timeout_s=connect_timeout_s))
    for note in notes:
        log(note)

    import kfp

    def client_with(bearer: str | None):
        return kfp.Client(host=host, namespace=namespace, existing_token=bearer, cookies=cookies,
                          ssl_ca_cert=ssl_ca_cert, proxy=proxy, verify_ssl=verify_ssl)

    client = client_with(token)
    run_root = storage.join(cfg.output_dir, run_id)
    if skip_existing:
        existing = _find_run(client, experiment, namespace, run_name)
        if existing is not None:
            log(f"a run named {run_name} already exists ({existing}): not submitting again")
            return Submitted(existing, run_id, run_name, run_root, f"{host.rstrip('/')}/#/runs/details/{existing}",
                             notes, skipped=True)
    with tempfile.TemporaryDirectory() as tmp:
        # The package names no run; this run's identity is its run_root argument.
        compiled = compile_pipeline(cfg.replace(run_id=""), Path(tmp) / "pipeline.yaml")
        runs, verdict = backend_verdict(version, compiled.documents)
        if runs is False:
            raise CaiError(f"kfp host {host}: {verdict} (README: version floors); nothing was submitted")
        log(verdict)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # kfp prints its own links; we print ours
                result = client.create_run_from_pipeline_package(
                    str(compiled.path), arguments={"run_root": run_root}, run_name=run_name,
                    experiment_name=experiment, namespace=namespace, service_account=service_account or None)
        except Exception as exc:  # kfp_server_api.ApiException and connection errors
            status = getattr(exc, "status", None)
            body = getattr(exc, "body", None) or str(exc)
            raise CaiError(f"kfp host {host} did not accept the run (HTTP {status}): "
                           f"{_message(body.encode() if isinstance(body, str) else body) or body}") from None
    url = f"{host.rstrip('/')}/#/runs/details/{result.run_id}"
    submitted = Submitted(result.run_id, run_id, run_name, run_root, url, notes)
    if wait:
        submitted.state = wait_for_run(client_with, result.run_id, token, token_file, timeout_s=wait_timeout_s,
                                       poll_s=WAIT_POLL_S if wait_poll_s is None else wait_poll_s, log=log)
    return submitted


#: Seconds between two looks at the run while `cai submit --wait` waits.
WAIT_POLL_S = 30.0
#: The states in which a KFP run has ended (kfp_server_api V2beta1RuntimeState).
RUN_ENDED = ("SUCCEEDED", "SKIPPED", "FAILED", "CANCELED")


def wait_for_run(client_with: Callable, run_id: str, token: str | None, token_file: str | None, *,
                 timeout_s: float = 0, poll_s: float = 30.0, log: Callable[[str], None] = lambda s: None,
                 sleep: Callable[[float], None] | None = None, clock: Callable[[], float] = time.monotonic) -> str:
    """Poll the run until it ends; return its state. `client_with(token)` makes a kfp.Client.

    kfp.Client keeps the token it was made with, but a pod's projected token (the chart's, expirationSeconds
    7200) is rotated by the kubelet before it expires, while a `--wait` may last a day. So a token read from a
    file is read again at every poll and the client made anew when it changed. A token given as a string
    cannot be refreshed: it must outlive the wait (`kubectl create token --duration`)."""
    client = client_with(token)
    deadline = clock() + timeout_s if timeout_s else None
    while True:
        fresh = read_token_file(token_file) if token_file else None
        if fresh and fresh != token:
            token, client = fresh, client_with(fresh)
            log(f"kfp token: {token_file} was rotated; using the new one")
        try:
            state = str(getattr(client.get_run(run_id), "state", "") or "UNKNOWN").upper()
        except Exception as exc:  # kfp_server_api.ApiException and connection errors
            status = getattr(exc, "status", None)
            hint = (" (the token has expired: give a token file, which is re-read, or a longer-lived token)"
                    if status == 401 and not token_file else "")
            raise CaiError(f"waiting for run {run_id}: the KFP API answered HTTP {status}{hint}: "
                           f"{_message(str(getattr(exc, 'body', '') or exc).encode()) or exc}") from None
        if state in RUN_ENDED:
            return state
        if deadline is not None and clock() >= deadline:
            raise CaiError(f"run {run_id} is still {state} after --timeout {timeout_s:g} s of waiting; it goes on "
                           "in the cluster")
        (sleep or time.sleep)(poll_s)


def _find_run(client, experiment: str, namespace: str, run_name: str) -> str | None:
    try:
        exp = client.get_experiment(experiment_name=experiment, namespace=namespace)
    except Exception:
        return None  # no such experiment yet: no such run either
    flt = json.dumps({"predicates": [{"key": "display_name", "operation": "EQUALS", "string_value": run_name}]})
    response = client.list_runs(experiment_id=exp.experiment_id, namespace=namespace, page_size=1, filter=flt)
    runs = getattr(response, "runs", None) or []
    return runs[0].run_id if runs else None
