"""The oldest Kubeflow Pipelines backend that runs a compiled package, read from what the package uses.

The KFP driver parses each task's Kubernetes executor config strictly (protojson, no unknown fields), so a
backend older than a field the SDK wrote refuses the whole run: ``failed to unmarshal Kubernetes config,
error: unknown field "optional" in kfp_kubernetes.SecretAsEnv`` (kubeflow/pipelines#12495). `FIELD_SINCE`
names, for each field cai's platform settings write, the first backend release whose driver reads it, from
the history of kubernetes_platform/proto/kubernetes_executor_config.proto and backend/src/v2 (the commit of
each is in the comment). `minimum_backend(package)` is the highest of them among the fields one package
uses, so the floor moves with the code, never with a note in the README.

`for_older_backends(package)` drops what a backend may not know and need not be told: ``optional: false``
on a Secret as env, the driver's default when the field is absent (kfp-kubernetes 2.15+ writes it always;
the backend reads it from 2.15.0). Without that, the floor would be 2.15.0 instead of 2.5.0.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

#: (where in an executor's Kubernetes config, field) -> (first KFP backend release that reads it, what it is)
FIELD_SINCE: dict[tuple[str, str], tuple[tuple[int, int, int], str]] = {
    ("", "nodeSelector"): ((2, 0, 0), "node selectors"),
    ("", "podMetadata"): ((2, 0, 0), "pod labels"),
    ("", "activeDeadlineSeconds"): ((2, 1, 0), "pod timeouts"),  # b734420652, #10481
    ("", "tolerations"): ((2, 1, 0), "tolerations"),
    ("", "fieldPathAsEnv"): ((2, 1, 0), "fieldPathAsEnv (pod name and uid as env)"),  # b9ae0951e9, #10485
    ("", "emptyDirMounts"): ((2, 3, 0), "emptyDirMounts (/dev/shm, model staging)"),  # 10aaf43136, #10892
    ("", "genericEphemeralVolume"): ((2, 2, 0), "genericEphemeralVolume (model staging volume)"),  # 3fb76a8e15
    ("secretAsEnv", "secretNameParameter"): ((2, 5, 0), "secretNameParameter (Secrets as env)"),  # 7838009538
    ("imagePullSecret", "secretNameParameter"): ((2, 5, 0), "secretNameParameter (image pull secrets)"),
    ("secretAsEnv", "optional"): ((2, 15, 0), "optional on Secrets as env"),  # 55ec8469d5, #12216
}
#: Task retries (retryPolicy) on the Argo Workflows backend: 2.5.0 (#11673, execution-level retry).
RETRIES_SINCE = ((2, 5, 0), "task retries (retryPolicy)")


def _version(v: tuple[int, int, int]) -> str:
    return ".".join(map(str, v))


def _executors(package: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    for doc in package:
        kubernetes = ((doc or {}).get("platforms") or {}).get("kubernetes") or {}
        executors = (kubernetes.get("deploymentSpec") or {}).get("executors")
        if executors:
            return list(executors.values())
    return []


def _tasks(spec: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """Every task of a pipeline spec: the root DAG's and each sub-DAG's (a dsl.If, a ParallelFor)."""
    for component in [spec.get("root") or {}, *(spec.get("components") or {}).values()]:
        yield from ((component.get("dag") or {}).get("tasks") or {}).values()


def _uses_retries(package: Iterable[dict[str, Any]]) -> bool:
    return any("retryPolicy" in task for doc in package if doc and "pipelineInfo" in doc for task in _tasks(doc))


def minimum_backend(package: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The oldest backend release that runs this package (the YAML documents), and what makes it so."""
    need: dict[str, tuple[int, int, int]] = {}
    for executor in _executors(package):
        for key, value in executor.items():
            if ("", key) in FIELD_SINCE:
                since, what = FIELD_SINCE[("", key)]
                need[what] = since
            for item in value if isinstance(value, list) else [value]:
                for field in item if isinstance(item, dict) else ():
                    if (key, field) in FIELD_SINCE:
                        since, what = FIELD_SINCE[(key, field)]
                        need[what] = since
    if _uses_retries(package):
        need[RETRIES_SINCE[1]] = RETRIES_SINCE[0]
    if not need:
        return "2.0.0", []
    floor = max(need.values())
    return _version(floor), sorted(what for what, since in need.items() if since == floor)


def for_older_backends(package: list[dict[str, Any]]) -> int:
    """Drop ``optional: false`` from every Secret as env (in place); return how many were dropped."""
    dropped = 0
    for executor in _executors(package):
        for ref in executor.get("secretAsEnv") or []:
            if ref.get("optional") is False:
                del ref["optional"]
                dropped += 1
    return dropped


def parse_version(text: str | None) -> tuple[int, int, int] | None:
    """'2.5.0', 'v2.14.3', '2.15.0-rc.1' -> (2, 5, 0); None for a commit sha or nothing."""
    match = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", (text or "").strip())
    return (int(match[1]), int(match[2]), int(match[3] or 0)) if match else None


def backend_verdict(tag: str | None, package: list[dict[str, Any]]) -> tuple[bool | None, str]:
    """(True, note) when the backend's release `tag` runs the package, (False, why not) when it is too old,
    (None, note) when the backend did not say its release."""
    floor, what = minimum_backend(package)
    seen = parse_version(tag)
    needs = f"KFP backend {floor} or later ({', '.join(what) or 'nothing newer'})"
    if seen is None:
        return None, f"the KFP backend did not say its release (healthz tag_name {tag!r}); this package needs {needs}"
    if seen < parse_version(floor):
        return False, f"the KFP backend is {_version(seen)}; this package needs {needs}"
    return True, f"KFP backend {_version(seen)} runs this package (needs {floor} or later)"
