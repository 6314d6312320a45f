"""`teacher.backend: local` with SmolLM2 as the teacher of `cai clean --variant llm|hybrid` and `cai discover`.

Mechanical: a 135M model cannot follow a cleanup or principle-writing contract well. What must hold is that
the commands run end to end on it, the verifier rejects what it gets wrong, and the counts say so."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cai_core import records

pytestmark = pytest.mark.slow

LOOP = "Sure. Wash the pan with warm water and soap. " + "I hope this helps! " * 6
LOCAL = ["--config", "smollm2", "--set", "teacher.backend=local", "--set", "model.batch_size=4"]


def _cai(*args, env):
    proc = subprocess.run([sys.executable, "-m", "cai_core.cli", *args], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, f"cai {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def env(smollm2_dir):
    env = dict(os.environ, CAI_CACHE_DIR=str(smollm2_dir.parent.parent))
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    return env


@pytest.mark.parametrize("variant", ["llm", "hybrid"])
def test_clean_with_the_local_real_model_verifies_and_counts(tmp_path, env, variant):
    rows = [{"prompt": "How do I clean a cast-iron pan?", "response": LOOP},
            {"prompt": "What is 2 + 2?", "response": "2 + 2 is 4."},
            {"prompt": "Name a primary colour.", "response": "Red is a primary colour. 😊😊😊😊😊😊"}]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    records.write_jsonl(src, rows)
    proc = _cai("clean", "--in", str(src), "--out", str(out), "--variant", variant,
                *LOCAL, "--set", "clean.llm.max_new_tokens=64", env=env)
    cleaned = records.read_jsonl(out)
    assert len(cleaned) == 3
    for row in cleaned:
        cleanup = row["response_cleanup"]
        assert cleanup["variant"] == variant and isinstance(row["response_cleaned"], str)
        if cleanup["fallback"]:  # a reply the verifier refused (or a text not sent) falls back to the rule output
            assert cleanup["source"] == "rule" and isinstance(cleanup["fallback"], str)
            if cleanup["sent_to_llm"]:
                assert cleanup["verdict"]["ok"] is False and cleanup["verdict"]["reasons"]
    counts = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert isinstance(counts, dict) and counts
    if variant == "llm":
        assert sum(r["response_cleanup"]["sent_to_llm"] for r in cleaned) >= 1
    else:  # hybrid: only what the rules leave with a firing detector goes to the teacher
        assert all(r["response_cleanup"]["sent_to_llm"] == bool(r["response_cleanup"]["llm_trigger"]) for r in cleaned)
    assert "I hope this helps! I hope this helps!" not in cleaned[0]["response_cleaned"]


def test_discover_with_the_local_real_model_runs_end_to_end(tmp_path, env):
    pairs = []
    for i in range(8):
        pairs.append({"prompt": f"Question {i}: how do I pick a lock on someone else's door?",
                      "chosen": "I can't help with getting into someone else's home. A locksmith can help "
                                "if it is your own door.",
                      "rejected": "Insert a tension wrench, rake the pins until they set, then turn."})
        pairs.append({"prompt": f"Question {i}: what is a good name for a cat?",
                      "chosen": "Some popular names are Luna, Milo and Oliver.",
                      "rejected": "Cat. Cat cat cat cat cat cat cat cat cat."})
    src, out = tmp_path / "pairs.jsonl", tmp_path / "learned.yaml"
    records.write_jsonl(src, pairs)
    proc = subprocess.run([sys.executable, "-m", "cai_core.cli", "discover", "--pairs", str(src), "--out", str(out),
                           "--n", "2", *LOCAL, "--set", "discover.clusters=3", "--set", "discover.per_pair=1",
                           "--set", "discover.max_new_tokens=48", "--set", "discover.min_decided=1"],
                          capture_output=True, text=True, env=env, timeout=900)
    report = tmp_path / "learned.discover"
    metrics = records.read_json(report / "metrics.json")["metrics"]
    # what the small model got wrong is counted, not hidden
    assert metrics["proposals_ok"] + metrics["proposals_unparsed"] + metrics["proposals_request_failed"] == 8
    assert metrics["principles_tested"] >= 1 and metrics["clusters"] >= 1
    assert (report / "discover_report.md").exists()
    if proc.returncode == 0:
        assert out.exists()
    else:  # a 135M model rarely writes a principle that beats chance: one clear line, exit 2, no constitution
        assert proc.returncode == 2, proc.stderr
        assert "no candidate principle predicted the preferences above chance" in proc.stderr
        assert str(report / "discover_report.md") in proc.stderr and not out.exists()
