"""LoRA and QLoRA for the sft and dpo stages, through PEFT and TRL's `peft_config`.

`lora_r: 0` (the default) is full fine-tuning and none of this runs. With `lora_r > 0` the trainer wraps the
policy in a PEFT LoRA model; only the adapter trains. The stage then hands the next steps a *merged* model
(`merge_and_unload` on the unquantized base), so pairs, gate, evaluate and vLLM load it like any model, and
keeps the adapter beside it (`<out>/adapter`). DPO with a LoRA policy uses the adapter-disabled base as its
reference: TRL does that when the policy is a PEFT model and no reference model is passed, so no second copy
of the weights is loaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cai_core.errors import InputError

#: Beside `model/` in a LoRA stage's output: the trained adapter (adapter_config.json, adapter weights).
ADAPTER_DIR = "adapter"


def enabled(cfg: Any) -> bool:
    return cfg.lora_r > 0


def peft_config(cfg: Any):
    """The `peft.LoraConfig` for TRL's `peft_config`, or None for full fine-tuning."""
    if not enabled(cfg):
        return None
    from peft import LoraConfig

    targets = tuple(cfg.lora_target_modules)
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias="none",
                      task_type="CAUSAL_LM", target_modules="all-linear" if targets == ("all-linear",) else list(targets))


def quantization_config(cfg: Any, stage: str, cuda: bool):
    """QLoRA's 4-bit `BitsAndBytesConfig`, or None. QLoRA needs a CUDA GPU: refuse it clearly anywhere else."""
    if not cfg.load_in_4bit:
        return None
    if not cuda:
        raise InputError(f"{stage}.load_in_4bit: QLoRA loads the base model in 4 bits with bitsandbytes, which needs "
                         f"a CUDA GPU; this machine has none (set {stage}.load_in_4bit: false, or train on the cluster)")
    try:
        import bitsandbytes  # noqa: F401
        import torch
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise InputError(f"{stage}.load_in_4bit: needs the bitsandbytes package (pip install bitsandbytes)") from None
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def parameter_counts(model) -> dict[str, float]:
    """trainable_params and total_params of the trainer's model (ZeRO-3 partitions count at their full size)."""
    if hasattr(model, "get_nb_trainable_parameters"):  # a PEFT model; it knows ds_numel too
        trainable, total = model.get_nb_trainable_parameters()
    else:
        sizes = [(getattr(p, "ds_numel", 0) or p.numel(), p.requires_grad) for p in model.parameters()]
        trainable, total = sum(n for n, grad in sizes if grad), sum(n for n, _ in sizes)
    return {"trainable_params": float(trainable), "total_params": float(total),
            "trainable_share": float(trainable) / max(1.0, float(total))}


def merge_adapter(base_path: str, adapter_dir: Path, tokenizer, out_dir: Path, *, bf16: bool,
                  zero3_config: Any = None) -> None:
    """Load the unquantized base, apply the adapter, merge it into the weights and save a plain model to out_dir.

    Runs on rank 0 alone. Under ZeRO-3 transformers would load the base partitioned across ranks (zero.Init, a
    collective the other ranks never join: a hang), so the DeepSpeed config is unset for the load and restored.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from transformers.integrations import deepspeed as hf_deepspeed

    if zero3_config is not None:
        hf_deepspeed.unset_hf_deepspeed_config()
    try:
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.bfloat16 if bf16 else torch.float32)
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
        merged.save_pretrained(str(out_dir), safe_serialization=True)
    finally:
        if zero3_config is not None:
            hf_deepspeed.set_hf_deepspeed_config(zero3_config)
    tokenizer.save_pretrained(str(out_dir))
