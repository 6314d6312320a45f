"""Stage 3, sft: supervised fine-tuning on (prompt, cleaned final revision).

Each row ``{"id", "prompt", "response"}`` (records.SFT_ROW) becomes a
conversational prompt-completion example (prompt: optional system turn and the
user prompt; completion: the assistant response) and TRL's `SFTTrainer` trains
on it with the loss on the completion tokens only (``completion_only_loss``),
which works with any chat template. ``assistant_only_loss`` instead trains on
whole conversations with the loss on the assistant turns, for templates that
mark them with ``{% generation %}``. Our config maps onto TRL's `SFTConfig`;
the trainer is used as is.

Outputs under ``out_dir``: ``model/`` (the final model and tokenizer,
safetensors, moved into place only when complete), ``train_log.jsonl`` (one
row per logged step: step, loss, grad_norm, learning_rate, num_tokens,
mean_token_accuracy, epoch, ...), ``checkpoints/`` (trainer checkpoints when
``save_steps`` > 0; a rerun resumes from the last one when ``resume``).

Laptop to cluster, unchanged: on CPU the stage trains in process; under
``torchrun`` (the PyTorchJob's pods, see cai_core/k8s/) every rank runs the
same code and ``deepspeed`` (``zero2``, ``zero3``, ``zero3_offload``, a JSON
file or inline JSON; cai_core/deepspeed_configs.py) shards the model. Under
ZeRO-3 the arguments are created before the model so that ``from_pretrained``
loads it already partitioned, and the final save gathers the 16-bit weights
into one safetensors model (``stage3_gather_16bit_weights_on_model_save``).

Config -> TRL: bf16, gradient (activation) checkpointing, packing with
``packing_strategy`` or ``padding_free`` (both need a FlashAttention kernel:
``attn_implementation``), Liger kernels (``use_liger_kernel``; the
liger-kernel package is imported lazily and its absence is a clear error
before training), assistant-only loss, max length, learning rate, epochs or
steps, warm-up, the cosine schedule, seed.

Bad input ends the stage before any model weights are loaded: an empty or
malformed dataset, a model that does not exist, a DeepSpeed config that does
not parse (file, line and column), rows longer than ``max_length`` when
``long_rows: error`` (the default ``truncate`` cuts them at the end and counts
them as rows_truncated; rows whose answer is cut away entirely are dropped and
counted as rows_dropped), and a checkpoint under out_dir/checkpoints written
for another model (its config.json is compared with the model's) or by a
DeepSpeed run with another number of ranks.

The helpers below the stage (`load_model_for_training`, `train_log_callback`,
`save_final_model`, ...) are shared with the dpo stage.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from cai_core import deepspeed_configs
from cai_core.config.base import ConfigBase, require
from cai_core.errors import ConfigError, InputError, StageError
from cai_core.records import SFT_ROW, read_jsonl, write_json, write_jsonl
from cai_core.runtime.artifacts import MODEL_DIR, TRAIN_LOG
from cai_core.stages.base import StageResult
from cai_core.stages.training_config import TrainingConfig
from cai_core.training import lora

log = logging.getLogger(__name__)

#: Model config keys that decide the shapes of the weights: a checkpoint must agree with the model on all of them.
SHAPE_KEYS = ("model_type", "architectures", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads", "num_key_value_heads", "head_dim", "tie_word_embeddings")


@dataclass(frozen=True)
class SFTStageConfig(TrainingConfig):
    """Supervised fine-tuning (TRL SFTTrainer) on the cleaned revisions (the shared fields: TrainingConfig)."""

    #: Loss on the response tokens only (prompt-completion rows; works with any chat template); false: every token.
    completion_only_loss: bool = True
    #: Train on whole conversations with the loss on the assistant turns (needs {% generation %} in the chat
    #: template); replaces completion_only_loss when true.
    assistant_only_loss: bool = False
    #: Pack several examples into each max_length sequence (needs a FlashAttention attn_implementation; GPU only).
    packing: bool = False
    #: How packing fills sequences: bfd (best fit, padding-free), bfd_split (splits overflow), wrapped (cuts rows).
    packing_strategy: Literal["bfd", "bfd_split", "wrapped"] = "bfd"
    #: Flatten each batch into one sequence without padding (needs a FlashAttention attn_implementation; GPU only).
    padding_free: bool = False
    #: Helpful (prompt, response) data mixed into the CAI rows (empty = none): a source as for prompts.source, with
    #: prompt/response, messages, or chosen (HH transcript or chat list) per row (cai_core/data/helpful.py).
    helpful_data: str = ""
    #: Share of helpful rows in the mixed SFT data (e.g. 0.25: one helpful row per three CAI rows).
    helpful_ratio: float = 0.25

    def validate(self) -> None:
        super().validate()
        require(0 < self.helpful_ratio < 1, "helpful_ratio", "must be in (0, 1)")
        require(not (self.packing or self.padding_free) or _is_flash(self.attn_implementation), "attn_implementation",
                f"packing and padding_free need a FlashAttention kernel (e.g. flash_attention_2, on GPUs), got "
                f"{self.attn_implementation or 'the default'!r}")


def _is_flash(attn: str) -> bool:
    return "flash" in attn.lower()


def count_long_rows(long: list[tuple[int, int]], total: int, max_length: int, policy: str, data: Path, stage: str,
                    noun: str) -> int:
    """How many rows will be truncated; with long_rows: error, refuse the dataset naming the first long row.
    `long` holds (line, tokens) of every row over max_length."""
    if long and policy == "error":
        lineno, n = long[0]
        raise InputError(f"{len(long)} of {total} {noun} are longer than max_length={max_length} tokens "
                         f"(this one: {n}); shorten them, raise {stage}.max_length or set {stage}.long_rows: "
                         "truncate", path=str(data), line=lineno)
    if long:
        log.warning("%s: %d of %d %s are longer than max_length=%d tokens and are truncated",
                    stage, len(long), total, noun, max_length)
    return len(long)


def resume_point(out_dir: Path, resume: bool, model_config: Any, model: str, ds_config: Any):
    """(checkpoint dir, the checkpoint to resume from or None), the latter checked against the model."""
    ckpt_dir = out_dir / "checkpoints"
    resume_from = last_checkpoint(ckpt_dir) if resume else None
    if resume_from:
        check_checkpoint(resume_from, model_config, model, ds_config)
    return ckpt_dir, resume_from


def build_messages(prompt: str, response: str, system_prompt: str = "") -> list[dict]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def load_sft_rows(data: Path) -> list[dict]:
    """Schema-checked rows; an empty prompt or response is an error naming file, line and field."""
    rows = read_jsonl(data, SFT_ROW)  # empty file, bad JSON, missing/mistyped fields -> InputError
    for lineno, row in numbered_rows(data, rows):
        for name in ("prompt", "response"):
            if not row[name].strip():
                raise InputError("empty text", path=str(data), line=lineno, field=name)
    return rows


@dataclass
class Prepared:
    """A trainer ready to train, with what the stage needs to finish (also used by tests to inspect the data)."""

    trainer: Any
    callback: "TrainLog"
    resume_from: str | None
    model_path: str
    counts: dict[str, float] = field(default_factory=dict)
    #: Extra details for the StageResult (e.g. how dpo got its reference log-probs).
    details: dict[str, Any] = field(default_factory=dict)
    #: Directories removed once training is done (dpo's file-backed dataset).
    cleanup: list[Path] = field(default_factory=list)


def prepare(cfg: SFTStageConfig, data: Path, model: str, out_dir: Path, callbacks: Sequence[Any] = ()) -> Prepared:
    """Check the inputs, load the model and build the SFTTrainer (tokenised, masked, truncated data).

    Every check that can fail on the inputs runs before the model's weights are loaded. `callbacks` are extra
    `TrainerCallback`s (the `cai train` command adds one that copies each checkpoint to S3).
    """
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from cai_core.models.registry import resolve_model

    data, out_dir = Path(data), Path(out_dir)
    rows = load_sft_rows(data)
    model_path = resolve_model(model)  # a missing local model fails here, before anything is loaded or written
    ds_config = deepspeed_configs.load(cfg.deepspeed)  # missing or unparsable: file, line and column
    check_liger(cfg.use_liger_kernel, "sft")
    quantization = lora.quantization_config(cfg, "sft", cuda_available())
    tokenizer, model_config = load_tokenizer_and_config(model_path, model)
    max_length = clamp_max_length(cfg.max_length, model_config)
    if cfg.assistant_only_loss and not has_generation_markers(tokenizer):
        raise InputError(f"model '{model}': its chat template does not mark assistant turns with "
                         "{% generation %}, which assistant_only_loss needs; set sft.assistant_only_loss: false "
                         "(the default: loss on the response tokens, with any template)")

    conversations = [build_messages(r["prompt"], r["response"], cfg.system_prompt) for r in rows]
    lengths = [len(tokenizer.apply_chat_template(m, tokenize=True, return_dict=True)["input_ids"])
               for m in conversations]
    long = [(lineno, n) for (lineno, _), n in zip(numbered_rows(data, rows), lengths) if n > max_length]
    rows_truncated = count_long_rows(long, len(rows), max_length, cfg.long_rows, data, "sft", "rows")
    ckpt_dir, resume_from = resume_point(out_dir, cfg.resume, model_config, model, ds_config)

    # The arguments come before the model: with a DeepSpeed ZeRO-3 config, creating them lets from_pretrained
    # load the weights already partitioned across ranks.
    args = SFTConfig(
        output_dir=str(ckpt_dir),
        max_length=max_length,
        assistant_only_loss=cfg.assistant_only_loss,
        completion_only_loss=cfg.completion_only_loss and not cfg.assistant_only_loss,
        packing=cfg.packing,
        packing_strategy=cfg.packing_strategy,
        padding_free=cfg.padding_free,
        **trainer_args(cfg, ds_config, rows=len(rows)),
    )
    policy = load_model(model_path, model, half=cfg.bf16 and ds_config is not None,
                        attn_implementation=cfg.attn_implementation, quantization=quantization)
    if cfg.assistant_only_loss:
        dataset = Dataset.from_list([{"messages": m} for m in conversations])
    else:
        dataset = Dataset.from_list([{"prompt": m[:-1], "completion": m[-1:]} for m in conversations])

    out_dir.mkdir(parents=True, exist_ok=True)
    callback = train_log_callback(out_dir / TRAIN_LOG, resume_step=checkpoint_step(resume_from))
    trainer = SFTTrainer(model=policy, args=args, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[callback, *callbacks], peft_config=lora.peft_config(cfg))
    rows_dropped = 0 if cfg.packing else len(rows) - len(trainer.train_dataset)
    if not cfg.packing and len(trainer.train_dataset) == 0:
        raise StageError(f"sft: no trainable rows in {data}: every row lost its response to truncation "
                         f"(max_length={max_length})")
    counts = dict(rows=len(rows), rows_truncated=rows_truncated, rows_dropped=rows_dropped, max_length=max_length,
                  max_row_tokens=max(lengths), mean_row_tokens=sum(lengths) / len(lengths),
                  world_size=trainer.args.world_size, zero_stage=deepspeed_configs.zero_stage(ds_config),
                  **lora.parameter_counts(trainer.model))
    return Prepared(trainer, callback, resume_from, model_path, counts)


def run(cfg: SFTStageConfig, data: Path, model: str, out_dir: Path, callbacks: Sequence[Any] = ()) -> StageResult:
    """Fine-tune `model` on the rows of `data`; write out_dir/model and out_dir/train_log.jsonl."""
    prepared = prepare(cfg, data, model, out_dir, callbacks)
    return finish(prepared, "sft", cfg, Path(data), model, Path(out_dir))


# ----------------------------------------------------------------------------- shared with dpo


def finish(prepared: Prepared, stage: str, cfg: ConfigBase, data: Path, model: str, out_dir: Path) -> StageResult:
    """Train, refuse a diverged run, save the model, collect metrics (the second half of sft.run / dpo.run)."""
    trainer, callback = prepared.trainer, prepared.callback
    train_output = trainer.train(resume_from_checkpoint=prepared.resume_from)
    check_finite(callback, stage)
    outputs: dict[str, Path] = {}
    if lora.enabled(cfg):  # the adapter is kept beside the merged model the next steps load
        outputs["adapter"] = save_final_model(trainer, out_dir / lora.ADAPTER_DIR)
        model_dir = save_merged_model(trainer, prepared.model_path, outputs["adapter"], out_dir / MODEL_DIR,
                                      bf16=cfg.bf16)
    else:
        model_dir = save_final_model(trainer, out_dir / MODEL_DIR)
    metrics = training_metrics(callback, trainer, train_output)
    metrics.update(prepared.counts)
    if trainer.is_world_process_zero():
        write_json(out_dir / f"{stage}_config.json", {"config": cfg.to_dict(), "model": model,
                                                      "model_path": prepared.model_path, "data": str(data)})
    for path in prepared.cleanup:
        if trainer.is_local_process_zero():
            shutil.rmtree(path, ignore_errors=True)
    return StageResult(outputs={"model": model_dir, "train_log": callback.path, **outputs}, metrics=metrics,
                       details={"model": model, "resumed_from": prepared.resume_from, **prepared.details})


def warmup_steps(cfg: TrainingConfig, rows: int, world_size: int | None = None) -> int:
    """Warm-up steps: warmup_ratio of the run's optimizer steps, rounded down.

    transformers' warm-up gives the first step lr 0 (it ramps step/warmup), and rounds the ratio up: a run of a
    few steps would spend its first (or only) step at lr 0 and change nothing. Rounded down, a short run has no
    warm-up and every step trains.
    """
    if cfg.warmup_ratio <= 0:
        return 0
    world = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    per_epoch = math.ceil(math.ceil(max(1, rows) / (cfg.per_device_batch_size * world)) / cfg.gradient_accumulation_steps)
    total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.epochs * per_epoch)
    return min(int(cfg.warmup_ratio * total), max(0, total - 1))


def trainer_args(cfg: TrainingConfig, ds_config: dict | None = None, *, rows: int) -> dict[str, Any]:
    """The TrainingArguments common to our SFT and DPO configs (the fields of their base, TrainingConfig).

    `rows`: the training rows (pairs for dpo), from which the warm-up steps are counted (`warmup_steps`).

    `ds_config` is the parsed DeepSpeed config (deepspeed_configs.load); it is passed to TRL as a dict, so the
    pods need no file. On CPU it also sets up the process group DeepSpeed needs (see `_cpu_deepspeed_state`).
    """
    extra: dict[str, Any] = {}
    if cfg.bf16 and not cuda_available():
        stage = "dpo" if "DPO" in type(cfg).__name__ else "sft"
        raise ConfigError(f"{stage}.bf16: needs a GPU (none is visible here); set {stage}.bf16: false on CPU")
    if ds_config is not None:
        _single_process_env()
        if not cuda_available():
            extra["accelerator_config"] = _cpu_deepspeed_state()
    return dict(
        max_steps=cfg.max_steps,
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        warmup_steps=warmup_steps(cfg, rows),
        lr_scheduler_type=cfg.lr_scheduler,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit,
        # TRL defaults bf16=True and gradient_checkpointing=True: always pass ours explicitly. transformers 5.23
        # renamed gradient_checkpointing to activation_checkpointing (the old name warns unless it is None).
        bf16=cfg.bf16,
        fp16=False,
        activation_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing=None,
        use_liger_kernel=cfg.use_liger_kernel,
        deepspeed=ds_config,
        dataloader_num_workers=cfg.dataloader_num_workers,
        dataloader_pin_memory=cuda_available(),
        report_to=[],
        disable_tqdm=True,
        **extra,
    )


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _single_process_env() -> None:
    """DeepSpeed needs a process group; outside torchrun, make this process rank 0 of 1 (as `accelerate launch`)."""
    if "LOCAL_RANK" in os.environ:
        return
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
                      MASTER_ADDR=os.environ.get("MASTER_ADDR", "127.0.0.1"),
                      MASTER_PORT=os.environ.get("MASTER_PORT", str(_free_port())))


def _cpu_deepspeed_state() -> dict[str, Any]:
    """DeepSpeed on CPU (tests, laptops): accelerate only starts DeepSpeed's process group with a GPU backend.

    Without this, each of N CPU ranks believes it is alone (train_batch_size then disagrees with DeepSpeed's
    world size). We start the shared state ourselves, DeepSpeed with the gloo backend, and tell the trainer to use
    it (`use_configured_state`).
    """
    from accelerate import PartialState

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        PartialState(backend="gloo")
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]
    return {"use_configured_state": True}


def check_liger(enabled: bool, stage: str) -> None:
    """Liger kernels are optional: their absence is a clear error before anything is loaded."""
    if not enabled:
        return
    import importlib.util

    if importlib.util.find_spec("liger_kernel") is None:
        raise ConfigError(f"{stage}.use_liger_kernel: the liger-kernel package is not installed (pip install "
                          "liger-kernel; it needs a GPU with Triton), or set it to false")


def load_tokenizer_and_config(path: str, name: str):
    """(tokenizer, model config) without the weights: what every input check needs."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load model '{name}': {exc}") from None
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(f"model '{name}' has no chat template; the training stages need one")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, config


def load_model(path: str, name: str, *, half: bool = False, attn_implementation: str = "", quantization=None):
    """The weights, loaded after the trainer arguments (under ZeRO-3 they then load partitioned across ranks).

    `half`: load in bf16 (under DeepSpeed with bf16, which keeps the fp32 master copy in its optimizer);
    otherwise fp32 (with bf16 and no DeepSpeed the trainer autocasts).
    """
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if half or quantization else torch.float32}
    if quantization is not None:  # QLoRA: the frozen base in 4 bits (training_config.load_in_4bit)
        kwargs["quantization_config"] = quantization
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        raise InputError(f"cannot load model '{name}': {exc}") from None


def load_model_for_training(name_or_path: str):
    """(model in fp32, tokenizer, resolved path); a missing or unloadable model is an InputError."""
    from cai_core.models.registry import resolve_model

    path = resolve_model(name_or_path)
    tokenizer, _ = load_tokenizer_and_config(path, name_or_path)
    return load_model(path, name_or_path), tokenizer, path


def clamp_max_length(max_length: int, model_config: Any) -> int:
    """max_length, lowered to the model's position limit (the tiny model has 512)."""
    limit = getattr(model_config, "max_position_embeddings", None)
    if limit and max_length > limit:
        log.warning("max_length %d is above the model's %d positions; using %d", max_length, limit, limit)
        return limit
    return max_length


def check_checkpoint(checkpoint: str, model_config: Any, model: str, ds_config: dict | None) -> None:
    """Refuse to resume from a checkpoint of another model, or a DeepSpeed one written by another number of ranks."""
    ckpt = Path(checkpoint)
    config_file = ckpt / "config.json"
    if not config_file.exists():
        raise InputError(f"checkpoint has no config.json: not a checkpoint of this stage; delete {ckpt.parent} "
                         "or set resume: false", path=str(ckpt))
    try:
        saved = json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"checkpoint config.json is not valid JSON ({exc})", path=str(config_file)) from None
    ours = model_config.to_dict()
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, model {ours.get(k)!r}" for k in SHAPE_KEYS
             if (k in saved or k in ours) and saved.get(k) != ours.get(k)]
    if diffs:
        raise InputError(f"checkpoint was written for another model than '{model}' ({'; '.join(diffs)}); delete "
                         f"{ckpt.parent} or train into a fresh output directory", path=str(ckpt))
    shards = list(ckpt.glob("global_step*/*zero_pp_rank_*_optim_states.pt"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if ds_config is not None and shards and len(shards) != world:
        raise InputError(f"checkpoint holds DeepSpeed state of {len(shards)} ranks, but this run has {world}; "
                         "resume with the same nodes x GPUs, or delete it", path=str(ckpt))
    if ds_config is not None and not shards and list(ckpt.glob("global_step*")):
        raise InputError("checkpoint's DeepSpeed state has no optimizer shards (incomplete copy?)", path=str(ckpt))


_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


def has_generation_markers(tokenizer) -> bool:
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):
        template = template.get("default", "")
    return bool(_GENERATION_TAG.search(template))


def last_checkpoint(ckpt_dir: Path) -> str | None:
    if not ckpt_dir.is_dir():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(ckpt_dir))


def checkpoint_step(checkpoint: str | None) -> int | None:
    if not checkpoint:
        return None
    match = re.search(r"checkpoint-(\d+)$", checkpoint.rstrip("/"))
    return int(match.group(1)) if match else None


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no NaN/Infinity; check_finite() reports them
    return value


class TrainLog:
    """Records one JSON row per logged step into `path` (rewritten atomically each time; main process only).

    The trainer's end-of-training summary (train_runtime, train_loss, ...) is kept in `summary`, not in the
    file. On resume, rows of the steps up to the checkpoint are kept from the previous run's file. Each row also
    gets ``tokens_per_s``: the tokens of all ranks (TRL's num_tokens) trained since the previous row, per
    second of wall time.
    Use `train_log_callback(...)` for the `TrainerCallback` (built lazily: importing this module stays cheap).
    """

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        self.rows: list[dict] = []
        self.summary: dict[str, Any] = {}
        self.non_finite: list[tuple[int, str]] = []
        self._mark: tuple[float, float | None] | None = None  # (time, num_tokens) of the previous row
        if resume_step is not None and self.path.exists():
            old = read_jsonl(self.path, allow_empty=True)
            self.rows = [r for r in old if isinstance(r.get("step"), int) and r["step"] <= resume_step]

    def on_train_begin(self, args, state, control, **kwargs):
        self._mark = (time.perf_counter(), 0.0 if state.global_step == 0 else None)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        if "train_runtime" in logs:
            self.summary.update({k: _plain(v) for k, v in logs.items()})
            return
        row: dict[str, Any] = {"step": state.global_step}
        for key, value in logs.items():
            plain = _plain(value)
            if plain is None and value is not None:
                self.non_finite.append((state.global_step, key))
            row[key] = plain
        tokens, now = row.get("num_tokens"), time.perf_counter()
        if isinstance(tokens, (int, float)) and self._mark is not None:
            then, before = self._mark
            if before is not None and now > then:
                row["tokens_per_s"] = (tokens - before) / (now - then)
            self._mark = (now, float(tokens))
        self.rows.append(row)
        if state.is_world_process_zero:
            write_jsonl(self.path, self.rows)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            write_jsonl(self.path, self.rows)


@functools.lru_cache(maxsize=None)
def _callback_class():
    from transformers import TrainerCallback

    return type("TrainLogCallback", (TrainLog, TrainerCallback), {})


def train_log_callback(path: Path, resume_step: int | None = None) -> TrainLog:
    """A `TrainerCallback` that is also a `TrainLog`."""
    return _callback_class()(path, resume_step)


def check_finite(callback: TrainLog, stage: str) -> None:
    """A NaN/inf loss ends the stage with a clear error instead of saving a broken model."""
    bad = [(step, key) for step, key in callback.non_finite if key in ("loss", "grad_norm")]
    if bad:
        step, key = bad[0]
        raise StageError(f"{stage}: training diverged: {key} is not finite at step {step} "
                         f"(lower the learning rate or check the data); see {callback.path}")


def save_final_model(trainer, model_dir: Path) -> Path:
    """Save model + tokenizer (safetensors; a PEFT model saves its adapter) to a temporary directory, then move
    it into place."""
    model_dir = Path(model_dir)
    tmp = model_dir.with_name(f".{model_dir.name}.tmp")
    if trainer.is_world_process_zero() and tmp.exists():
        shutil.rmtree(tmp)
    trainer.save_model(str(tmp))  # every rank (ZeRO-3 gathers the weights); writes the tokenizer too
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(str(tmp))
        (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle; the model directory holds only data files
        _publish(tmp, model_dir)
    trainer.accelerator.wait_for_everyone()
    return model_dir


def save_merged_model(trainer, base_path: str, adapter_dir: Path, model_dir: Path, *, bf16: bool) -> Path:
    """Merge the saved LoRA adapter into the base weights (rank 0) and publish the plain model at model_dir."""
    model_dir = Path(model_dir)
    if trainer.is_world_process_zero():
        tmp = model_dir.with_name(f".{model_dir.name}.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        lora.merge_adapter(base_path, adapter_dir, trainer.processing_class, tmp, bf16=bf16,
                           zero3_config=getattr(trainer.args, "hf_deepspeed_config", None))
        _publish(tmp, model_dir)
    trainer.accelerator.wait_for_everyone()
    return model_dir


def _publish(tmp: Path, final: Path) -> None:
    """Replace `final` by the complete directory `tmp` (a crash leaves the old one or the new one)."""
    old = final.with_name(f".{final.name}.old")
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def training_metrics(callback: TrainLog, trainer, train_output) -> dict[str, float]:
    """Scalar metrics from the log rows and the trainer's summary."""
    rows = callback.rows
    losses = [r["loss"] for r in rows if isinstance(r.get("loss"), (int, float))]
    summary = callback.summary or dict(getattr(train_output, "metrics", {}) or {})
    metrics: dict[str, float] = {"steps": trainer.state.global_step}
    if losses:
        metrics["train_loss_first"] = losses[0]
        metrics["train_loss_last"] = losses[-1]
    for ours, theirs in (("train_loss", "train_loss"), ("train_runtime_s", "train_runtime"),
                         ("train_samples_per_s", "train_samples_per_second"),
                         ("train_steps_per_s", "train_steps_per_second")):
        if isinstance(summary.get(theirs), (int, float)):
            metrics[ours] = float(summary[theirs])
    last = rows[-1] if rows else {}
    for key, value in last.items():
        if key not in ("step", "loss") and isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[key.replace("/", "_") + "_last"] = float(value)
    tokens = last.get("num_tokens")
    if isinstance(tokens, (int, float)) and metrics.get("train_runtime_s"):
        metrics["tokens_per_s"] = float(tokens) / metrics["train_runtime_s"]
    return metrics


def numbered_rows(path: Path, rows: list[dict]):
    """(line number, row) pairs: blank lines are skipped by read_jsonl, so recount them here."""
    numbers = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if raw.strip():
                numbers.append(lineno)
    return zip(numbers, rows)


__all__ = ["SFTStageConfig", "run", "prepare", "build_messages", "load_sft_rows"]
