"""The training knobs the sft and dpo stages share (both map them onto TRL through `sft.trainer_args`).

`TrainingConfig` holds the fields, their docs and their range checks; `SFTStageConfig` and `DPOStageConfig`
subclass it, add their own fields and re-declare the inherited ones whose default or wording differs for them
(`config.base.field_docs` reads the `#:` comments along the class hierarchy, the subclass's winning).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cai_core import deepspeed_configs
from cai_core.config.base import ConfigBase, require

LrScheduler = Literal["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_min_lr"]
LongRows = Literal["truncate", "error"]


@dataclass(frozen=True)
class TrainingConfig(ConfigBase):
    """Optimizer, schedule, batching, checkpointing and runtime settings of a TRL trainer (the sft defaults)."""

    #: Optimizer steps to run; -1 runs `epochs` passes over the data instead.
    max_steps: int = -1
    #: Passes over the data (fractions allowed); used when max_steps is -1.
    epochs: float = 1.0
    #: Peak learning rate of AdamW.
    learning_rate: float = 2e-5
    #: Rows per device per forward pass.
    per_device_batch_size: int = 8
    #: Forward passes accumulated into one optimizer step (effective batch = this x batch x devices).
    gradient_accumulation_steps: int = 1
    #: Tokens per example (template included); longer examples are cut at the end and counted as rows_truncated.
    max_length: int = 1024
    #: Rows longer than max_length: truncate (cut at the end, counted) or error (refuse the dataset, naming the row).
    long_rows: LongRows = "truncate"
    #: Share of the steps spent warming the learning rate up from 0, in [0, 1).
    warmup_ratio: float = 0.03
    #: Learning-rate schedule after warm-up.
    lr_scheduler: LrScheduler = "cosine"
    #: AdamW weight decay.
    weight_decay: float = 0.0
    #: Gradient clipping norm.
    max_grad_norm: float = 1.0
    #: Seed of the trainer (data order, dropout).
    seed: int = 0
    #: Log (and write a train_log.jsonl row) every this many optimizer steps.
    logging_steps: int = 1
    #: Save a resumable checkpoint every this many steps under out_dir/checkpoints; 0 saves only the final model.
    save_steps: int = 0
    #: Checkpoints kept under out_dir/checkpoints (older ones are deleted).
    save_total_limit: int = 2
    #: Resume from the last checkpoint under out_dir/checkpoints when there is one (a retried pod).
    resume: bool = True
    #: bf16 mixed precision (GPUs; leave false on CPU).
    bf16: bool = False
    #: Recompute activations in the backward pass to save memory (large models).
    gradient_checkpointing: bool = False
    #: Attention kernel passed to from_pretrained (e.g. flash_attention_2, sdpa); empty = the transformers default.
    attn_implementation: str = ""
    #: Liger kernels (RMSNorm, SwiGLU, RoPE; about +20% tokens/s on GPUs); needs the liger-kernel package.
    use_liger_kernel: bool = False
    #: A system turn put before every example; empty for none.
    system_prompt: str = ""
    #: DeepSpeed: zero2, zero3, zero3_offload (packaged), a JSON file path, or inline JSON; empty for none.
    deepspeed: str = ""
    #: Worker processes of the data loader.
    dataloader_num_workers: int = 0
    #: LoRA rank (PEFT): 0 = full fine-tuning; above 0 only the adapter trains and the next steps get the merged model.
    lora_r: int = 0
    #: LoRA scaling numerator (the update is scaled by lora_alpha / lora_r).
    lora_alpha: int = 16
    #: Dropout on the LoRA branch.
    lora_dropout: float = 0.05
    #: Modules that get adapters: ["all-linear"] (every linear layer but the LM head) or module names (q_proj, ...).
    lora_target_modules: tuple[str, ...] = ("all-linear",)
    #: QLoRA: load the frozen base in 4 bits (bitsandbytes NF4) under the adapter; needs lora_r > 0 and a CUDA GPU.
    load_in_4bit: bool = False

    def validate(self) -> None:
        deepspeed_configs.validate_name(self.deepspeed)
        require(self.max_steps == -1 or self.max_steps >= 1, "max_steps", "must be -1 (use epochs) or at least 1")
        require(self.epochs > 0, "epochs", "must be above 0")
        require(0 < self.learning_rate < 1, "learning_rate", "must be in (0, 1)")
        require(self.per_device_batch_size >= 1, "per_device_batch_size", "must be at least 1")
        require(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "must be at least 1")
        require(self.max_length >= 8, "max_length", "must be at least 8 tokens")
        require(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        require(self.weight_decay >= 0, "weight_decay", "must be 0 or more")
        require(self.max_grad_norm > 0, "max_grad_norm", "must be above 0")
        require(self.logging_steps >= 1, "logging_steps", "must be at least 1")
        require(self.save_steps >= 0, "save_steps", "must be 0 (final model only) or more")
        require(self.save_total_limit >= 1, "save_total_limit", "must be at least 1")
        require(self.dataloader_num_workers >= 0, "dataloader_num_workers", "must be 0 or more")
        require(self.lora_r >= 0, "lora_r", "must be 0 (full fine-tuning) or a rank of at least 1")
        require(self.lora_alpha >= 1, "lora_alpha", "must be at least 1")
        require(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
        require(len(self.lora_target_modules) >= 1 and all(self.lora_target_modules), "lora_target_modules",
                'must name at least one module, or be ["all-linear"]')
        require(not self.load_in_4bit or self.lora_r > 0, "load_in_4bit",
                "QLoRA trains an adapter over the 4-bit base: set lora_r above 0 too")
