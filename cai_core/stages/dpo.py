"""Stage 7, dpo: direct preference optimisation on the judged pairs.

Rows are records.PREFERENCE ``{"id", "prompt", "chosen", "rejected",
"principle", "confidence"}``; each becomes a conversational preference example
(prompt = [optional system turn, user turn], chosen / rejected = one assistant
turn each) for TRL's `DPOTrainer`. The reference model is the model we start
from (the SFT model), frozen: with ``precompute_ref_log_probs`` (the default)
its log-probabilities of every chosen and rejected answer are computed once,
before the first step, and no second copy of the model is kept; without it, a
frozen copy is loaded beside the policy.

Reference log-probs under DeepSpeed (TRL 1.16, checked on CPU with 2 ranks and
ZeRO-3; see tests/training/test_deepspeed.py): TRL's own precompute without a
``ref_model`` wraps the *policy* in a second DeepSpeed (inference) engine; the
training engine then wraps the same module and the first training forward
fails inside ZeRO-3's parameter coordinator (``IndexError: pop from an empty
deque``) as soon as there is more than one rank. And TRL writes the
precomputed columns to a cache file on the main process only, which the other
ranks cannot read when the dataset lives in memory (a per-process temporary
directory). The path we use, which works:

1. under DeepSpeed, a frozen copy of the starting model is loaded after the
   arguments, so ZeRO-3 partitions it like the policy (1/N of the weights per
   GPU), and passed as ``ref_model``; TRL precomputes the log-probs with that
   copy (its own engine, not the policy's) in one pass before step 1; the copy
   is then released, and training reads the ``ref_chosen_logps`` /
   ``ref_rejected_logps`` columns;
2. with more than one rank the dataset is file-backed in out_dir/.dpo_dataset,
   a directory every rank of the node reads, so TRL's cache file is visible;
3. across several nodes (no shared filesystem) rank 0's cache file is invisible
   to the other nodes, so there the reference stays online: the ZeRO-3-sharded
   frozen copy runs one forward per step (for one epoch the same FLOPs as
   precomputing). The result's details say which: ``reference``.

Outputs under ``out_dir``: ``model/`` (safetensors, moved into place when
complete), ``train_log.jsonl`` (one row per logged step: loss, grad_norm,
learning_rate, rewards/chosen, rewards/rejected, rewards/margins,
rewards/accuracies, logps/chosen, logps/rejected, logits/*, entropy,
mean_token_accuracy, num_tokens, epoch), ``checkpoints/``.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from cai_core import deepspeed_configs
from cai_core.config.base import require
from cai_core.errors import InputError, StageError
from cai_core.records import PREFERENCE, read_jsonl
from cai_core.runtime.artifacts import TRAIN_LOG
from cai_core.stages.base import StageResult
from cai_core.stages.sft import (
    Prepared,
    cuda_available,
    check_liger,
    checkpoint_step,
    clamp_max_length,
    count_long_rows,
    finish,
    load_model,
    load_tokenizer_and_config,
    numbered_rows,
    resume_point,
    train_log_callback,
    trainer_args,
)
from cai_core.stages.training_config import LongRows, TrainingConfig
from cai_core.training import lora

log = logging.getLogger(__name__)

LossType = Literal["sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "nca_pair", "exo_pair",
                   "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm"]


#: The most preference rounds one pipeline compiles (each round is five more steps of the DAG).
MAX_ITERATIONS = 8


@dataclass(frozen=True)
class DPOStageConfig(TrainingConfig):
    """DPO (TRL DPOTrainer) against the frozen SFT model."""

    #: Strength of the pull towards the reference model (higher = stay closer).
    beta: float = 0.1
    #: Preference loss (TRL loss_type); "sigmoid" is the DPO paper's.
    loss_type: LossType = "sigmoid"
    #: Label smoothing (robust / exo_pair losses; 0 for plain DPO).
    label_smoothing: float = 0.0
    #: Compute the reference log-probs once before training (no second model in memory during training).
    precompute_ref_log_probs: bool = True
    #: Pairs per batch while precomputing the reference log-probs; 0 uses per_device_batch_size.
    precompute_ref_batch_size: int = 0
    #: Pairs whose judge confidence is below this are left out (counted as pairs_low_confidence).
    min_confidence: float = 0.0
    #: Preference rounds: pairs -> clean -> judge -> dpo -> gate, N times. Round k samples its pairs from round
    #: k-1's DPO model, which is also its reference; a round that fails the gate ends the loop and the last
    #: passing round's model is promoted. Rounds after the first are the steps `pairs_r2` ... `gate_r2`, ...
    iterations: int = 1

    # Shared fields (TrainingConfig) with dpo's own default (their docs are TrainingConfig's) ...
    learning_rate: float = 5e-7
    warmup_ratio: float = 0.1
    # ... and with the same default, documented for pairs.
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
    #: Pairs longer than max_length: truncate (cut at the end, counted) or error (refuse the dataset, naming the pair).
    long_rows: LongRows = "truncate"
    #: Seed of the trainer (data order).
    seed: int = 0
    #: Checkpoints kept under out_dir/checkpoints.
    save_total_limit: int = 2
    #: Resume from the last checkpoint under out_dir/checkpoints when there is one.
    resume: bool = True
    #: A system turn put before every prompt; empty for none (use the SFT stage's value).
    system_prompt: str = ""
    #: Liger kernels (RMSNorm, SwiGLU, RoPE); needs the liger-kernel package (GPU).
    use_liger_kernel: bool = False

    def validate(self) -> None:
        super().validate()
        require(self.beta > 0, "beta", "must be above 0")
        require(0 <= self.label_smoothing < 0.5, "label_smoothing", "must be in [0, 0.5)")
        require(self.loss_type != "exo_pair" or self.label_smoothing > 0, "label_smoothing",
                "must be above 0 for loss_type exo_pair")
        require(self.precompute_ref_batch_size >= 0, "precompute_ref_batch_size", "must be 0 (batch size) or more")
        require(0 <= self.min_confidence <= 1, "min_confidence", "must be in [0, 1]")
        require(1 <= self.iterations <= MAX_ITERATIONS, "iterations", f"must be in [1, {MAX_ITERATIONS}]")


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
    numbered, counts = load_numbered_pairs(data, min_confidence)
    return [row for _, row in numbered], counts


def load_numbered_pairs(data: Path, min_confidence: float = 0.0) -> tuple[list[tuple[int, dict]], dict[str, int]]:
    """As `load_pairs`, each kept pair with its line number in `data`."""
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
            kept.append((lineno, row))
    return kept, counts


def prepare(cfg: DPOStageConfig, data: Path, model: str, out_dir: Path, callbacks: Sequence[Any] = ()) -> Prepared:
    """Check the pairs, load the model and build the DPOTrainer (reference log-probs precomputed here).

    Every check that can fail on the inputs runs before the model's weights are loaded.
    """
    from trl import DPOConfig, DPOTrainer

    from cai_core.models.registry import resolve_model

    data, out_dir = Path(data), Path(out_dir)
    numbered, counts = load_numbered_pairs(data, cfg.min_confidence)
    pairs = [row for _, row in numbered]
    if len(pairs) < 1:
        raise StageError(
            f"dpo: no preference pairs to train on in {data} ({counts['pairs_in']} rows, "
            f"{counts['pairs_identical']} with chosen == rejected, {counts['pairs_low_confidence']} below "
            f"min_confidence={cfg.min_confidence}); the judge stage kept none: check its dropped counts")
    model_path = resolve_model(model)  # a missing local model fails here, before anything is loaded or written
    ds_config = deepspeed_configs.load(cfg.deepspeed)  # missing or unparsable: file, line and column
    check_liger(cfg.use_liger_kernel, "dpo")
    quantization = lora.quantization_config(cfg, "dpo", cuda_available())
    tokenizer, model_config = load_tokenizer_and_config(model_path, model)
    max_length = clamp_max_length(cfg.max_length, model_config)

    examples = [build_example(r, cfg.system_prompt) for r in pairs]
    long = []
    for (lineno, _), ex in zip(numbered, examples):
        n = max(len(tokenizer.apply_chat_template(ex["prompt"] + ex[side], tokenize=True,
                                                  return_dict=True)["input_ids"]) for side in ("chosen", "rejected"))
        if n > max_length:
            long.append((lineno, n))
    pairs_truncated = count_long_rows(long, len(examples), max_length, cfg.long_rows, data, "dpo", "pairs")
    ckpt_dir, resume_from = resume_point(out_dir, cfg.resume, model_config, model, ds_config)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    multi_node = world > int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    precompute = cfg.precompute_ref_log_probs and not multi_node
    if cfg.precompute_ref_log_probs and multi_node:
        log.warning("dpo: %d ranks on several nodes: the reference log-probs stay online (TRL 1.16 writes the "
                    "precomputed ones on rank 0's node only); the ZeRO-sharded frozen reference runs one forward "
                    "per step", world)
    # The arguments come before the models (DeepSpeed ZeRO-3 then loads them partitioned; see sft.prepare).
    args = DPOConfig(
        output_dir=str(ckpt_dir),
        beta=cfg.beta,
        loss_type=[cfg.loss_type],
        label_smoothing=cfg.label_smoothing,
        max_length=max_length,
        precompute_ref_log_probs=precompute,
        precompute_ref_batch_size=cfg.precompute_ref_batch_size or None,
        **trainer_args(cfg, ds_config, rows=len(examples)),
    )
    half = cfg.bf16 and ds_config is not None
    policy = load_model(model_path, model, half=half, attn_implementation=cfg.attn_implementation,
                        quantization=quantization)
    ref_model = None
    if not lora.enabled(cfg) and (not precompute or ds_config is not None):
        # A frozen copy of the starting point: the online reference, or under DeepSpeed the model TRL precomputes
        # the reference log-probs with (never the policy itself: see the module doc).
        ref_model = load_model(model_path, model, half=half, attn_implementation=cfg.attn_implementation)
        ref_model.eval()
        ref_model.requires_grad_(False)
    reference = (("precomputed" if precompute else "online") + " from the adapter-disabled base (LoRA)"
                 if lora.enabled(cfg) else
                 "precomputed from the policy before step 1" if precompute and ref_model is None else
                 "precomputed from a frozen copy before step 1" if precompute else "online frozen copy")

    out_dir.mkdir(parents=True, exist_ok=True)
    dataset, cleanup = _dataset(examples, out_dir / ".dpo_dataset", file_backed=args.world_size > 1)
    callback = train_log_callback(out_dir / TRAIN_LOG, resume_step=checkpoint_step(resume_from))
    # With precompute and no ref_model, TRL takes the reference log-probs from the policy before its first step,
    # i.e. from the SFT model: exactly the frozen reference, without a second copy in memory.
    trainer = DPOTrainer(model=policy, ref_model=ref_model, args=args, train_dataset=dataset,
                         processing_class=tokenizer, callbacks=[callback, *callbacks],
                         peft_config=lora.peft_config(cfg))
    if precompute and ref_model is not None:
        trainer.ref_model = None  # the columns are computed; training never runs the copy again: free it
    pairs_dropped = len(examples) - len(trainer.train_dataset)  # the prompt alone fills max_length
    if len(trainer.train_dataset) == 0:
        raise StageError(f"dpo: every pair's prompt fills max_length={max_length} tokens; nothing to train on")
    counts.update(pairs=len(examples), pairs_truncated=pairs_truncated, pairs_dropped_too_long=pairs_dropped,
                  max_length=max_length, world_size=args.world_size,
                  zero_stage=deepspeed_configs.zero_stage(ds_config), **lora.parameter_counts(trainer.model))
    return Prepared(trainer, callback, resume_from, model_path, counts, details={"reference": reference},
                    cleanup=cleanup)


def _dataset(examples: list[dict], directory: Path, file_backed: bool):
    """The examples as a Dataset; with several ranks file-backed in `directory` (shared by the node's ranks)."""
    from datasets import Dataset

    if not file_backed:
        return Dataset.from_list(examples), []
    from accelerate import PartialState
    from datasets import load_from_disk

    state = PartialState()
    if state.is_local_main_process:
        shutil.rmtree(directory, ignore_errors=True)
        Dataset.from_list(examples).save_to_disk(str(directory))
    state.wait_for_everyone()
    return load_from_disk(str(directory)), [directory]


def run(cfg: DPOStageConfig, data: Path, model: str, out_dir: Path, callbacks: Sequence[Any] = ()) -> StageResult:
    """DPO of `model` (also the frozen reference) on the pairs of `data`; write out_dir/model, train_log.jsonl."""
    prepared = prepare(cfg, data, model, out_dir, callbacks)
    return finish(prepared, "dpo", cfg, Path(data), model, Path(out_dir))


__all__ = ["DPOStageConfig", "run", "prepare", "build_example", "load_pairs", "load_numbered_pairs"]
