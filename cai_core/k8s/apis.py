"""Which training API a cluster serves, read from the Kubernetes discovery API, and the launcher that fits.

`served_training_apis(kube_context)` asks ``GET /apis/<group>/<version>`` (the discovery document
every authenticated user may read) for each API a `train.launcher` can use:

* ``pytorchjob``: ``kubeflow.org/v1`` ``pytorchjobs``, the training-operator v1;
* ``trainjob``: ``trainer.kubeflow.org/v1alpha1`` ``trainjobs``, Kubeflow Trainer v2.

The group being served is not enough: every Kubeflow install serves ``kubeflow.org/v1`` (Profiles,
Notebooks), so the resource must be listed in it. The cluster is the current kubeconfig context
(``--kube-context`` for another), or the pod's own service account inside a cluster.

`advice(launcher, served)` turns the answer into preflight lines: what is served, which launcher
to use, and a warning when the config's launcher asks for an API the cluster does not serve.
`ClusterUnreachable` says, in one line, why nothing could be asked (no kubeconfig, no answer, not
allowed); the caller prints it and goes on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainingApi:
    launcher: str
    group: str
    version: str
    plural: str
    what: str

    @property
    def name(self) -> str:
        return f"{self.group}/{self.version} {self.plural} ({self.what})"


#: The training APIs a `train.launcher` value needs, in the order they are reported.
TRAINING_APIS = (
    TrainingApi("pytorchjob", "kubeflow.org", "v1", "pytorchjobs", "training-operator v1"),
    TrainingApi("trainjob", "trainer.kubeflow.org", "v1alpha1", "trainjobs", "Kubeflow Trainer v2"),
)
BY_LAUNCHER = {api.launcher: api for api in TRAINING_APIS}


class ClusterUnreachable(Exception):
    """The discovery API could not be asked; the message is one line saying why."""


def api_client(kube_context: str | None = None):
    """A kubernetes ApiClient for the in-cluster service account (in a pod, no context asked for) or the
    kubeconfig (KUBECONFIG, read now: the client reads it only once, at import). One try per call."""
    try:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException
    except ImportError:
        raise ClusterUnreachable("the kubernetes client is not installed (pip install kubernetes)") from None
    conf = client.Configuration()
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and kube_context is None:
            config.load_incluster_config(client_configuration=conf)
        else:
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None, context=kube_context,
                                    client_configuration=conf)
    except (ConfigException, OSError, TypeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ClusterUnreachable(f"no Kubernetes cluster configured ({first})") from None
    conf.retries = False  # preflight fails fast
    return client.ApiClient(conf)


def served_training_apis(kube_context: str | None = None, timeout_s: float = 5.0) -> dict[str, bool]:
    """launcher -> whether the cluster serves its API (see TRAINING_APIS). Raises ClusterUnreachable."""
    from kubernetes.client.rest import ApiException

    api = api_client(kube_context)
    served: dict[str, bool] = {}
    try:
        for t in TRAINING_APIS:
            try:
                doc = api.call_api(f"/apis/{t.group}/{t.version}", "GET", header_params={"Accept": "application/json"},
                                   auth_settings=["BearerToken"], response_type="object",
                                   _return_http_data_only=True, _request_timeout=timeout_s)
            except ApiException as exc:
                if exc.status == 404:  # the group/version is not served at all
                    served[t.launcher] = False
                    continue
                if exc.status in (401, 403):
                    raise ClusterUnreachable(f"the Kubernetes API refused the discovery request (HTTP {exc.status}): "
                                             "check the kubeconfig's credentials (--kube-context)") from None
                raise ClusterUnreachable(f"the Kubernetes API answered HTTP {exc.status} on /apis/{t.group}/"
                                         f"{t.version}") from None
            except Exception as exc:  # urllib3 connection errors and timeouts
                raise ClusterUnreachable(f"the Kubernetes API at {api.configuration.host} did not answer "
                                         f"({type(exc).__name__})") from None
            resources = (doc.get("resources") if isinstance(doc, dict) else None) or []
            served[t.launcher] = any(r.get("name") == t.plural for r in resources if isinstance(r, dict))
    finally:
        api.close()
    return served


def advice(launcher: str, served: dict[str, bool]) -> list[str]:
    """Preflight lines for the config's `train.launcher` on a cluster that serves `served`.

    The first line says what is served; the second which launcher to use; a last line starting with
    ``WARNING:`` when `launcher` needs an API the cluster does not serve."""
    lines = ["training APIs: " + "; ".join(f"{t.name} {'served' if served.get(t.launcher) else 'not served'}"
                                          for t in TRAINING_APIS)]
    have = [t.launcher for t in TRAINING_APIS if served.get(t.launcher)]
    if len(have) == 2:
        lines.append("use train.launcher: trainjob (Kubeflow Trainer v2) or pytorchjob (training-operator v1); "
                     f"the config has {launcher}")
    elif have:
        lines.append(f"use train.launcher: {have[0]}; the config has {launcher}")
    else:
        lines.append("neither is served: train.launcher: local trains inside the step's own pod (one node); "
                     "install Kubeflow Trainer (trainjob) or the training-operator (pytorchjob) for multi-node jobs")
    wanted = BY_LAUNCHER.get(launcher)
    if wanted is not None and not served.get(launcher):
        instead = f"set train.launcher: {have[0]}" if have else "set train.launcher: local, or install it"
        lines.append(f"WARNING: train.launcher is {launcher}, but the cluster does not serve {wanted.name}: the sft "
                     f"and dpo steps would fail to create their jobs; {instead} (--set train.launcher={have[0] if have else 'local'})")
    return lines
