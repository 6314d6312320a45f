"""The README stays true: its commands, its file tree and its config reference."""
import re
import subprocess
import sys
from pathlib import Path

from cai_core.config.docs import reference

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_ci_runs_exactly_the_readme_test_command():
    first_block = README.split("```bash\n", 1)[1].split("```", 1)[0]
    install, tests = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert install.endswith("cai run") and install.startswith("pip install torch==2.13.0")
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()


def test_config_reference_is_current():
    block = README.split("<!-- config-reference:start", 1)[1].split("-->", 1)[1]
    block = block.split("<!-- config-reference:end -->", 1)[0]
    assert block.strip() == reference().strip(), "run: python -m cai_core.config.docs --write-readme"


def test_file_tree_names_real_paths():
    tree = README.split("## Files", 1)[1].split("```", 2)[1]
    parent = ""
    for line in tree.splitlines():
        m = re.match(r"^( {0,2})([\w./*-]+(?: [\w./-]+/)?)\s", line + " ")  # deeper lines continue a comment
        if not m or not m.group(2).strip():
            continue
        indent, names = m.group(1), m.group(2).split()
        for name in names:
            path = ROOT / (parent + name if indent else name)
            assert path.exists(), f"README file tree names {path.relative_to(ROOT)}, which does not exist"
        if not indent and names[-1].endswith("/"):
            parent = names[-1]


def test_cli_help_teaches():
    out = subprocess.run([sys.executable, "-m", "cai_core.cli", "--help"], capture_output=True, text=True, check=True).stdout
    assert "cai run" in out and "cai init" in out
    for command in ("run", "init", "config", "clean", "judge", "metrics", "train", "discover", "evaluate"):
        assert re.search(rf"^\s+{command}\s", out, re.M), command
