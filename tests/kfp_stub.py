"""A stub Kubeflow Pipelines API (and a Kubeflow gateway with a Dex login) on 127.0.0.1, for `cai submit` tests.

`FakeKFP` serves, in a thread, what the real `kfp.Client` 2.x and `cai submit`'s preflight call:
``/apis/v2beta1/healthz``; ``/apis/v2beta1/experiments`` (GET with a display_name filter, POST);
``/apis/v2beta1/runs`` (POST creates a run, its pipeline spec recorded in `runs`; GET lists), at
the root or under ``/pipeline`` (the gateway's path). It checks the credentials the way a cluster does:

* ``token``: the bearer token the API takes (None: no credentials needed, a port-forward);
* ``cookie``: a session cookie ``NAME=VALUE`` it takes as well (multi-user Kubeflow);
* ``gateway=True``: a request without good credentials is redirected (302) to the Dex login page,
  as oauth2-proxy / oidc-authservice do; otherwise it is answered 401, as the KFP API server does;
* ``namespaces``: the namespaces the caller may use (None: any); another one is answered 403
  PermissionDenied, as multi-user KFP's SubjectAccessReview does;
* ``users``: Dex's static passwords for the login form flow (``/dex/auth`` -> ``/dex/auth/local``
  form -> POST ``/dex/auth/local/login`` -> ``/oauth2/callback`` sets the session cookie).

`requests` records every request (method, path, headers, body).
"""
from __future__ import annotations

import json
import secrets
import threading
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

TOKEN = "good-token"
COOKIE = "oauth2_proxy_kubeflow=good-session"


class Server:
    """A ThreadingHTTPServer on a free port; `handle(method, path, query, headers, body)` answers
    (status, headers, payload: bytes or JSON)."""

    def __init__(self, handle):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _do(self):
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append((self.command, url.path, dict(self.headers), body))
                status, headers, payload = handle(self.command, url.path, parse_qs(url.query), self.headers, body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _do

            def log_message(self, *args):
                pass

        self.requests: list = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


_LOGIN_FORM = """<!DOCTYPE html><html><head><title>dex</title></head><body>
<form method="post" action="{action}">
  <input type="text" id="login" name="login" placeholder="email address">
  <input type="password" id="password" name="password">
  <button type="submit" id="submit-login">Login</button>
</form>{error}</body></html>"""


class FakeKFP:
    """Enough of the KFP v2beta1 API (and a Kubeflow gateway) for preflight and for kfp.Client to create a run."""

    def __init__(self, token: str | None = TOKEN, healthz_status: int = 200, redirect: bool = False, *,
                 cookie: str | None = None, gateway: bool = False, namespaces: set[str] | None = None,
                 users: dict[str, str] | None = None, release: str = "2.5.0"):
        self.token, self.healthz_status, self.redirect = token, healthz_status, redirect
        self.release = release  # the backend release healthz reports (tag_name), as KFP's does
        self.cookie, self.gateway, self.namespaces, self.users = cookie, gateway, namespaces, users or {}
        self.experiments: dict[str, dict] = {}
        self.runs: list[dict] = []
        #: The states a run reports to successive get_run calls (then it keeps the last).
        self.states: list[str] = []
        self.gets = 0
        self.on_get: list = []  # hooks called after each get_run (e.g. rotate the token)
        self._codes: dict[str, str] = {}
        self.server = Server(self.handle)
        self.url = self.server.url

    def close(self):
        self.server.close()

    @property
    def pipeline_specs(self) -> list[dict]:
        """The pipeline spec (PipelineSpec) of each submitted run."""
        return [run["pipeline_spec"].get("pipeline_spec", run["pipeline_spec"]) for run in self.runs]

    def credentials_seen(self, path_prefix: str = "/apis/") -> set[tuple[str | None, str | None]]:
        """(Authorization, Cookie) of every API request."""
        seen = set()
        for _, path, headers, _ in self.server.requests:
            if path.startswith(path_prefix):
                h = {k.lower(): v for k, v in headers.items()}
                seen.add((h.get("authorization"), h.get("cookie")))
        return seen

    # -- credentials ---------------------------------------------------------------------------
    def _cookie_ok(self, headers) -> bool:
        if not self.cookie:
            return False
        name, value = self.cookie.split("=", 1)
        jar = SimpleCookie()
        try:
            jar.load(headers.get("Cookie") or "")
        except Exception:
            return False
        return name in jar and jar[name].value == value

    def _authenticated(self, headers) -> bool:
        if self.token is None and self.cookie is None:
            return True
        return ((self.token is not None and headers.get("Authorization") == f"Bearer {self.token}")
                or self._cookie_ok(headers))

    def _login(self, method, path, query, body):
        """Dex's local login and the gateway's OIDC callback."""
        state = (query.get("state") or [""])[0]
        if path == "/dex/auth":
            return 302, {"Location": "/dex/auth/local?" + urlencode({"back": "", "state": state})}, b""
        if path == "/dex/auth/local" and method == "GET":
            action = "/dex/auth/local/login?" + urlencode({"back": "", "state": state})
            return 200, {"Content-Type": "text/html"}, _LOGIN_FORM.format(action=action.replace("&", "&amp;"),
                                                                          error="").encode()
        if path == "/dex/auth/local/login" and method == "POST":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            if self.users.get(form.get("login", "")) != form.get("password") or not form.get("password"):
                action = "/dex/auth/local/login?" + urlencode({"back": "", "state": state})
                return 200, {"Content-Type": "text/html"}, _LOGIN_FORM.format(
                    action=action.replace("&", "&amp;"), error="<div>Invalid Email Address and password</div>").encode()
            code = secrets.token_hex(8)
            self._codes[code] = form["login"]
            return 303, {"Location": "/oauth2/callback?" + urlencode({"code": code, "state": state})}, b""
        if path == "/oauth2/callback":
            if (query.get("code") or [""])[0] not in self._codes or not self.cookie:
                return 403, {"Content-Type": "text/html"}, b"<html>Invalid authentication via OAuth2</html>"
            return 302, {"Location": "/", "Set-Cookie": f"{self.cookie}; Path=/; HttpOnly"}, b""
        return None

    # -- the API ---------------------------------------------------------------------------------
    def handle(self, method, path, query, headers, body):
        if path.startswith("/pipeline/"):  # behind the Kubeflow gateway the API is https://<kubeflow>/pipeline
            path = path[len("/pipeline"):]
        if self.redirect:
            return 302, {"Location": "/dex/auth?client_id=kubeflow-oidc-authservice"}, b""
        if self.gateway and (path.startswith("/dex/") or path.startswith("/oauth2/")):
            return self._login(method, path, query, body)
        if not self._authenticated(headers):
            if self.gateway:
                state = secrets.token_hex(4)
                return 302, {"Location": "/dex/auth?" + urlencode(
                    {"client_id": "kubeflow-oidc-authservice", "response_type": "code", "scope": "openid",
                     "redirect_uri": "/oauth2/callback", "state": state})}, b""
            return 401, {}, {"error": "Unauthenticated", "code": 16, "message": "Unauthenticated: invalid token"}
        if path == "/":
            return 200, {"Content-Type": "text/html"}, b"<html><title>Kubeflow Central Dashboard</title></html>"
        if path == "/apis/v2beta1/healthz":
            return self.healthz_status, {}, {"commit_sha": "0c4c2a1f", "tag_name": self.release,
                                              "multi_user": True}
        namespace = (query.get("namespace") or [None])[0]
        if method == "POST" and body:
            try:
                namespace = json.loads(body).get("namespace", namespace)
            except ValueError:
                pass
        if self.namespaces is not None and path.startswith("/apis/v2beta1/experiments") \
                and namespace not in self.namespaces:
            return 403, {}, {"error": "PermissionDenied", "code": 7, "message": (
                f"User 'user@example.com' is not authorized with reason:  (request: &ResourceAttributes"
                f"{{Namespace:{namespace},Verb:list,Group:pipelines.kubeflow.org,Resource:experiments}})")}
        if path == "/apis/v2beta1/experiments" and method == "GET":
            flt = json.loads(query.get("filter", ["{}"])[0] or "{}")
            names = [p.get("string_value", p.get("stringValue")) for p in flt.get("predicates", [])]
            found = [e for e in self.experiments.values() if not names or e["display_name"] in names]
            return 200, {}, {"experiments": found, "total_size": len(found)}
        if path == "/apis/v2beta1/experiments" and method == "POST":
            exp = json.loads(body)
            exp["experiment_id"] = f"exp-{len(self.experiments) + 1}"
            self.experiments[exp["experiment_id"]] = exp
            return 200, {}, exp
        if path == "/apis/v2beta1/runs" and method == "POST":
            run = json.loads(body)
            run["run_id"] = f"run-{len(self.runs) + 1}"
            run["state"] = "PENDING"
            self.runs.append(run)
            return 200, {}, run
        if path.startswith("/apis/v2beta1/runs/") and method == "GET":  # get_run: the run's next state
            run = next((r for r in self.runs if r["run_id"] == path.rsplit("/", 1)[1]), None)
            if run is None:
                return 404, {}, {"message": f"run {path.rsplit('/', 1)[1]} not found"}
            if self.states:
                run["state"] = self.states.pop(0)
            self.gets += 1
            for hook in self.on_get:
                hook(self)
            return 200, {}, run
        if path == "/apis/v2beta1/runs" and method == "GET":
            flt = json.loads(query.get("filter", ["{}"])[0] or "{}")
            names = [p.get("string_value", p.get("stringValue")) for p in flt.get("predicates", [])]
            found = [r for r in self.runs if not names or r["display_name"] in names]
            return 200, {}, {"runs": found, "total_size": len(found)}
        return 404, {}, {"message": f"no route {method} {path}"}


class FakeDiscovery:
    """The discovery part of a Kubernetes API: ``GET /apis/<group>/<version>`` lists the resources of each
    served group/version (an APIResourceList), 404 for the others; ``status`` answers every request with
    that status instead (403: a caller not allowed to read discovery)."""

    def __init__(self, served: dict[str, list[str]], status: int | None = None):
        self.served, self.status = served, status  # "group/version" -> resource plurals
        self.server = Server(self.handle)
        self.url = self.server.url

    def close(self):
        self.server.close()

    def handle(self, method, path, query, headers, body):
        if self.status is not None:
            return self.status, {}, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": self.status,
                                     "message": "forbidden"}
        group_version = path.removeprefix("/apis/")
        if path.startswith("/apis/") and group_version in self.served:
            return 200, {}, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                             "resources": [{"name": plural, "namespaced": True, "kind": plural.title()[:-1],
                                            "verbs": ["get", "list", "create"]}
                                           for plural in self.served[group_version]]}
        return 404, {}, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                         "code": 404, "message": "the server could not find the requested resource"}


def write_kubeconfig(path, server: str) -> str:
    """A kubeconfig whose current context is `server` (a token user); returns its path."""
    import yaml

    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
           "clusters": [{"name": "fake", "cluster": {"server": server}}],
           "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u", "namespace": "team-a"}}],
           "users": [{"name": "u", "user": {"token": "kube-token"}}]}
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def isolate(tmp_path, monkeypatch) -> None:
    """No credentials, no cluster and no KFP host from the machine running the tests."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # kfp.Client reads and writes ~/.config/kfp/context.json
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-sa-token"))
    for var in ("KUBERNETES_SERVICE_HOST", "KF_PIPELINES_ENDPOINT", "KF_PIPELINES_TOKEN", "KF_PIPELINES_COOKIE"):
        monkeypatch.delenv(var, raising=False)
