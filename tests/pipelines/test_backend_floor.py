"""The KFP backend floor (pipelines/backend_floor.py): read from what a package uses, stated in the README."""
from __future__ import annotations

from pathlib import Path

import yaml

from cai_pipelines.backend_floor import backend_verdict, for_older_backends, minimum_backend, parse_version

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "pipeline.yaml"
README = Path(__file__).resolve().parents[2] / "README.md"


def _golden() -> list[dict]:
    return list(yaml.safe_load_all(GOLDEN.read_text()))


def _package(executor: dict, retries: bool = False) -> list[dict]:
    spec = {"pipelineInfo": {"name": "p"}, "root": {"dag": {"tasks": {"a": {"retryPolicy": {"maxRetryCount": 1}}
                                                                       if retries else {"a": {}}}}}}
    return [spec, {"platforms": {"kubernetes": {"deploymentSpec": {"executors": {"exec-a": executor}}}}}]


def test_the_shipped_package_needs_kfp_2_5_and_the_readme_says_so():
    floor, what = minimum_backend(_golden())
    assert floor == "2.5.0"
    assert "task retries (retryPolicy)" in what and "secretNameParameter (Secrets as env)" in what
    assert f"KFP backend {floor}" in README.read_text()


def test_the_floor_follows_the_newest_field_used():
    assert minimum_backend(_package({"nodeSelector": {"labels": {"a": "b"}}})) == ("2.0.0", ["node selectors"])
    assert minimum_backend(_package({"emptyDirMounts": [{"volumeName": "shm"}]}))[0] == "2.3.0"
    assert minimum_backend(_package({"genericEphemeralVolume": [{"volumeName": "models"}]})) == \
        ("2.2.0", ["genericEphemeralVolume (model staging volume)"])
    assert minimum_backend(_package({"emptyDirMounts": [{}]}, retries=True)) == \
        ("2.5.0", ["task retries (retryPolicy)"])
    nested = _package({})
    nested[0]["components"] = {"comp-condition-1": {"dag": {"tasks": {"b": {"retryPolicy": {"maxRetryCount": 2}}}}}}
    assert minimum_backend(nested)[0] == "2.5.0"  # a retried task inside a dsl.If counts too
    mentioned = _package({})
    mentioned[0]["pipelineInfo"]["description"] = "no retryPolicy here"  # a word in a text is no retry
    assert minimum_backend(mentioned)[0] == "2.0.0"
    optional = _package({"secretAsEnv": [{"secretName": "s", "optional": False}]})
    assert minimum_backend(optional) == ("2.15.0", ["optional on Secrets as env"])
    assert for_older_backends(optional) == 1 and minimum_backend(optional)[0] == "2.0.0"
    kept = _package({"secretAsEnv": [{"secretName": "s", "optional": True}]})  # a real choice stays
    assert for_older_backends(kept) == 0 and minimum_backend(kept)[0] == "2.15.0"


def test_the_golden_package_has_no_optional_left():
    assert for_older_backends(_golden()) == 0


def test_versions_and_verdicts():
    assert parse_version("2.5.0") == (2, 5, 0) and parse_version("v2.14.3") == (2, 14, 3)
    assert parse_version("2.15.0-rc.1") == (2, 15, 0) and parse_version("2.4") == (2, 4, 0)
    assert parse_version("0c4c2a1f") is None and parse_version(None) is None
    package = _golden()
    assert backend_verdict("2.5.0", package)[0] is True
    ok, why = backend_verdict("2.4.9", package)
    assert ok is False and "is 2.4.9; this package needs KFP backend 2.5.0 or later" in why
    ok, why = backend_verdict("unknown", package)
    assert ok is None and "did not say its release" in why and "2.5.0" in why
