"""DeepSpeed configs (packaged, custom, broken) and real ZeRO-3 runs of the tiny model on CPU through TRL.

The slow tests run `cai train` under `torchrun --nproc_per_node 2` (gloo on CPU), exactly what every pod of a
PyTorchJob runs, with ZeRO-3 sharding the tiny model over the two ranks:

* sft with its output on S3: checkpoints uploaded after each save, the final 16-bit-gathered safetensors model
  uploaded and loadable; then a "restarted pod" (a fresh work directory) resumes from the latest checkpoint it
  downloads from S3;
* dpo with the reference log-probs precomputed once (the working path under ZeRO-3, see stages/dpo.py).

The first run on a machine compiles DeepSpeed's CPU communication op (about 60 s here); each test stays well
under 3 minutes.
"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import pytest

from cai_core import deepspeed_configs, storage
from cai_core.errors import ConfigError, InputError
from cai_core.models import tiny
from cai_core.records import read_jsonl, write_jsonl
from cai_core.stages import dpo, sft

ROWS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Why is the sky blue?", "Air scatters blue light more than red light."),
    ("How can I save money?", "Make a budget and save a little every month."),
    ("Write a sentence about the sea.", "The sea was calm and grey."),
]


# ----------------------------------------------------------------------------- the packaged configs


@pytest.mark.parametrize("name", ["zero2", "zero3", "zero3_offload", "zero3-offload"])
def test_packaged_configs_parse(name):
    path = deepspeed_configs.packaged_path(name)
    assert path.exists()
    data = deepspeed_configs.load(name)
    assert data == json.loads(path.read_text())
    stage = deepspeed_configs.zero_stage(data)
    assert stage == (2 if name == "zero2" else 3)
    if stage == 3:
        assert data["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    # batch sizes, clipping, precision and bucket sizes are left to the Hugging Face integration
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping"):
        assert data[key] == "auto"
    assert data["bf16"]["enabled"] == "auto" and data["zero_optimization"]["reduce_bucket_size"] == "auto"
    offload = data["zero_optimization"].get("offload_optimizer")
    assert (offload is not None) == ("offload" in name)


def test_packaged_configs_are_package_data():
    names = {p.name for p in (resources.files("cai_core.configs") / "deepspeed").iterdir()}
    assert {"zero2.json", "zero3.json", "zero3_offload.json"} <= names


def test_missing_and_broken_configs_name_the_file_and_position(tmp_path):
    with pytest.raises(InputError, match="DeepSpeed config not found"):
        deepspeed_configs.load(str(tmp_path / "nope.json"))
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "zero_optimization": {\n    "stage": 3,\n  }\n}\n')
    with pytest.raises(InputError) as err:
        deepspeed_configs.load(str(broken))
    assert str(err.value).startswith(f"{broken}: ") and "line 4 column 3" in str(err.value)
    with pytest.raises(InputError, match="line 1 column 2"):
        deepspeed_configs.load("{nope}")
    array = tmp_path / "array.json"
    array.write_text("[1, 2]")
    with pytest.raises(InputError, match="must be a JSON object"):
        deepspeed_configs.load(str(array))
    no_gather = tmp_path / "z3.json"
    no_gather.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    with pytest.raises(InputError, match="stage3_gather_16bit_weights_on_model_save: true"):
        deepspeed_configs.load(str(no_gather))
    bad_stage = tmp_path / "s.json"
    bad_stage.write_text(json.dumps({"zero_optimization": {"stage": 4}}))
    with pytest.raises(InputError, match="stage must be 0, 1, 2 or 3"):
        deepspeed_configs.load(str(bad_stage))
    assert deepspeed_configs.load("") is None


def test_custom_file_travels_inline(tmp_path):
    custom = tmp_path / "mine.json"
    custom.write_text(json.dumps({"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "auto"}))
    inline = deepspeed_configs.inline(str(custom))
    assert json.loads(inline)["zero_optimization"]["stage"] == 2
    assert deepspeed_configs.load(inline) == json.loads(custom.read_text())
    assert deepspeed_configs.inline("zero3") == "zero3"


def test_stage_configs_check_the_name():
    with pytest.raises(ConfigError, match="deepspeed: 'zero4' is neither"):
        sft.SFTStageConfig(deepspeed="zero4")
    with pytest.raises(ConfigError, match="deepspeed"):
        dpo.DPOStageConfig.from_dict({"deepspeed": "stage3"})
    assert sft.SFTStageConfig(deepspeed="configs/my.json").deepspeed == "configs/my.json"
    with pytest.raises(ConfigError, match="FlashAttention"):
        sft.SFTStageConfig(packing=True)
    assert sft.SFTStageConfig(packing=True, attn_implementation="flash_attention_2").packing


def test_a_broken_deepspeed_config_stops_the_stage_before_the_model_loads(cache, tmp_path, monkeypatch):
    data = tmp_path / "sft.jsonl"
    write_jsonl(data, [{"id": f"r{i}", "prompt": p, "response": r} for i, (p, r) in enumerate(ROWS)])
    broken = tmp_path / "zero3_broken.json"
    broken.write_text('{"zero_optimization": {"stage": 3 "stage3_gather_16bit_weights_on_model_save": true}}')
    monkeypatch.setattr(sft, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(InputError) as err:
        sft.run(sft.SFTStageConfig(deepspeed=str(broken)), data, "tiny", tmp_path / "out")
    assert str(broken) in str(err.value) and "line 1 column 35" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_trl_arguments_follow_the_config(cache, tmp_path):
    """The config -> SFTConfig / DPOConfig mapping (on CPU: no bf16, no packing)."""
    data = tmp_path / "sft.jsonl"
    write_jsonl(data, [{"id": f"r{i}", "prompt": p, "response": r} for i, (p, r) in enumerate(ROWS)])
    cfg = sft.SFTStageConfig(max_steps=3, epochs=2, learning_rate=3e-4, warmup_ratio=0.1, lr_scheduler="cosine",
                             seed=7, max_length=100, gradient_checkpointing=True, assistant_only_loss=True)
    args = sft.prepare(cfg, data, "tiny", tmp_path / "o").trainer.args
    assert (args.max_steps, args.num_train_epochs, args.learning_rate, args.seed) == (3, 2.0, 3e-4, 7)
    # 3 steps x 0.1 warm-up rounds down to none: no step trains at lr 0 (sft.warmup_steps)
    assert args.lr_scheduler_type == "cosine" and args.warmup_steps == 0 and args.max_length == 100
    assert args.assistant_only_loss and args.activation_checkpointing and not args.bf16
    assert not sft.prepare(cfg.replace(assistant_only_loss=False), data, "tiny", tmp_path / "o1").trainer.args \
        .assistant_only_loss
    assert not args.packing and not args.padding_free and not args.use_liger_kernel
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, [{"id": f"p{i}", "prompt": p, "chosen": r, "rejected": ROWS[(i + 1) % 4][1],
                         "principle": "x", "confidence": 0.9} for i, (p, r) in enumerate(ROWS)])
    dcfg = dpo.DPOStageConfig(beta=0.25, learning_rate=1e-5, epochs=1, max_length=90, loss_type="ipo")
    args = dpo.prepare(dcfg, pairs, "tiny", tmp_path / "d").trainer.args
    assert (args.beta, args.learning_rate, args.max_length, args.loss_type) == (0.25, 1e-5, 90, ["ipo"])
    assert args.precompute_ref_log_probs
    with pytest.raises(ConfigError, match="sft.bf16: needs a GPU"):
        sft.prepare(cfg.replace(bf16=True), data, "tiny", tmp_path / "o2")


# ----------------------------------------------------------------------------- real ZeRO-3 runs (slow)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], env: dict[str, str], timeout: float = 170) -> tuple[float, str]:
    """`torchrun --nproc_per_node 2 -m cai_core.training ...`: (seconds, output); fails with the output."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "cai_core.training", *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{output[-6000:]}"
    return elapsed, output


def _summary(output: str) -> dict:
    start = output.index('{\n "details"')
    return json.loads(output[start:output.index("\n}\n", start) + 3])


def _env(cache: Path, workdir: Path, extra: dict | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_"))}
    env.update(CAI_CACHE_DIR=str(cache), CAI_TRAIN_WORKDIR=str(workdir), OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **(extra or {}))
    return env


@pytest.mark.slow
@pytest.mark.s3
def test_zero3_sft_two_ranks_checkpoints_to_s3_and_resumes(cache, s3_bucket, s3_env, tmp_path):
    data = tmp_path / "sft.jsonl"
    write_jsonl(data, [{"id": f"r{i}", "prompt": p, "response": r} for i, (p, r) in enumerate(ROWS)])
    data_uri, out = f"s3://{s3_bucket}/run/in/sft.jsonl", f"s3://{s3_bucket}/run/_train/sft"
    storage.upload_file(str(data), data_uri)
    common = ["sft", "--data", data_uri, "--model", "tiny", "--out", out,
              "--set", "sft.deepspeed=zero3", "--set", "sft.save_steps=2", "--set", "sft.per_device_batch_size=2",
              "--set", "sft.max_length=64", "--set", "sft.learning_rate=1e-3"]
    first_s, output = _torchrun(common + ["--set", "sft.max_steps=4"], _env(cache, tmp_path / "pod1", s3_env))
    first = _summary(output)
    assert first["metrics"]["world_size"] == 2 and first["metrics"]["zero_stage"] == 3
    assert first["metrics"]["steps"] == 4 and math.isfinite(first["metrics"]["train_loss_last"])
    assert "checkpoint-2 uploaded" in output and "checkpoint-4 uploaded" in output
    files = {u[len(out) + 1:] for u in storage.list_files(out)}
    for step in (2, 4):
        for name in ("_COMPLETE.json", "node-0/_MANIFEST.json", "node-0/config.json", "node-0/model.safetensors",
                     f"node-0/global_step{step}/zero_pp_rank_0_mp_rank_00_optim_states.pt",
                     f"node-0/global_step{step}/zero_pp_rank_1_mp_rank_00_optim_states.pt"):
            assert f"checkpoints/checkpoint-{step}/{name}" in files, name
    assert "final/model/model.safetensors" in files and "final/_MANIFEST.json" in files

    # the final model: one safetensors file with the full (gathered) weights, loadable and generating
    local = tmp_path / "final"
    storage.download_dir(f"{out}/final", str(local))
    from safetensors import safe_open

    from cai_core.llm.base import Sampling
    from cai_core.llm.transformers_backend import TransformersChatModel

    with safe_open(str(local / "model" / "model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    base = json.loads((tiny.ensure_tiny_model(cache) / "config.json").read_text())
    # the full, gathered weights, not ZeRO-3's partitioned placeholders of shape (0,)
    assert shapes["model.embed_tokens.weight"] == (base["vocab_size"], base["hidden_size"])
    llm = TransformersChatModel(str(local / "model"))
    text = llm.chat([[{"role": "user", "content": "Hi"}]], [Sampling(temperature=0, max_new_tokens=8)])
    assert isinstance(text[0], str)

    # a restarted pod: empty work directory, two more steps; it resumes from checkpoint-4 downloaded from S3
    second_s, output = _torchrun(common + ["--set", "sft.max_steps=6"], _env(cache, tmp_path / "pod2", s3_env))
    second = _summary(output)
    assert "resuming from checkpoint-4" in output and second["details"]["resumed_from"].endswith("checkpoint-4")
    assert second["metrics"]["steps"] == 6
    log = read_jsonl(local / "train_log.jsonl")
    storage.download_file(f"{out}/final/train_log.jsonl", str(tmp_path / "log2.jsonl"))
    log2 = read_jsonl(tmp_path / "log2.jsonl")
    assert [r["step"] for r in log2] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in log2[:4]] == [r["loss"] for r in log]  # the first run's rows were kept
    remaining = sorted({u[len(out) + 1:].split("/")[1] for u in storage.list_files(f"{out}/checkpoints")})
    assert remaining == ["checkpoint-4", "checkpoint-6"]  # save_total_limit=2 on S3 too
    print(f"zero3 sft, 2 ranks: first run {first_s:.1f} s (4 steps), resumed run {second_s:.1f} s (2 steps)")


@pytest.mark.slow
def test_zero3_dpo_two_ranks_precomputes_the_reference(cache, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, [{"id": f"p{i}", "prompt": p, "chosen": r, "rejected": ROWS[(i + 1) % 4][1],
                         "principle": "x", "confidence": 0.9} for i, (p, r) in enumerate(ROWS)])
    out = tmp_path / "dpo"
    seconds, output = _torchrun(["dpo", "--data", str(pairs), "--model", "tiny",
                                 "--out", str(out), "--set", "dpo.deepspeed=zero3", "--set", "dpo.max_steps=3",
                                 "--set", "dpo.per_device_batch_size=2", "--set", "dpo.max_length=64",
                                 "--set", "dpo.learning_rate=1e-4"], _env(cache, tmp_path / "pod"))
    result = _summary(output)
    m = result["metrics"]
    assert m["world_size"] == 2 and m["zero_stage"] == 3 and m["steps"] == 3
    assert result["details"]["reference"] == "precomputed from a frozen copy before step 1"
    # step 1: the policy is the reference, so the loss is exactly log 2 (the precomputed log-probs are right)
    assert m["train_loss_first"] == pytest.approx(math.log(2), abs=1e-4)
    rows = read_jsonl(out / "train_log.jsonl")
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
                "entropy", "tokens_per_s"):
        assert key in rows[-1], key
    assert (out / "model" / "model.safetensors").exists() and not (out / ".dpo_dataset").exists()
    print(f"zero3 dpo, 2 ranks: {seconds:.1f} s for 3 steps")
