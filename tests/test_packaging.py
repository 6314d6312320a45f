"""The distribution ships every package and data file the code imports."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_directory_is_listed():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "cai_core").rglob("__init__.py")}
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert {"cai_components", "cai_pipelines"} <= listed


def test_data_files_are_covered_by_package_data():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["cai_core"]
    data = [p for p in (ROOT / "cai_core").rglob("*") if p.suffix in (".jsonl", ".yaml", ".json", ".md")]
    for path in data:
        rel = path.relative_to(ROOT / "cai_core")
        assert any(rel.match(pattern) for pattern in patterns), f"{rel} is not in package-data"
