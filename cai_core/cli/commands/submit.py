"""`cai submit`: compile the pipeline and start a run on a Kubeflow Pipelines cluster, from a laptop or a pod.

The config is read as for `cai compile` (the built-in cluster config, `--config` over it,
then `--set`). Then, before anything is submitted (docs/submit.md):

1. the config checks (image references, GPU layout, Secret names and keys, the run id);
2. `check_access` (through kfp.Client: cai_pipelines.cluster.Http): the KFP API answers and takes the
   credentials, one of
   * a bearer token (`--token`, `--token-file`, or in a pod the projected KFP token): a
     service account token, ``kubectl -n NS create token SA --audience pipelines.kubeflow.org``;
   * a session cookie (`--cookie NAME=VALUE`): multi-user Kubeflow behind Dex, with
     oauth2-proxy (``oauth2_proxy_kubeflow``, Kubeflow 1.9+) or oidc-authservice (``authservice_session``);
   * none: a port-forward to a single-user KFP;
   and the namespace is one the credentials may use; each failure is one CaiError naming what is
   wrong and how to fix it (an expired token or cookie, a Dex login redirect, an unreachable host);
3. `training_api_preflight` (skip: `--no-check-training-api`): which training API the cluster
   serves (cai_core.k8s.apis: Kubernetes discovery, current kubeconfig or in-cluster), the
   `train.launcher` to use, and a warning when the config's launcher needs one it does not serve;
4. the Secrets check and the run itself (cai_pipelines.cluster.submit: kfp.Client(host=...,
   existing_token=..., cookies=...).create_run_from_pipeline_package).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import click

from cai_core.cli.commands.compile import CLUSTER_CONFIG_USES
from cai_core.cli.options import config_options, load_config
from cai_core.errors import CaiError

#: The audience the KFP API server asks of a service account token (its TokenReview).
AUDIENCE = "pipelines.kubeflow.org"
#: The session cookies of multi-user Kubeflow: oauth2-proxy (Kubeflow 1.9+), oidc-authservice (before).
SESSION_COOKIES = ("oauth2_proxy_kubeflow", "authservice_session")
#: Words in a redirect's Location that mark a login page (Dex, oauth2-proxy, oidc-authservice, an IdP).
LOGIN_MARKS = ("/dex", "/oauth2", "/auth", "login", "signin", "sign_in")
NOTHING = "nothing was submitted"
DOC = "docs/submit.md"


@dataclass
class Auth:
    """The credentials for the KFP API, and what they are (for messages)."""

    token: str | None = None
    cookies: str | None = None
    #: Where the token came from: --token, --token-file PATH, the projected token PATH.
    token_source: str = ""
    #: The file the token was read from (re-read while --wait polls: projected tokens are rotated), if any.
    token_path: str | None = None

    @property
    def cookie_names(self) -> list[str]:
        return [part.split("=", 1)[0].strip() for part in (self.cookies or "").split(";") if "=" in part]

    def describe(self) -> str:
        if self.cookies and self.token:
            return f"session cookie {', '.join(self.cookie_names)} and a bearer token ({self.token_source})"
        if self.cookies:
            return f"session cookie {', '.join(self.cookie_names)}"
        if self.token:
            return f"bearer token ({self.token_source})"
        return "none (a port-forward or a single-user KFP)"


def resolve_auth(token: str | None, token_file: str | None, cookie: str | None) -> Auth:
    """The credentials from the options; a pasted ``Bearer `` or ``Cookie:`` prefix is dropped."""
    from cai_pipelines.cluster import SA_TOKEN_PATH, read_token_file

    cookie = (cookie or "").strip()
    if cookie.lower().startswith("cookie:"):
        cookie = cookie[len("cookie:"):].strip()
    if cookie and "=" not in cookie:
        raise CaiError("--cookie has no '=': give the cookie as NAME=VALUE, e.g. "
                       f"--cookie 'oauth2_proxy_kubeflow=...' or 'authservice_session=...' (see {DOC})")
    source, path = "--token / KF_PIPELINES_TOKEN", None
    if not token:
        default_file = os.environ.get("KF_PIPELINES_SA_TOKEN_PATH", SA_TOKEN_PATH)
        path = token_file or (default_file if os.path.exists(default_file) and not cookie else None)
        token = read_token_file(path)
        source = f"--token-file {path}" if token_file else f"the projected token {path}"
    token = (token or "").strip()
    if token.lower().startswith("bearer "):
        token = token[len("bearer "):].strip()
    return Auth(token=token or None, cookies=cookie or None, token_source=source if token else "",
                token_path=path if token else None)


# -- the KFP API: reachable, the credentials taken, the namespace usable ---------------------------

def _is_login(location: str) -> bool:
    return any(mark in location.lower() for mark in LOGIN_MARKS)


def _token_howto(namespace: str, sa: str) -> str:
    return f"kubectl -n {namespace} create token {sa} --audience {AUDIENCE}"


def _rejected(host: str, auth: Auth, status: int, detail: str, namespace: str, sa: str) -> CaiError:
    http = f"HTTP {status}{': ' + detail if detail else ''}"
    if auth.cookies:
        return CaiError(f"the KFP API at {host} rejected the session cookie {', '.join(auth.cookie_names)} ({http}): "
                        "it has expired or is not from this Kubeflow; log in again in the browser and copy a fresh "
                        f"one (see {DOC}); {NOTHING}")
    if auth.token:
        return CaiError(f"the KFP API at {host} rejected the bearer token from {auth.token_source} ({http}): it has "
                        f"expired or its audience is not {AUDIENCE}; make a fresh one: {_token_howto(namespace, sa)}; "
                        f"{NOTHING}")
    return CaiError(f"the KFP API at {host} needs credentials ({http}): pass --token \"$({_token_howto(namespace, sa)})\" "
                    f"or a session cookie --cookie 'oauth2_proxy_kubeflow=...' (see {DOC}); {NOTHING}")


def _redirected(host: str, auth: Auth, location: str, namespace: str, sa: str) -> CaiError:
    if not _is_login(location):
        return CaiError(f"the KFP API at {host} redirected to {location}: pass that address as --host; {NOTHING}")
    where = f"the KFP API at {host} redirected to a login page ({location})"
    if auth.cookies:
        return CaiError(f"{where}: the session cookie {', '.join(auth.cookie_names)} is missing or expired; log in "
                        f"again in the browser and copy a fresh one (see {DOC}); {NOTHING}")
    if auth.token:
        return CaiError(f"{where}: the gateway does not take bearer tokens; pass a session cookie "
                        f"(--cookie 'oauth2_proxy_kubeflow=...'), or use the token on the KFP API itself "
                        f"(kubectl -n kubeflow port-forward svc/ml-pipeline 8888:8888, --host http://localhost:8888); "
                        f"{NOTHING}")
    return CaiError(f"{where}: this Kubeflow needs a login; pass a session cookie (--cookie "
                    f"'oauth2_proxy_kubeflow=...' or 'authservice_session=...', see {DOC}) or a token "
                    f"(--token \"$({_token_howto(namespace, sa)})\"); {NOTHING}")


def check_access(host: str, auth: Auth, namespace: str, experiment: str, *, service_account: str = "",
                 ssl_ca_cert: str | None = None, verify_ssl: bool = True, proxy: str | None = None,
                 timeout_s: float = 5.0) -> tuple[str, list[str]]:
    """Ask the KFP API (healthz, then the experiment in `namespace`) with `auth`; return the backend's release
    (healthz tag_name) and the preflight notes.

    Raises one CaiError naming what is wrong: an unreachable host, a login redirect, rejected
    credentials, a namespace the credentials may not use."""
    from cai_pipelines.cluster import Http, _message, _reason

    if not host.startswith(("http://", "https://")):
        raise CaiError(f"--host {host!r}: must start with http:// or https:// (e.g. https://kubeflow.example.com/"
                       f"pipeline, or http://localhost:8080 after a port-forward); {NOTHING}")
    sa = service_account or "default-editor"
    http = Http(host=host, token=auth.token, cookies=auth.cookies, ssl_ca_cert=ssl_ca_cert, verify_ssl=verify_ssl,
                proxy=proxy, timeout_s=timeout_s)

    def get(ask, path: str) -> tuple[int, dict, bytes]:
        try:
            status, headers, body = ask()
        except OSError as exc:
            raise CaiError(f"cannot reach the KFP API at {host} ({_reason(exc)} within {timeout_s:g}s): check --host "
                           "(behind the Kubeflow gateway it ends in /pipeline), or start a port-forward (kubectl -n "
                           f"kubeflow port-forward svc/ml-pipeline-ui 8080:80) and pass --host http://localhost:8080; "
                           f"{NOTHING}") from None
        if status in (301, 302, 303, 307, 308):
            location = {k.lower(): v for k, v in headers.items()}.get("location", "?")
            raise _redirected(host, auth, location, namespace, sa)
        if status == 401 or (status == 403 and path.endswith("healthz")):
            raise _rejected(host, auth, status, _message(body), namespace, sa)
        return status, headers, body

    status, headers, body = get(http.healthz, "/apis/v2beta1/healthz")
    if status != 200:
        raise CaiError(f"the KFP API at {host} answered HTTP {status} on /apis/v2beta1/healthz"
                       f"{': ' + _message(body) if _message(body) else ''}: is --host the Kubeflow Pipelines API "
                       f"(https://<kubeflow>/pipeline, or a port-forward of svc/ml-pipeline-ui)? {NOTHING}")
    try:
        health = json.loads(body)
    except ValueError:
        raise CaiError(f"the KFP API at {host} answered /apis/v2beta1/healthz with a page that is not JSON "
                       f"({_message(body)!r}): a login page wants a session cookie (--cookie, see {DOC}); else "
                       f"check --host; {NOTHING}") from None
    version = (health.get("tag_name") or health.get("commit_sha") or "unknown") if isinstance(health, dict) else "?"
    notes = [f"kfp host {host} answers (api {version}); auth: {auth.describe()}"]

    status, headers, body = get(lambda: http.experiments(namespace, experiment), "/apis/v2beta1/experiments")
    detail = _message(body)
    if status == 403:
        who = "this session" if auth.cookies else "this token" if auth.token else "an anonymous caller"
        grant = (f"bind the service account to the ClusterRole kubeflow-pipelines-edit in {namespace}" if auth.token
                 else "its user must own the profile or be a contributor to it" if auth.cookies
                 else "pass --token or --cookie")
        raise CaiError(f"the KFP API at {host} does not let {who} use namespace {namespace} (HTTP 403"
                       f"{': ' + detail if detail else ''}): check -n (your Kubeflow profile: kubectl get profiles) "
                       f"and that {who} may use it ({grant}); {NOTHING}")
    if status >= 400:
        hint = ("the namespace is unknown to KFP; pass -n with your Kubeflow profile (kubectl get profiles)"
                if "namespace" in detail.lower() else "check -n and --experiment")
        raise CaiError(f"the KFP API at {host} refused to look up experiment {experiment!r} in namespace {namespace} "
                       f"(HTTP {status}{': ' + detail if detail else ''}): {hint}; {NOTHING}")
    try:
        found = [e for e in json.loads(body).get("experiments") or [] if e.get("display_name") == experiment]
    except (ValueError, AttributeError):
        found = []
    notes.append(f"experiment {experiment} found in namespace {namespace}" if found else
                 f"experiment {experiment} does not exist in namespace {namespace} yet: the run creates it")
    return str(version), notes


# -- the training API the cluster serves ----------------------------------------------------------

def training_api_preflight(launcher: str, kube_context: str | None = None, timeout_s: float = 5.0) -> list[str]:
    """Preflight lines: the training APIs the cluster serves, the launcher to use, a WARNING line when
    `launcher` (train.launcher: local, pytorchjob or trainjob) needs one it does not serve. One line, and
    no error, when no cluster can be asked."""
    from cai_core.k8s.apis import ClusterUnreachable, advice, served_training_apis

    try:
        served = served_training_apis(kube_context, timeout_s=timeout_s)
    except ClusterUnreachable as exc:
        return [f"training API not checked: {exc} (--no-check-training-api skips this)"]
    return advice(launcher, served)


# -- the command ------------------------------------------------------------------------------------

@click.command("submit")
@config_options(CLUSTER_CONFIG_USES, example="cluster.tag=0.1.0", cluster=True)
@click.option("--host", "--endpoint", "host", envvar="KF_PIPELINES_ENDPOINT",
              help="KFP API endpoint: https://<kubeflow>/pipeline through the Kubeflow gateway, or "
                   "http://localhost:8080 after kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80 "
                   "(env KF_PIPELINES_ENDPOINT; default: cluster.kfp_host).")
@click.option("--namespace", "-n", help="Namespace of the run (the Kubeflow profile); default: cluster.namespace.")
@click.option("--experiment", "--experiment-name", "experiment",
              help="KFP experiment (created when missing); default: cluster.experiment.")
@click.option("--run-name", help="Display name of the run; default: the run id.")
@click.option("--run-id", help="cai run id (pod labels, S3 prefix); reusing one resumes that run's completed steps. "
              "Default: run_id from the config, else a new one.")
@click.option("--token", "--existing-token", "token", envvar="KF_PIPELINES_TOKEN", metavar="TOKEN",
              help="Bearer token for the KFP API: a service account token, e.g. "
                   f"\"$(kubectl -n team-a create token default-editor --audience {AUDIENCE})\" "
                   "(env KF_PIPELINES_TOKEN).")
@click.option("--token-file", type=click.Path(dir_okay=False),
              help="Read the bearer token from this file (default in a pod: the projected KFP service account "
                   "token, when present).")
@click.option("--cookie", "--cookies", "cookie", envvar="KF_PIPELINES_COOKIE", metavar="NAME=VALUE",
              help="Session cookie of a multi-user Kubeflow behind Dex, from the browser after logging in: "
                   "'oauth2_proxy_kubeflow=...' (oauth2-proxy, Kubeflow 1.9+) or 'authservice_session=...' "
                   f"(oidc-authservice) (env KF_PIPELINES_COOKIE; how to get one: {DOC}). "
                   "No --token and no --cookie: no credentials (a port-forward, a single-user KFP).")
@click.option("--ssl-ca-cert", type=click.Path(dir_okay=False), help="CA bundle to verify the KFP host with.")
@click.option("--no-verify-ssl", is_flag=True, help="Do not verify the KFP host's TLS certificate.")
@click.option("--proxy", help="HTTP(S) proxy for the KFP API.")
@click.option("--service-account", help="Service account of the run's pods; default: cluster.service_account.")
@click.option("--kube-context", help="kubeconfig context for the Secrets and training API checks "
                                     "(default: the current context, or in a pod its service account).")
@click.option("--check-secrets/--no-check-secrets", default=True, show_default=True,
              help="Check with the Kubernetes API that every referenced Secret key exists.")
@click.option("--check-training-api/--no-check-training-api", default=True, show_default=True,
              help="Ask the Kubernetes API which training API it serves (kubeflow.org/v1 pytorchjobs, "
                   "trainer.kubeflow.org/v1alpha1 trainjobs) and warn when train.launcher needs one it lacks.")
@click.option("--skip-existing", is_flag=True,
              help="Do nothing when the experiment already has a run with this name (idempotent GitOps hooks).")
@click.option("--wait", is_flag=True, help="Wait for the run to finish; exit non-zero unless it succeeded.")
@click.option("--timeout", "wait_timeout", type=float, default=0, help="Seconds to --wait (0 = no limit).")
@click.option("--connect-timeout", type=float, default=5.0, show_default=True,
              help="Seconds to wait for the KFP host and the Kubernetes API during preflight.")
def submit_cmd(config, overrides, host, namespace, experiment, run_name, run_id, token, token_file, cookie,
               ssl_ca_cert, no_verify_ssl, proxy, service_account, kube_context, check_secrets, check_training_api,
               skip_existing, wait, wait_timeout, connect_timeout):
    """Compile the pipeline and start a run on Kubeflow Pipelines.

    \b
    Credentials for the KFP API, one of (docs/submit.md):
      a token     --token "$(kubectl -n team-a create token default-editor \\
                          --audience pipelines.kubeflow.org)"
      a cookie    --cookie 'oauth2_proxy_kubeflow=...'   (multi-user Kubeflow: Dex
                  login in the browser, then devtools > Application > Cookies)
      none        after kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80
    \b
    Preflight, before anything is submitted: the config (images, GPU layout,
    Secret names), the KFP host answers and takes the credentials in the
    namespace, the training API the cluster serves fits train.launcher, and
    (when a cluster is reachable) every referenced Secret key exists.
    Examples:
      cai submit --host http://localhost:8080            (after a port-forward)
      cai submit --config my.yaml --host https://kf.example.com/pipeline \\
                 -n team-a --cookie "oauth2_proxy_kubeflow=$COOKIE"
    """
    from cai_pipelines.cluster import new_run_id, preflight_static, submit

    cfg = load_config(config, overrides, cluster=True)
    host = host or cfg.cluster.kfp_host
    if not host:
        raise CaiError("no KFP host: pass --host URL (or set cluster.kfp_host or KF_PIPELINES_ENDPOINT)")
    run_id = run_id or new_run_id(cfg)
    preflight_static(cfg, run_id)  # config errors before any network call
    auth = resolve_auth(token, token_file, cookie)
    ns = namespace or cfg.cluster.namespace
    sa = service_account if service_account is not None else cfg.cluster.service_account
    log = lambda line: click.echo(f"preflight: {line}")  # noqa: E731
    release, notes = check_access(host, auth, ns, experiment or cfg.cluster.experiment, service_account=sa,
                                  ssl_ca_cert=ssl_ca_cert, verify_ssl=not no_verify_ssl, proxy=proxy,
                                  timeout_s=connect_timeout)
    for note in notes:
        log(note)
    launcher = str(getattr(cfg.train, "launcher", "local"))
    if check_training_api:
        for line in training_api_preflight(launcher, kube_context, timeout_s=connect_timeout):
            log(line)
    result = submit(cfg, host, namespace=namespace, experiment=experiment, run_name=run_name, token=auth.token,
                    cookies=auth.cookies, ssl_ca_cert=ssl_ca_cert, verify_ssl=not no_verify_ssl, proxy=proxy,
                    service_account=service_account, run_id=run_id, check_cluster_secrets=check_secrets,
                    kube_context=kube_context, skip_existing=skip_existing, wait=wait,
                    wait_timeout_s=wait_timeout, connect_timeout_s=connect_timeout, token_file=auth.token_path,
                    backend_release=release, log=log)
    if result.skipped:
        click.echo(f"run {result.run_name} exists already: {result.url}")
        return
    click.echo(f"submitted run {result.run_name} (cai run id {result.run_id}, kfp run {result.kfp_run_id})")
    click.echo(f"  ui:      {result.url}")
    click.echo(f"  output:  {result.run_root}")
    click.echo(f"  steps:   kubectl get pods -n {ns} -l app=cai -L cai/stage   (the run's pods: its workflow in the UI)")
    jobs = "trainjobs" if launcher == "trainjob" else "pytorchjobs"
    click.echo(f"  jobs:    kubectl get {jobs} -n {ns} -l cai/run-id={result.run_id}")
    if wait:
        click.echo(f"  state:   {result.state}")
        if (result.state or "").upper() != "SUCCEEDED":
            raise CaiError(f"run {result.run_name} ended {result.state}")


def register(group: click.Group) -> None:
    group.add_command(submit_cmd)
