"""pairs (Stage 4): the SFT model answers every prompt twice (sampled, distinct seeds).

Rows: {"id", "prompt", "category", "response_a", "response_b", "seed_a", "seed_b", "status"} with
status `ok`, `identical` (both samples equal: the judge cannot prefer one) or
`empty` (a sample came back empty).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cai_core import records
from cai_core.config.base import ConfigBase, require
from cai_core.llm.base import ChatModel, Sampling, batches
from cai_core.progress import Progress
from cai_core.runtime.artifacts import PAIRS
from cai_core.stages.base import StageResult


@dataclass(frozen=True)
class PairsConfig(ConfigBase):
    #: Sampling temperature (must be > 0 so the two answers differ).
    temperature: float = 1.0
    #: Nucleus sampling mass.
    top_p: float = 0.95
    #: Token limit of each answer.
    max_new_tokens: int = 128
    #: Seed from which each row's two sample seeds are derived.
    seed: int = 0
    #: Prompts per model call.
    batch_size: int = 16

    def validate(self) -> None:
        require(self.temperature > 0, "temperature", "must be > 0: two greedy answers would be identical")
        require(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        require(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")


def sample_seeds(cfg: PairsConfig, row_id: str) -> tuple[int, int]:
    a = int(records.row_id(cfg.seed, row_id, "a")[:8], 16)
    b = int(records.row_id(cfg.seed, row_id, "b")[:8], 16)
    return a, b if b != a else b + 1


def run(cfg: PairsConfig, prompts: Path, out_dir: Path, llm: ChatModel) -> StageResult:
    rows = records.read_jsonl(prompts, records.PROMPT)
    progress = Progress("pairs", total=len(rows) * 2, unit="answers")
    out = []
    for batch in batches(llm, rows, cfg.batch_size):
        seeds = [sample_seeds(cfg, r["id"]) for r in batch]
        conversations, sampling = [], []
        for row, pair_seeds in zip(batch, seeds):
            for seed in pair_seeds:
                conversations.append([{"role": "user", "content": row["prompt"]}])
                sampling.append(Sampling(temperature=cfg.temperature, top_p=cfg.top_p,
                                         max_new_tokens=cfg.max_new_tokens, seed=seed))
        texts = [t.strip() for t in llm.chat(conversations, sampling)]
        for i, (row, (seed_a, seed_b)) in enumerate(zip(batch, seeds)):
            a, b = texts[2 * i], texts[2 * i + 1]
            status = "empty" if not a or not b else "identical" if a == b else "ok"
            out.append({"id": row["id"], "prompt": row["prompt"], "category": row.get("category", "unknown"),
                        "response_a": a, "response_b": b, "seed_a": seed_a, "seed_b": seed_b, "status": status})
        progress.update(2 * len(batch))
    path = out_dir / PAIRS
    records.write_jsonl(path, out)
    metrics = {"rows": len(out)}
    for status in ("ok", "identical", "empty"):
        metrics[f"status_{status}"] = sum(r["status"] == status for r in out)
    return StageResult(outputs={"pairs": path}, metrics=metrics)
