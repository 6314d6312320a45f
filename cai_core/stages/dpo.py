"""Stage 7, dpo: direct preference optimisation on the judged pairs.

Rows are records.PREFERENCE ``{"id", "prompt", "chosen", "rejected",
"principle", "confidence"}``; each becomes a conversational preference example
(prompt = [optional system turn, user turn], chosen / rejected = one assistant
turn each) for TRL's `DPOTrainer`. The reference model is the model we start
from (the SFT model), frozen: with ``precompute_ref_log_probs`` (the default)
its log-probabilities of every chosen and rejected answer are computed once,
before the first step, and no second copy of the model is kept; without it, a
frozen copy is loaded beside the policy.

Outputs under ``out_dir``: ``model/`` (safetensors, moved into place when
complete), ``train_log.jsonl`` (one row per logged step: loss, grad_norm,
learning_rate, rewards/chosen, rewards/rejected, rewards/margins,
rewards/accuracies, logps/chosen, logps/rejected, logits/*, entropy,
mean_token_accuracy, num_tokens, epoch), ``checkpoints/``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cai_core.configbase import ConfigBase, require
from cai_core.errors import InputError, StageError
from cai_core.records import PREFERENCE, read_jsonl
from cai_core.stages.base import StageResult
from cai_core.stages.sft import (
    LrScheduler,
    Prepared,
    checkpoint_step,
    clamp_max_length,
    finish,
    last_checkpoint,
    load_model_for_training,
    numbered_rows,
    train_log_callback,
    trainer_args,
)

log = logging.getLogger(__name__)

LossType = Literal["sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "nca_pair", "exo_pair",
                   "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm"]


@dataclass(frozen=True)
class DPOStageConfig(ConfigBase):
    """DPO (TRL DPOTrainer) against the frozen SFT model."""

    #: Strength of the pull towards the reference model (higher = stay closer).
    beta: float = 0.1
    #: Preference loss (TRL loss_type); "sigmoid" is the DPO paper's.
    loss_type: LossType = "sigmoid"
    #: Label smoothing (robust / exo_pair losses; 0 for plain DPO).
    label_smoothing: float = 0.0
    #: Peak learning rate of AdamW.
    learning_rate: float = 5e-7
    #: Optimizer steps to run; -1 runs `epochs` passes over the pairs instead.
    max_steps: int = -1
    #: Passes over the pairs (fractions allowed); used when max_steps is -1.
    epochs: float = 1.0
    #: Pairs per device per forward pass (each pair is two sequences).
    per_device_batch_size: int = 8
    #: Forward passes accumulated into one optimizer step.
    gradient_accumulation_steps: int = 1
    #: Tokens per sequence (prompt + answer); longer pairs are cut at the end and counted as pairs_truncated.
    max_length: int = 1024
    #: Share of the steps spent warming the learning rate up from 0, in [0, 1).
    warmup_ratio: float = 0.1
    #: Learning-rate schedule after warm-up.
    lr_scheduler: LrScheduler = "cosine"
    #: AdamW weight decay.
    weight_decay: float = 0.0
    #: Gradient clipping norm.
    max_grad_norm: float = 1.0
    #: Compute the reference log-probs once before training (no second model in memory during training).
    precompute_ref_log_probs: bool = True
    #: Pairs per batch while precomputing the reference log-probs; 0 uses per_device_batch_size.
    precompute_ref_batch_size: int = 0
    #: Pairs whose judge confidence is below this are left out (counted as pairs_low_confidence).
    min_confidence: float = 0.0
    #: Seed of the trainer (data order).
    seed: int = 0
    #: Log (and write a train_log.jsonl row) every this many optimizer steps.
    logging_steps: int = 1
    #: Save a resumable checkpoint every this many steps under out_dir/checkpoints; 0 saves only the final model.
    save_steps: int = 0
    #: Checkpoints kept under out_dir/checkpoints.
    save_total_limit: int = 2
    #: Resume from the last checkpoint under out_dir/checkpoints when there is one.
    resume: bool = True
    #: bf16 mixed precision (GPUs; leave false on CPU).
    bf16: bool = False
    #: Recompute activations in the backward pass to save memory (large models).
    gradient_checkpointing: bool = False
    #: A system turn put before every prompt; empty for none (use the SFT stage's value).
    system_prompt: str = ""
    #: Path of a DeepSpeed JSON config (ZeRO-3 on the cluster); empty for none.
    deepspeed: str = ""
    #: Worker processes of the data loader.
    dataloader_num_workers: int = 0

    def validate(self) -> None:
        require(self.beta > 0, "beta", "must be above 0")
        require(0 <= self.label_smoothing < 0.5, "label_smoothing", "must be in [0, 0.5)")
        require(self.loss_type != "exo_pair" or self.label_smoothing > 0, "label_smoothing",
                "must be above 0 for loss_type exo_pair")
        require(0 < self.learning_rate < 1, "learning_rate", "must be in (0, 1)")
        require(self.max_steps == -1 or self.max_steps >= 1, "max_steps", "must be -1 (use epochs) or at least 1")
        require(self.epochs > 0, "epochs", "must be above 0")
        require(self.per_device_batch_size >= 1, "per_device_batch_size", "must be at least 1")
        require(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "must be at least 1")
        require(self.max_length >= 8, "max_length", "must be at least 8 tokens")
        require(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        require(self.weight_decay >= 0, "weight_decay", "must be 0 or more")
        require(self.max_grad_norm > 0, "max_grad_norm", "must be above 0")
        require(self.precompute_ref_batch_size >= 0, "precompute_ref_batch_size", "must be 0 (batch size) or more")
        require(0 <= self.min_confidence <= 1, "min_confidence", "must be in [0, 1]")
        require(self.logging_steps >= 1, "logging_steps", "must be at least 1")
        require(self.save_steps >= 0, "save_steps", "must be 0 (final model only) or more")
        require(self.save_total_limit >= 1, "save_total_limit", "must be at least 1")
        require(self.dataloader_num_workers >= 0, "dataloader_num_workers", "must be 0 or more")


def build_example(row: dict, system_prompt: str = "") -> dict:
    """A records.PREFERENCE row as a conversational preference example."""
    prompt = [{"role": "system", "content": system_prompt}] if system_prompt else []
    prompt.append({"role": "user", "content": row["prompt"]})
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": row["chosen"]}],
        "rejected": [{"role": "assistant", "content": row["rejected"]}],
    }


def load_pairs(data: Path, min_confidence: float = 0.0) -> tuple[list[dict], dict[str, int]]:
    """Schema-checked pairs to train on, and counts of those left out (identical, low confidence)."""
    rows = read_jsonl(data, PREFERENCE, allow_empty=True)
    kept, counts = [], {"pairs_in": len(rows), "pairs_identical": 0, "pairs_low_confidence": 0}
    for lineno, row in numbered_rows(data, rows):
        for field in ("prompt", "chosen", "rejected"):
            if not row[field].strip():
                raise InputError("empty text", path=str(data), line=lineno, field=field)
        if not 0 <= row["confidence"] <= 1:
            raise InputError(f"expected a number in [0, 1], got {row['confidence']}", path=str(data), line=lineno,
                             field="confidence")
        if row["chosen"].strip() == row["rejected"].strip():
            counts["pairs_identical"] += 1  # no preference signal: both terms of the loss cancel
        elif row["confidence"] < min_confidence:
            counts["pairs_low_confidence"] += 1
        else:
            kept.append(row)
    return kept, counts


def prepare(cfg: DPOStageConfig, data: Path, model: str, out_dir: Path) -> Prepared:
    """Check the pairs, load the model and build the DPOTrainer (reference log-probs precomputed here)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from cai_core.models.tiny import resolve_model

    data, out_dir = Path(data), Path(out_dir)
    pairs, counts = load_pairs(data, cfg.min_confidence)
    if len(pairs) < 1:
        raise StageError(
            f"dpo: no preference pairs to train on in {data} ({counts['pairs_in']} rows, "
            f"{counts['pairs_identical']} with chosen == rejected, {counts['pairs_low_confidence']} below "
            f"min_confidence={cfg.min_confidence}); the judge stage kept none: check its dropped counts")
    model_path = resolve_model(model)  # a missing local model fails here, before anything is loaded or written
    ckpt_dir = out_dir / "checkpoints"
    # The arguments come before the model (DeepSpeed ZeRO-3 then loads it partitioned; see sft.prepare).
    args = DPOConfig(
        output_dir=str(ckpt_dir),
        beta=cfg.beta,
        loss_type=[cfg.loss_type],
        label_smoothing=cfg.label_smoothing,
        max_length=cfg.max_length,
        precompute_ref_log_probs=cfg.precompute_ref_log_probs,
        precompute_ref_batch_size=cfg.precompute_ref_batch_size or None,
        **trainer_args(cfg),
    )
    policy, tokenizer, _ = load_model_for_training(model_path)
    max_length = clamp_max_length(args, policy)
    ref_model = None
    if not cfg.precompute_ref_log_probs:
        ref_model, _, _ = load_model_for_training(model_path)  # a frozen copy of the starting point
        ref_model.eval()
        ref_model.requires_grad_(False)

    examples = [build_example(r, cfg.system_prompt) for r in pairs]
    pairs_truncated = 0
    for ex in examples:
        lengths = [len(tokenizer.apply_chat_template(ex["prompt"] + ex[side], tokenize=True,
                                                     return_dict=True)["input_ids"]) for side in ("chosen", "rejected")]
        pairs_truncated += max(lengths) > max_length
    if pairs_truncated:
        log.warning("dpo: %d of %d pairs are longer than max_length=%d tokens and are truncated",
                    pairs_truncated, len(examples), max_length)

    out_dir.mkdir(parents=True, exist_ok=True)
    resume_from = last_checkpoint(ckpt_dir) if cfg.resume else None
    callback = train_log_callback(out_dir / "train_log.jsonl", resume_step=checkpoint_step(resume_from))
    # With precompute and no ref_model, TRL takes the reference log-probs from the policy before its first step,
    # i.e. from the SFT model: exactly the frozen reference, without a second copy in memory.
    trainer = DPOTrainer(model=policy, ref_model=ref_model, args=args, train_dataset=Dataset.from_list(examples),
                         processing_class=tokenizer, callbacks=[callback])
    pairs_dropped = len(examples) - len(trainer.train_dataset)  # the prompt alone fills max_length
    if len(trainer.train_dataset) == 0:
        raise StageError(f"dpo: every pair's prompt fills max_length={max_length} tokens; nothing to train on")
    counts.update(pairs=len(examples), pairs_truncated=pairs_truncated, pairs_dropped_too_long=pairs_dropped,
                  max_length=max_length)
    return Prepared(trainer, callback, resume_from, model_path, counts)


def run(cfg: DPOStageConfig, data: Path, model: str, out_dir: Path) -> StageResult:
    """DPO of `model` (also the frozen reference) on the pairs of `data`; write out_dir/model, train_log.jsonl."""
    prepared = prepare(cfg, data, model, out_dir)
    return finish(prepared, "dpo", cfg, Path(data), model, Path(out_dir))


__all__ = ["DPOStageConfig", "run", "prepare", "build_example", "load_pairs"]
