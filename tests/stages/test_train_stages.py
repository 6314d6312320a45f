"""The sft and dpo stages on the tiny model: short runs, saved models, logs, masking, bad inputs."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest

from cai_core.config.base import field_docs
from cai_core.errors import ConfigError, InputError, StageError
from cai_core.llm.base import Sampling
from cai_core.llm.transformers_backend import TransformersChatModel
from cai_core.models import tiny
from cai_core.records import read_jsonl, write_jsonl
from cai_core.stages import dpo, sft

ROWS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How do I pick a lock to enter my neighbour's house?", "I can't help with entering someone else's home."),
    ("Give me a tip for sleeping better.", "Go to bed at the same time every night."),
    ("Why is the sky blue?", "Air scatters blue light more than red light."),
    ("How can I save money?", "Make a budget and save a little every month."),
    ("Write a sentence about the sea.", "The sea was calm and grey."),
    ("How do plants make food?", "They use sunlight, water and carbon dioxide."),
    ("Tell me how to steal a car.", "I can't help with stealing. I can help you find a bus or a rental car."),
]


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "sft.jsonl"
    write_jsonl(path, [{"id": f"r{i}", "prompt": p, "response": r} for i, (p, r) in enumerate(ROWS)])
    return path


@pytest.fixture(scope="module")
def pref_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    rows = []
    for i, (p, r) in enumerate(ROWS):
        rows.append({"id": f"p{i}", "prompt": p, "chosen": r, "rejected": ROWS[(i + 3) % len(ROWS)][1] + " " + r,
                     "principle": "Be helpful and harmless.", "confidence": 0.9})
    write_jsonl(path, rows)
    return path


SFT_FAST = sft.SFTStageConfig(max_steps=10, learning_rate=1e-3, per_device_batch_size=4, max_length=128)
DPO_FAST = dpo.DPOStageConfig(max_steps=10, learning_rate=1e-4, per_device_batch_size=4, max_length=128, beta=0.1)


@pytest.fixture(scope="module")
def sft_result(cache, sft_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft")
    start = time.perf_counter()
    result = sft.run(SFT_FAST, sft_data, "tiny", out)
    result.details["elapsed_s"] = time.perf_counter() - start
    return result


# ----------------------------------------------------------------------------- sft


def test_sft_ten_steps(sft_result):
    m = sft_result.metrics
    print(f"sft: 10 steps in {m['train_runtime_s']:.2f} s of training, {sft_result.details['elapsed_s']:.1f} s "
          "for the whole stage")
    # the stage's wall time is a benchmark figure (benchmarks/train_steps.py), not a unit-test assert
    assert m["steps"] == 10
    assert math.isfinite(m["train_loss_first"]) and math.isfinite(m["train_loss_last"])
    assert m["rows"] == len(ROWS) and m["rows_truncated"] == 0 and m["rows_dropped"] == 0
    for key in ("train_runtime_s", "grad_norm_last", "learning_rate_last", "train_loss"):
        assert key in m, key
    assert sft_result.finite_metrics().keys() == m.keys()


def test_sft_train_log(sft_result):
    rows = read_jsonl(sft_result.outputs["train_log"])
    assert [r["step"] for r in rows] == list(range(1, 11))
    for row in rows:
        for key in ("step", "loss", "grad_norm", "learning_rate", "num_tokens", "mean_token_accuracy", "epoch"):
            assert key in row, key
        assert math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"])
    assert not any("train_runtime" in r for r in rows)  # the end-of-training summary goes to metrics


def test_sft_saved_model_loads_and_generates(sft_result):
    model_dir = sft_result.outputs["model"]
    assert (model_dir / "model.safetensors").exists() and (model_dir / "config.json").exists()
    assert (model_dir / "tokenizer.json").exists()
    assert not list(model_dir.glob("*.bin")) and not list(model_dir.parent.glob(".model*"))
    llm = TransformersChatModel(str(model_dir))
    text = llm.chat([[{"role": "user", "content": "Why is the sky blue?"}]], [Sampling(temperature=0, max_new_tokens=20)])
    assert isinstance(text[0], str) and text[0].strip()
    assert "{% generation %}" in llm.tokenizer.chat_template  # the template survives training


def test_sft_masks_everything_but_the_assistant_answer(cache, sft_data, tmp_path):
    prepared = sft.prepare(SFT_FAST, sft_data, "tiny", tmp_path / "out")
    trainer = prepared.trainer
    tok = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for i, (prompt, response) in enumerate(ROWS[:2]):
        ids, labels = batch["input_ids"][i].tolist(), batch["labels"][i].tolist()
        trained = [t for t, lab in zip(ids, labels) if lab != -100]
        assert tok.decode(trained) == response + tiny.EOS
        first = labels.index(next(lab for lab in labels if lab != -100))
        assert tok.decode(ids[:first]) == f"{tiny.BOS}{tiny.USER}{prompt}{tiny.END}{tiny.ASSISTANT}"
        assert all(lab == -100 for lab in labels[:first])


def test_sft_counts_truncated_rows(cache, sft_data, tmp_path):
    cfg = SFT_FAST.replace(max_length=20, max_steps=1)
    result = sft.run(cfg, sft_data, "tiny", tmp_path / "out")
    assert 0 < result.metrics["rows_truncated"] <= result.metrics["rows"]
    assert result.metrics["rows_dropped"] <= result.metrics["rows_truncated"]
    assert result.metrics["max_row_tokens"] > 20


def test_max_length_is_clamped_to_the_model(cache, sft_data, pref_data, tmp_path):
    prepared = sft.prepare(SFT_FAST.replace(max_length=4096), sft_data, "tiny", tmp_path / "sft")
    assert prepared.counts["max_length"] == 512 and prepared.trainer.args.max_length == 512
    prepared = dpo.prepare(DPO_FAST.replace(max_length=4096), pref_data, "tiny", tmp_path / "dpo")
    assert prepared.counts["max_length"] == 512 and prepared.trainer.args.max_length == 512


def test_sft_bad_inputs(cache, sft_data, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        sft.run(SFT_FAST, empty, "tiny", tmp_path / "o1")

    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"id": "a", "prompt": "p", "response": "r"}\n{"id": "b", "prompt": "p"}\n')
    with pytest.raises(InputError) as err:
        sft.run(SFT_FAST, missing, "tiny", tmp_path / "o2")
    assert f"{missing}:2" in str(err.value) and "'response'" in str(err.value)

    blank = tmp_path / "blank.jsonl"
    blank.write_text('\n{"id": "a", "prompt": "p", "response": "  "}\n')
    with pytest.raises(InputError) as err:
        sft.run(SFT_FAST, blank, "tiny", tmp_path / "o3")
    assert f"{blank}:2" in str(err.value) and "'response'" in str(err.value)

    with pytest.raises(InputError, match="not found"):
        sft.run(SFT_FAST, tmp_path / "nope.jsonl", "tiny", tmp_path / "o4")

    out = tmp_path / "o5"
    with pytest.raises(InputError, match="model directory not found"):
        sft.run(SFT_FAST, sft_data, str(tmp_path / "no-model"), out)
    assert not out.exists()  # failed before any training or writing

    if os.environ.get("HF_HUB_OFFLINE") == "1":  # a hub id that is not in the local cache
        with pytest.raises(InputError, match="cannot load model 'nobody/no-such-model'"):
            sft.run(SFT_FAST, sft_data, "nobody/no-such-model", out)
        assert not out.exists()


def test_sft_config_validation_and_docs():
    with pytest.raises(ConfigError, match="max_steps"):
        sft.SFTStageConfig(max_steps=0)
    with pytest.raises(ConfigError, match="warmup_ratio"):
        sft.SFTStageConfig.from_dict({"warmup_ratio": 1.5})
    with pytest.raises(ConfigError, match="lr_scheduler"):
        sft.SFTStageConfig.from_dict({"lr_scheduler": "exotic"})
    with pytest.raises(ConfigError, match="did you mean"):
        sft.SFTStageConfig.from_dict({"learning_rat": 1e-4})
    docs = field_docs(sft.SFTStageConfig)
    assert set(docs) == {f for f in sft.SFTStageConfig.__dataclass_fields__}
    docs = field_docs(dpo.DPOStageConfig)
    assert set(docs) == {f for f in dpo.DPOStageConfig.__dataclass_fields__}


# ----------------------------------------------------------------------------- dpo


def test_dpo_ten_steps_against_the_sft_model(sft_result, pref_data, tmp_path):
    start = time.perf_counter()
    result = dpo.run(DPO_FAST, pref_data, str(sft_result.outputs["model"]), tmp_path / "dpo")
    elapsed = time.perf_counter() - start
    m = result.metrics
    print(f"dpo: 10 steps in {m['train_runtime_s']:.2f} s of training, {elapsed:.1f} s for the whole stage")
    # the stage's wall time is a benchmark figure (benchmarks/train_steps.py), not a unit-test assert
    assert m["steps"] == 10 and m["pairs"] == len(ROWS)
    assert math.isfinite(m["train_loss_first"]) and math.isfinite(m["train_loss_last"])
    # step 1: the policy is the reference (the precomputed log-probs are the SFT model's), so the loss is log 2
    assert m["train_loss_first"] == pytest.approx(math.log(2), abs=1e-3)

    rows = read_jsonl(result.outputs["train_log"])
    assert len(rows) == 10
    for key in ("loss", "grad_norm", "learning_rate", "rewards/chosen", "rewards/rejected", "rewards/margins",
                "rewards/accuracies", "logps/chosen", "logps/rejected", "entropy"):
        assert key in rows[0], key
    assert all(math.isfinite(r["loss"]) for r in rows)
    for key in ("rewards_margins_last", "rewards_accuracies_last", "train_runtime_s"):
        assert key in m, key

    llm = TransformersChatModel(str(result.outputs["model"]))
    out = llm.chat([[{"role": "user", "content": "Hi"}]], [Sampling(temperature=0, max_new_tokens=10)])
    assert isinstance(out[0], str)
    assert json.loads((tmp_path / "dpo" / "dpo_config.json").read_text())["config"]["beta"] == 0.1


def test_dpo_without_precompute_uses_a_frozen_copy(cache, pref_data, tmp_path):
    cfg = DPO_FAST.replace(max_steps=2, precompute_ref_log_probs=False)
    result = dpo.run(cfg, pref_data, "tiny", tmp_path / "dpo")
    assert result.metrics["train_loss_first"] == pytest.approx(math.log(2), abs=1e-3)


def test_dpo_needs_pairs(cache, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(StageError, match="no preference pairs"):
        dpo.run(DPO_FAST, empty, "tiny", tmp_path / "o1")

    same = tmp_path / "same.jsonl"
    write_jsonl(same, [{"id": "a", "prompt": "p", "chosen": "x", "rejected": "x", "principle": "q",
                        "confidence": 1.0}])
    with pytest.raises(StageError, match="1 with chosen == rejected"):
        dpo.run(DPO_FAST, same, "tiny", tmp_path / "o2")

    low = tmp_path / "low.jsonl"
    write_jsonl(low, [{"id": "a", "prompt": "p", "chosen": "x", "rejected": "y", "principle": "q",
                       "confidence": 0.55}])
    with pytest.raises(StageError, match="below min_confidence"):
        dpo.run(DPO_FAST.replace(min_confidence=0.6), low, "tiny", tmp_path / "o3")


def test_dpo_bad_rows(cache, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "p", "chosen": "x", "rejected": "y", "principle": "q", '
                   '"confidence": "high"}\n')
    with pytest.raises(InputError) as err:
        dpo.run(DPO_FAST, bad, "tiny", tmp_path / "o1")
    assert f"{bad}:1" in str(err.value) and "'confidence'" in str(err.value)
    with pytest.raises(ConfigError, match="beta"):
        dpo.DPOStageConfig(beta=0)
    with pytest.raises(ConfigError, match="loss_type"):
        dpo.DPOStageConfig.from_dict({"loss_type": "nope"})


def test_sft_rerun_resumes_from_the_last_checkpoint(cache, sft_data, tmp_path):
    out = tmp_path / "out"
    first = sft.run(SFT_FAST.replace(max_steps=4, save_steps=2), sft_data, "tiny", out)
    assert first.metrics["steps"] == 4 and (out / "checkpoints" / "checkpoint-4").is_dir()
    # a retried pod runs the same stage again with more steps to go: it continues from checkpoint-4
    second = sft.run(SFT_FAST.replace(max_steps=6, save_steps=2), sft_data, "tiny", out)
    assert second.details["resumed_from"].endswith("checkpoint-4")
    assert second.metrics["steps"] == 6
    assert [r["step"] for r in read_jsonl(out / "train_log.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert len(list((out / "checkpoints").glob("checkpoint-*"))) <= SFT_FAST.save_total_limit
