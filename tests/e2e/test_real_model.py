"""The real model through the whole pipeline: `cai run --config smollm2` through kfp.local on a micro budget
(a few prompts, two SFT steps, one DPO step, short answers). Unlike the tiny model, SmolLM2-135M-Instruct writes
English, so these tests can ask whether training kept it writing English."""
from __future__ import annotations

import re

import pytest

from cai_core import records
from tests.e2e.test_local_run import STEPS, cai, env  # noqa: F401  (env is a fixture)

pytestmark = pytest.mark.slow

MICRO = ["prompts.max_prompts=6", "eval_prompts.max_prompts=3", "revise.max_new_tokens=24",
         "pairs.max_new_tokens=24", "sft.max_steps=2", "dpo.max_steps=1", "sft.per_device_batch_size=4",
         "dpo.per_device_batch_size=2", "judge.test_fraction=0.2", "evaluate.max_new_tokens=24",
         "evaluate.mt_bench_questions=2", "evaluate.red_team_max=3", "evaluate.benign_max=2", "gate.probes=3",
         "gate.max_new_tokens=24"]
WORD = re.compile(r"[A-Za-z]{2,}")


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, env, smollm2_dir):
    out = tmp_path_factory.mktemp("real")
    args = ["run", "--config", "smollm2", "--run-id", "real", "--output-dir", str(out)]
    for item in MICRO:
        args += ["--set", item]
    proc = cai(*args, env=env)
    return out / "real", proc


def _english(text: str) -> bool:
    words = WORD.findall(text)
    letters = sum(ch.isascii() and ch.isalpha() for ch in text)
    return len(words) >= 3 and letters >= 0.6 * len(text.replace(" ", ""))


def test_every_step_ran_on_the_real_model(real_run):
    run_dir, proc = real_run
    for step in STEPS:
        assert (run_dir / step / "_MANIFEST.json").exists(), step
    assert "smoke-test" not in (run_dir / "report.md").read_text(encoding="utf-8")
    assert "[cai] revise: done" in proc.stdout


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_trained_models_load_and_write_english(real_run, stage):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = real_run[0] / stage / "model"
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Name three colours of the rainbow."}],
                                     tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=24, do_sample=False)
    text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text.strip() and _english(text), f"{stage} model wrote {text!r}"


def test_judge_calibration_and_model_metrics_are_reported(real_run):
    run_dir = real_run[0]
    judge = records.read_json(run_dir / "judge" / "_stage.json")["metrics"]
    assert judge["control_pairs"] > 0
    assert 0.0 <= judge["control_accuracy"] <= 1.0 and 0.0 <= judge["control_first_slot_rate"] <= 1.0
    metrics = records.read_json(run_dir / "metrics.json")
    for name in ("base", "sft"):
        assert 0.0 <= metrics["models"][name]["empty_rate"] <= 1.0
    assert metrics["models"]["sft"]["empty_rate"] <= 0.34  # two gentle steps keep the model answering
    answers = records.read_jsonl(run_dir / "evaluate" / "answers_sft.jsonl", records.ANSWER)
    assert sum(_english(a["response"]) for a in answers) >= len(answers) // 2
    assert isinstance(metrics["verdict"]["promoted"], bool)
