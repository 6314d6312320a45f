"""`cai submit`: compile the pipeline and start a run on a Kubeflow Pipelines cluster.

The config is read as for `cai compile` (the built-in cluster config, `--config` over it,
then `--set`); every check that can fail (image references, GPU layout, Secret names and
keys, the KFP host and its token) runs before anything is submitted.
"""
from __future__ import annotations

import os

import click

from cai_core.cli.commands.compile import CLUSTER_CONFIG_USES
from cai_core.cli.options import config_options, load_config
from cai_core.errors import CaiError


@click.command("submit")
@config_options(CLUSTER_CONFIG_USES, example="cluster.tag=0.1.0", cluster=True)
@click.option("--host", "--endpoint", "host", envvar="KF_PIPELINES_ENDPOINT",
              help="KFP API endpoint, e.g. https://kubeflow.example.com/pipeline or http://localhost:8080 "
                   "(env KF_PIPELINES_ENDPOINT; default: cluster.kfp_host).")
@click.option("--namespace", "-n", help="Namespace of the run (the Kubeflow profile); default: cluster.namespace.")
@click.option("--experiment", "--experiment-name", "experiment", help="KFP experiment; default: cluster.experiment.")
@click.option("--run-name", help="Display name of the run; default: the run id.")
@click.option("--run-id", help="cai run id (pod labels, S3 prefix); reusing one resumes that run's completed steps. "
              "Default: run_id from the config, else a new one.")
@click.option("--existing-token", "--token", "token", envvar="KF_PIPELINES_TOKEN",
              help="Bearer token for the KFP API (env KF_PIPELINES_TOKEN).")
@click.option("--token-file", type=click.Path(dir_okay=False),
              help="Read the bearer token from this file (default in a pod: the projected KFP service account "
                   "token, when present).")
@click.option("--cookies", help="Cookie header for the KFP API, e.g. authservice_session=... (Dex/oauth2-proxy).")
@click.option("--ssl-ca-cert", type=click.Path(dir_okay=False), help="CA bundle to verify the KFP host with.")
@click.option("--no-verify-ssl", is_flag=True, help="Do not verify the KFP host's TLS certificate.")
@click.option("--proxy", help="HTTP(S) proxy for the KFP API.")
@click.option("--service-account", help="Service account of the run's pods; default: cluster.service_account.")
@click.option("--kube-context", help="kubeconfig context used to check the referenced Secrets.")
@click.option("--check-secrets/--no-check-secrets", default=True, show_default=True,
              help="Check with the Kubernetes API that every referenced Secret key exists.")
@click.option("--skip-existing", is_flag=True,
              help="Do nothing when the experiment already has a run with this name (idempotent GitOps hooks).")
@click.option("--wait", is_flag=True, help="Wait for the run to finish; exit non-zero unless it succeeded.")
@click.option("--timeout", "wait_timeout", type=float, default=0, help="Seconds to --wait (0 = no limit).")
@click.option("--connect-timeout", type=float, default=5.0, show_default=True,
              help="Seconds to wait for the KFP host and the Kubernetes API during preflight.")
def submit_cmd(config, overrides, host, namespace, experiment, run_name, run_id, token, token_file, cookies,
               ssl_ca_cert, no_verify_ssl, proxy, service_account, kube_context, check_secrets, skip_existing,
               wait, wait_timeout, connect_timeout):
    """Compile the pipeline and start a run on Kubeflow Pipelines.

    \b
    Preflight, before anything is submitted: the config (images, GPU layout,
    Secret names), the KFP host answers and accepts the credentials, and (when
    a cluster is reachable) every referenced Secret key exists.
    Examples:
      cai submit --host http://localhost:8080            (after a port-forward)
      cai submit --config my.yaml --host https://kf.example.com/pipeline \\
                 -n team-a --existing-token "$(gcloud auth print-identity-token)"
    """
    from cai_pipelines.cluster import SA_TOKEN_PATH, read_token_file, submit

    cfg = load_config(config, overrides, cluster=True)
    host = host or cfg.cluster.kfp_host
    if not host:
        raise CaiError("no KFP host: pass --host URL (or set cluster.kfp_host or KF_PIPELINES_ENDPOINT)")
    if not token:
        default_file = os.environ.get("KF_PIPELINES_SA_TOKEN_PATH", SA_TOKEN_PATH)
        token = read_token_file(token_file or (default_file if os.path.exists(default_file) and not cookies else None))
    result = submit(cfg, host, namespace=namespace, experiment=experiment, run_name=run_name, token=token,
                    cookies=cookies, ssl_ca_cert=ssl_ca_cert, verify_ssl=not no_verify_ssl, proxy=proxy,
                    service_account=service_account, run_id=run_id, check_cluster_secrets=check_secrets,
                    kube_context=kube_context, skip_existing=skip_existing, wait=wait,
                    wait_timeout_s=wait_timeout, connect_timeout_s=connect_timeout,
                    log=lambda line: click.echo(f"preflight: {line}"))
    if result.skipped:
        click.echo(f"run {result.run_name} exists already: {result.url}")
        return
    click.echo(f"submitted run {result.run_name} (cai run id {result.run_id}, kfp run {result.kfp_run_id})")
    click.echo(f"  ui:      {result.url}")
    click.echo(f"  output:  {result.run_root}")
    ns = namespace or cfg.cluster.namespace
    click.echo(f"  steps:   kubectl get pods -n {ns} -l app=cai -L cai/stage   (the run's pods: its workflow in the UI)")
    click.echo(f"  jobs:    kubectl get pytorchjobs -n {ns} -l cai/run-id={result.run_id}")
    if wait:
        click.echo(f"  state:   {result.state}")
        if (result.state or "").upper() != "SUCCEEDED":
            raise CaiError(f"run {result.run_name} ended {result.state}")


def register(group: click.Group) -> None:
    group.add_command(submit_cmd)
