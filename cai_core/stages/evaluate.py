"""evaluate (Stage 9): every model answers the held-out prompts; collapse metrics per model.

Models are evaluated by name (base, sft, dpo, ...). Per model the stage writes
`answers_<name>.jsonl` and reports rep-2/3/4, distinct-1/2, tail-loop rate, the
share of empty answers and the mean answer length, overall and per prompt category.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from cai_core import records
from cai_core.configbase import ConfigBase, require
from cai_core.llm.base import ChatModel, Sampling
from cai_core.metrics.repetition import collapse_metrics
from cai_core.progress import Progress
from cai_core.stages.base import StageResult


@dataclass(frozen=True)
class EvaluateConfig(ConfigBase):
    #: Token limit of each answer (long enough for a loop to show).
    max_new_tokens: int = 160
    #: Sampling temperature (0 = greedy, the usual choice for evaluation).
    temperature: float = 0.0
    #: Evaluate at most this many prompts (0 = all).
    max_prompts: int = 0
    #: Prompts per model call.
    batch_size: int = 16
    #: Seed of sampled answers (when temperature > 0).
    seed: int = 0

    def validate(self) -> None:
        require(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        require(self.temperature >= 0, "temperature", "must be >= 0")
        require(self.max_prompts >= 0, "max_prompts", "must be >= 0")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")


def answer_all(cfg: EvaluateConfig, llm: ChatModel, rows: list[dict], name: str) -> list[dict]:
    progress = Progress(f"evaluate[{name}]", total=len(rows), unit="answers")
    out = []
    for start in range(0, len(rows), cfg.batch_size):
        batch = rows[start:start + cfg.batch_size]
        sampling = [Sampling(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                             seed=int(records.row_id(cfg.seed, r["id"])[:8], 16)) for r in batch]
        texts = llm.chat([[{"role": "user", "content": r["prompt"]}] for r in batch], sampling)
        out += [{"id": r["id"], "prompt": r["prompt"], "category": r.get("category", "unknown"),
                 "model": name, "response": t.strip()} for r, t in zip(batch, texts)]
        progress.update(len(batch))
    return out


def answer_metrics(answers: list[dict]) -> dict[str, float]:
    texts = [a["response"] for a in answers]
    metrics = {k: float(v) for k, v in collapse_metrics(texts).items()}
    metrics["empty_rate"] = sum(not t for t in texts) / len(texts) if texts else 0.0
    metrics["mean_chars"] = sum(map(len, texts)) / len(texts) if texts else 0.0
    return metrics


def run(cfg: EvaluateConfig, prompts: Path, models: Mapping[str, str], out_dir: Path,
        load_model: Callable[[str], ChatModel]) -> StageResult:
    rows = records.read_jsonl(prompts, records.PROMPT)
    if cfg.max_prompts:
        rows = rows[:cfg.max_prompts]
    metrics: dict[str, float] = {"prompts": len(rows)}
    per_model: dict[str, dict] = {}
    outputs = {}
    for name, model in models.items():
        answers = answer_all(cfg, load_model(model), rows, name)
        outputs[f"answers_{name}"] = out_dir / f"answers_{name}.jsonl"
        records.write_jsonl(outputs[f"answers_{name}"], answers)
        per_model[name] = {"all": answer_metrics(answers)}
        for category in sorted({a["category"] for a in answers}):
            per_model[name][category] = answer_metrics([a for a in answers if a["category"] == category])
        metrics.update({f"{name}.{k}": v for k, v in per_model[name]["all"].items()})
    return StageResult(outputs=outputs, metrics=metrics, details={"per_model": per_model})
