"""docs/submit.md stays true: its commands parse, its Python snippets run, its error messages are ours.

* every `cai ...` / `kubectl ...` line of its shell blocks (and each one inside ``$(...)``) names a
  real subcommand whose ``--help`` works, and every option it passes is one that subcommand has;
* each Python snippet runs against the stub KFP API (tests/kfp_stub.py): the token one with a
  bearer token, the Dex one through the stub's login form; the stub records the pipeline spec;
* each error and preflight line the doc quotes is what `cai submit` prints for that case.
"""
from __future__ import annotations

import re
import shlex
import shutil
import socket
import subprocess
from functools import lru_cache
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cai_core.cli.commands.submit import training_api_preflight
from cai_core.cli.main import cli
from cai_core.config.loading import load_cluster_run_config
from tests.kfp_stub import COOKIE, TOKEN, FakeDiscovery, FakeKFP, isolate, write_kubeconfig

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "submit.md").read_text(encoding="utf-8")
pytestmark = pytest.mark.filterwarnings("ignore:This client only works with Kubeflow Pipeline:FutureWarning")


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", DOC, re.S | re.M)


def shell_commands() -> list[list[str]]:
    """The `cai` / `kubectl` commands of the doc's sh blocks, as argument lists (``$(...)`` ones included)."""
    out = []
    for block in blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            inner = re.findall(r"\$\(([^()]*)\)", line)
            line = re.sub(r"\$\([^()]*\)", "SUBST", line)
            for command in [line.strip(), *inner]:
                if command.startswith(("cai ", "kubectl ")):
                    out.append(shlex.split(command))
    return out


def _flags(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("-") and a not in ("-", "--")]


def test_the_doc_has_what_the_tests_check():
    commands = shell_commands()
    assert {c[0] for c in commands} == {"cai", "kubectl"} and len(commands) >= 8
    assert any(c[:3] == ["kubectl", "-n", "team-a"] and "token" in c and "pipelines.kubeflow.org" in c
               for c in commands)
    assert len(blocks("python")) == 2
    assert "(docs/submit.md)" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_cai_commands_parse():
    for args in [c for c in shell_commands() if c[0] == "cai"]:
        command, path, rest = cli, [], args[1:]
        while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
            assert rest[0] in command.commands, f"{' '.join(args)}: no command cai {' '.join(path + rest[:1])}"
            command = command.commands[rest[0]]
            path.append(rest.pop(0))
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (args, result.output)
        known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        unknown = [f for f in _flags(rest) if f not in known]
        assert not unknown, f"{' '.join(args)}: cai {' '.join(path)} has no option {unknown}"


@lru_cache(maxsize=None)
def _kubectl_help(kubectl: str, path: tuple[str, ...]) -> str:
    proc = subprocess.run([kubectl, *path, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, (path, proc.stderr)
    return proc.stdout


def _kubectl() -> str:
    found = shutil.which("kubectl")
    if found:
        return found
    from tests.k8s_tools import tool
    return tool("kubectl")


KUBECTL_VALUED_GLOBALS = {"-n", "--namespace", "--context", "--kubeconfig", "-s", "--server"}


def test_kubectl_commands_parse():
    kubectl = _kubectl()
    global_help = subprocess.run([kubectl, "options"], capture_output=True, text=True, timeout=60).stdout
    for args in [c for c in shell_commands() if c[0] == "kubectl"]:
        rest, positional = args[1:], []
        while rest:  # the positional words, the global flags and their values left out
            word = rest.pop(0)
            if word in KUBECTL_VALUED_GLOBALS:
                rest.pop(0)
            elif not word.startswith("-"):
                positional.append(word)
        # the subcommand: the longest run of words its help's Usage line names (`create token`, `port-forward`)
        for n in (2, 1):
            path = tuple(positional[:n])
            usage = _kubectl_help(kubectl, path).split("Usage:", 1)[-1].split("\n", 2)[1]
            if f"kubectl {' '.join(path)}" in usage:
                break
            if n == 2 and len(positional) > 1 and "Available Commands:" in _kubectl_help(kubectl, path[:1]):
                pytest.fail(f"{' '.join(args)}: kubectl {path[0]} has no subcommand {path[1]}")
        else:
            pytest.fail(f"{' '.join(args)}: kubectl has no subcommand {positional[:1]}")
        help_text = _kubectl_help(kubectl, path) + global_help
        for flag in _flags(args[1:]):
            assert re.search(rf"(^|[\s,]){re.escape(flag)}[=\s,:\[]", help_text, re.M), \
                f"{' '.join(args)}: kubectl {' '.join(path)} has no option {flag}"


# -- the Python snippets, against the stub KFP API -------------------------------------------------------

@pytest.fixture
def package(tmp_path, monkeypatch):
    """pipeline.yaml (what `cai compile -o pipeline.yaml` writes) in the snippet's working directory."""
    from cai_pipelines.cluster import compile_pipeline

    isolate(tmp_path, monkeypatch)
    compile_pipeline(load_cluster_run_config(None, ["cluster.namespace=team-a"]), tmp_path / "pipeline.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "pipeline.yaml"


def _run_snippet(code: str, capsys) -> str:
    exec(compile(code, "docs/submit.md", "exec"), {"__name__": "__doc_snippet__"})
    return capsys.readouterr().out


def test_token_snippet_submits_the_package(package, monkeypatch, capsys):
    fake = FakeKFP()
    try:
        monkeypatch.setenv("KFP_HOST", fake.url)
        monkeypatch.setenv("KFP_TOKEN", TOKEN)
        out = _run_snippet(blocks("python")[0], capsys)
        assert "kfp run run-1" in out
        (spec,) = fake.pipeline_specs
        assert spec["pipelineInfo"]["name"] == "cai" and "sft" in spec["root"]["dag"]["tasks"]
        assert fake.runs[0]["runtime_config"]["parameters"] == {"run_root": "s3://cai-runs/runs/from-my-laptop"}
        assert fake.credentials_seen() == {(f"Bearer {TOKEN}", None)}
    finally:
        fake.close()


def test_dex_snippet_logs_in_and_submits_with_the_cookie(package, monkeypatch, capsys):
    fake = FakeKFP(token=None, cookie=COOKIE, gateway=True, namespaces={"team-a"}, users={"user@example.com": "pw"})
    try:
        monkeypatch.setenv("KUBEFLOW_HOST", fake.url)
        monkeypatch.setenv("KUBEFLOW_USER", "user@example.com")
        monkeypatch.setenv("KUBEFLOW_PASSWORD", "pw")
        out = _run_snippet(blocks("python")[1], capsys)
        assert "kfp run run-1" in out and len(fake.pipeline_specs) == 1
        assert fake.credentials_seen("/pipeline/apis/") == {(None, COOKIE)}
        assert any(path == "/dex/auth/local/login" and method == "POST" for method, path, _, _ in fake.server.requests)
        monkeypatch.setenv("KUBEFLOW_PASSWORD", "wrong")
        with pytest.raises(RuntimeError, match="Dex did not log user@example.com in"):
            _run_snippet(blocks("python")[1], capsys)
        assert len(fake.runs) == 1
    finally:
        fake.close()


# -- the messages the doc quotes are the ones `cai submit` prints ------------------------------------------

def _flat(text: str) -> str:
    return " ".join(text.split())


def _error(host: str, *args: str, namespace: str = "team-a") -> str:
    result = CliRunner().invoke(cli, ["submit", "--host", host, "-n", namespace, "--no-check-secrets", *args])
    assert result.exception is not None, result.output
    msg = str(result.exception).replace(host, "HOST")
    return "error: " + re.sub(r"login page \([^)]*\)", "login page (/dex/auth?...)", msg)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_the_quoted_errors_are_the_printed_ones(tmp_path, monkeypatch):
    isolate(tmp_path, monkeypatch)
    doc = _flat(DOC)
    api = FakeKFP(token=TOKEN, cookie=COOKIE)
    gateway = FakeKFP(token=TOKEN, cookie=COOKIE, gateway=True, namespaces={"team-a"})
    cookie_only = FakeKFP(token=None, cookie=COOKIE, gateway=True)
    not_kfp = FakeKFP(token=None, healthz_status=404)
    try:
        printed = [
            _error(api.url, "--token", "expired"),
            _error(api.url, "--cookie", "oauth2_proxy_kubeflow=expired"),
            _error(api.url),
            _error(gateway.url + "/pipeline", "--cookie", "oauth2_proxy_kubeflow=expired"),
            _error(gateway.url + "/pipeline"),
            _error(cookie_only.url + "/pipeline", "--token", TOKEN),
            _error(gateway.url + "/pipeline", "--cookie", COOKIE, namespace="team-b"),
            _error(f"http://127.0.0.1:{_closed_port()}", "--token", TOKEN),
            _error(not_kfp.url),
        ]
    finally:
        for fake in (api, gateway, cookie_only, not_kfp):
            fake.close()
    missing = [msg for msg in printed if _flat(msg) not in doc]
    assert not missing, "docs/submit.md does not quote these as printed:\n" + "\n".join(missing)


def test_the_quoted_preflight_lines_are_the_printed_ones(tmp_path, monkeypatch):
    isolate(tmp_path, monkeypatch)
    doc = _flat(DOC)
    (no_cluster,) = training_api_preflight("pytorchjob")
    fake = FakeDiscovery({"kubeflow.org/v1": ["pytorchjobs", "profiles"]})
    try:
        monkeypatch.setenv("KUBECONFIG", write_kubeconfig(tmp_path / "kubeconfig", fake.url))
        lines = training_api_preflight("trainjob")
    finally:
        fake.close()
    assert len(lines) == 3 and lines[-1].startswith("WARNING")
    missing = [line for line in [no_cluster, *lines] if _flat(f"preflight: {line}") not in doc]
    assert not missing, "docs/submit.md does not quote these as printed:\n" + "\n".join(missing)
