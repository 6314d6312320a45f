"""LoRA / QLoRA through PEFT for the sft and dpo stages, on the tiny model: what trains, what is handed on,
the DPO reference, the config checks, and ZeRO-3 with LoRA on two CPU ranks."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from cai_core.config.run import RunConfig
from cai_core.errors import ConfigError, InputError
from cai_core.llm.base import Sampling
from cai_core.llm.transformers_backend import TransformersChatModel
from cai_core.models import tiny
from cai_core.records import write_jsonl
from cai_core.stages import dpo, sft
from tests.training.test_deepspeed import ROWS, _env, _summary, _torchrun

SFT_LORA = sft.SFTStageConfig(max_steps=6, learning_rate=1e-2, per_device_batch_size=2, max_length=64, lora_r=8)
DPO_LORA = dpo.DPOStageConfig(max_steps=3, learning_rate=1e-3, per_device_batch_size=2, max_length=64, lora_r=8)


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("lora") / "sft.jsonl"
    write_jsonl(path, [{"id": f"r{i}", "prompt": p, "response": r} for i, (p, r) in enumerate(ROWS)])
    return path


@pytest.fixture(scope="module")
def pairs_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("lora") / "pairs.jsonl"
    write_jsonl(path, [{"id": f"p{i}", "prompt": p, "chosen": r, "rejected": ROWS[(i + 1) % len(ROWS)][1],
                        "principle": "x", "confidence": 0.9} for i, (p, r) in enumerate(ROWS)])
    return path


@pytest.fixture(scope="module")
def sft_lora(cache, sft_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft-lora")
    return sft.run(SFT_LORA, sft_data, "tiny", out), out


def _weights(model_dir) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def test_sft_lora_trains_a_small_share_and_hands_on_a_merged_model(cache, sft_lora):
    result, out = sft_lora
    m = result.metrics
    assert 0 < m["trainable_params"] < 0.1 * m["total_params"]
    assert m["trainable_share"] == pytest.approx(m["trainable_params"] / m["total_params"])
    assert m["steps"] == 6 and math.isfinite(m["train_loss_last"])
    model_dir, adapter_dir = out / "model", out / "adapter"
    assert result.outputs["model"] == model_dir and result.outputs["adapter"] == adapter_dir
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["r"] == 8
    # the merged model is a plain model: no adapter files, the base's tensor names and shapes, changed weights
    assert not (model_dir / "adapter_config.json").exists()
    merged, base = _weights(model_dir), _weights(tiny.ensure_tiny_model(cache))
    assert merged.keys() == base.keys() and all(merged[k].shape == base[k].shape for k in base)
    changed = [k for k in base if not torch.equal(merged[k], base[k])]
    assert changed and all("proj" in k for k in changed)  # only the adapted linear layers moved
    llm = TransformersChatModel(str(model_dir))
    assert isinstance(llm.chat([[{"role": "user", "content": "Hi"}]], [Sampling(temperature=0, max_new_tokens=6)])[0], str)


def test_full_fine_tuning_counts_every_parameter(cache, sft_data, tmp_path):
    result = sft.run(sft.SFTStageConfig(max_steps=1, per_device_batch_size=2, max_length=64), sft_data, "tiny", tmp_path)
    assert result.metrics["trainable_params"] == result.metrics["total_params"] > 0
    assert "adapter" not in result.outputs and not (tmp_path / "adapter").exists()


def test_dpo_lora_uses_the_adapter_disabled_base_as_reference(sft_lora, pairs_data, tmp_path):
    _, sft_out = sft_lora
    result = dpo.run(DPO_LORA, pairs_data, str(sft_out / "model"), tmp_path)
    m = result.metrics
    assert result.details["reference"] == "precomputed from the adapter-disabled base (LoRA)"
    assert m["train_loss_first"] == pytest.approx(math.log(2), abs=1e-4)  # step 1: policy == reference
    assert 0 < m["trainable_params"] < 0.1 * m["total_params"]
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert not (tmp_path / "model" / "adapter_config.json").exists()


@pytest.mark.parametrize("stage, cls", [("sft", sft.SFTStageConfig), ("dpo", dpo.DPOStageConfig)])
def test_qlora_on_a_machine_without_cuda_is_a_clear_error(cache, sft_data, pairs_data, tmp_path, stage, cls):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: QLoRA is allowed here")
    cfg = cls(max_steps=1, lora_r=8, load_in_4bit=True)
    module, data = (sft, sft_data) if stage == "sft" else (dpo, pairs_data)
    with pytest.raises(InputError, match=rf"{stage}\.load_in_4bit: QLoRA .* needs a CUDA GPU"):
        module.run(cfg, data, "tiny", tmp_path)
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("overrides, message", [
    ({"sft": {"lora_r": -1}}, "sft.lora_r: must be 0"),
    ({"dpo": {"load_in_4bit": True}}, "dpo.load_in_4bit: QLoRA trains an adapter"),
    ({"dpo": {"lora_r": 8, "lora_dropout": 1.0}}, r"dpo.lora_dropout: must be in \[0, 1\)"),
    ({"sft": {"lora_r": 8, "lora_target_modules": []}}, "sft.lora_target_modules: must name"),
    ({"sft": {"lora_rank": 8}}, "sft.lora_rank: unknown config key"),
])
def test_lora_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict(overrides)


def test_target_modules_map_onto_peft():
    from cai_core.training import lora

    assert lora.peft_config(sft.SFTStageConfig()) is None
    assert lora.peft_config(sft.SFTStageConfig(lora_r=4)).target_modules == "all-linear"
    named = lora.peft_config(sft.SFTStageConfig(lora_r=4, lora_alpha=8, lora_target_modules=("q_proj", "v_proj")))
    assert set(named.target_modules) == {"q_proj", "v_proj"} and named.r == 4 and named.lora_alpha == 8


@pytest.mark.slow
def test_zero3_sft_lora_two_ranks(cache, sft_data, tmp_path):
    """The DeepSpeed path as a PyTorchJob pod runs it: ZeRO-3 over 2 gloo ranks, LoRA adapter, merged model."""
    out = tmp_path / "sft"
    _, output = _torchrun(["sft", "--data", str(sft_data), "--model", "tiny", "--out", str(out),
                           "--set", "sft.deepspeed=zero3", "--set", "sft.max_steps=2", "--set", "sft.lora_r=8",
                           "--set", "sft.per_device_batch_size=2", "--set", "sft.max_length=64",
                           "--set", "sft.learning_rate=1e-2"], _env(cache, tmp_path / "pod"))
    m = _summary(output)["metrics"]
    assert m["world_size"] == 2 and m["zero_stage"] == 3 and m["steps"] == 2
    assert 0 < m["trainable_params"] < 0.1 * m["total_params"]
    base = _weights(tiny.ensure_tiny_model(cache))
    merged = _weights(out / "model")
    assert merged.keys() == base.keys() and all(merged[k].shape == base[k].shape for k in base)  # gathered, full
    assert any(not torch.equal(merged[k], base[k]) for k in base if "proj" in k)  # the adapter was merged in
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert adapter and all(t.numel() > 0 for t in adapter.values())  # not ZeRO-3's empty placeholders
