"""The `cai` command's small subcommands, through click's runner and as a process."""
import json
import subprocess
import sys

import yaml
from click.testing import CliRunner

from cai_core import records
from cai_core.cli import cli
from cai_core.config import load_run_config


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
