"""`cai run --set sft.lora_r=8 --set dpo.lora_r=8`: the whole kfp.local pipeline with LoRA adapters.

SFT and DPO each train under 10% of the parameters; the later steps (pairs, gate, evaluate) load the merged
models like any model; the adapters are kept beside them; the report says what share was trained.
"""
from __future__ import annotations

import json
import os

import pytest

from tests.e2e.test_local_run import SMALL, cai


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    env = dict(os.environ, CAI_CACHE_DIR=str(tmp_path_factory.getbasetemp() / "cai-cache"))
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    out = tmp_path_factory.mktemp("lora-runs")
    args = ["run", "--run-id", "lora", "--output-dir", str(out)]
    for item in SMALL + ["sft.lora_r=8", "dpo.lora_r=8", "sft.learning_rate=1e-2", "dpo.learning_rate=1e-3"]:
        args += ["--set", item]
    proc = cai(*args, env=env)
    return out / "lora", proc


def test_lora_pipeline_trains_adapters_and_hands_on_merged_models(lora_run):
    run_dir, proc = lora_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for stage in ("sft", "dpo"):
        m = metrics[stage]
        assert 0 < m["trainable_params"] < 0.1 * m["total_params"], stage
        assert (run_dir / stage / "adapter" / "adapter_config.json").exists(), stage
        assert not (run_dir / stage / "model" / "adapter_config.json").exists(), stage
    # the later steps generated from the merged models
    assert metrics["pairs"]["status_ok"] > 0
    assert {"base", "sft", "dpo"} <= {k.split(".")[0] for k in metrics["gate"]}
    report = (run_dir / "report.md").read_text()
    assert "sft: trained" in report and "a LoRA adapter, merged into the model handed on" in report
    assert "Verdict:" in proc.stdout
