"""revise (Stage 1): answer, then critique -> revision for `rounds` rounds.

For each prompt the policy model answers; each round draws a critique/revision
pair from the constitution (seeded per row and round), asks the model to
critique its last answer and then to rewrite it. Instruct models get the chat
template; base models get a few-shot transcript (Human/Assistant/Critique...)
and raw completion (the requests and reply reading: `cai_core.tasks.revise`).
Every intermediate text is kept in the row.

Row status: `ok`, or `empty_revision` when the model returned nothing for a
revision (the previous answer is then kept as the final text).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cai_core import records
from cai_core.config.base import ConfigBase, require
from cai_core.constitution import Constitution, CritiquePair, load_constitution
from cai_core.llm.base import ChatModel, Sampling, batches
from cai_core.progress import Progress
from cai_core.runtime.artifacts import REVISIONS
from cai_core.stages.base import StageResult
from cai_core.tasks import revise as revise_task


@dataclass(frozen=True)
class ReviseConfig(ConfigBase):
    #: Critique -> revision rounds per prompt (>= 1).
    rounds: int = 1
    #: Seed for drawing principles and for sampling.
    seed: int = 0
    #: Sampling temperature of answers, critiques and revisions (0 = greedy).
    temperature: float = 0.7
    #: Token limit of each generated text.
    max_new_tokens: int = 128
    #: Constitution: "default" (bundled) or a YAML path.
    constitution: str = "default"
    #: instruct: chat template; base: few-shot transcript with raw completion.
    model_kind: Literal["instruct", "base"] = "instruct"
    #: Rows sent to the model per call.
    batch_size: int = 16

    def validate(self) -> None:
        require(self.rounds >= 1, "rounds", "must be >= 1")
        require(self.temperature >= 0, "temperature", "must be >= 0")
        require(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")


def _sampling(cfg: ReviseConfig, row_id: str, step: int) -> Sampling:
    seed = int(records.row_id(cfg.seed, row_id, step)[:8], 16)
    return Sampling(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=seed)


def _generate(cfg: ReviseConfig, llm: ChatModel, constitution: Constitution, rows: list[dict],
              pairs: list[CritiquePair | None], stage: revise_task.Step, step: int) -> list[revise_task.Generation]:
    sampling = [_sampling(cfg, row["id"], step) for row in rows]
    if cfg.model_kind == "base":
        prompts = [revise_task.format_transcript(r, p, stage, constitution) for r, p in zip(rows, pairs)]
        replies = llm.complete(prompts, sampling)
    else:
        replies = llm.chat([revise_task.format_input(r, p, stage) for r, p in zip(rows, pairs)], sampling)
    return [revise_task.parse_output(t, cfg.model_kind) for t in replies]


def run(cfg: ReviseConfig, prompts: Path, out_dir: Path, llm: ChatModel) -> StageResult:
    constitution = load_constitution(cfg.constitution)
    rows = [dict(r, revisions=[], status="ok") for r in records.read_jsonl(prompts, records.PROMPT)]
    steps = 1 + 2 * cfg.rounds
    progress = Progress("revise", total=len(rows) * steps, unit="generations")
    for batch in batches(llm, rows, cfg.batch_size):
        for row, answer in zip(batch, _generate(cfg, llm, constitution, batch, [None] * len(batch), "answer", 0)):
            row["response"] = row["_last"] = answer.text
        progress.update(len(batch))
        for round_index in range(cfg.rounds):
            pairs = [constitution.draw_critique(r["id"], round_index, cfg.seed) for r in batch]
            critiques = _generate(cfg, llm, constitution, batch, pairs, "critique", 1 + 2 * round_index)
            for row, critique in zip(batch, critiques):
                row["_critique"] = critique.text
            progress.update(len(batch))
            revisions = _generate(cfg, llm, constitution, batch, pairs, "revision", 2 + 2 * round_index)
            for row, pair, revision in zip(batch, pairs, revisions):
                row["revisions"].append({"round": round_index, "principle_id": pair.id,
                                         "critique_request": pair.critique, "critique": row["_critique"],
                                         "revision_request": pair.revision, "revision": revision.text})
                if revision.status == "ok":
                    row["_last"] = revision.text
                else:
                    row["status"] = "empty_revision"
            progress.update(len(batch))
    for row in rows:
        row["final"] = row.pop("_last")
        row.pop("_critique", None)
    out = out_dir / REVISIONS
    records.write_jsonl(out, rows)
    empty = sum(r["status"] == "empty_revision" for r in rows)
    return StageResult(outputs={"revisions": out},
                       metrics={"rows": len(rows), "rounds": cfg.rounds, "status_empty_revision": empty,
                                "mean_final_chars": sum(len(r["final"]) for r in rows) / len(rows)})
