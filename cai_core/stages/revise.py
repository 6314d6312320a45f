"""revise (Stage 1): answer, then critique -> revision for `rounds` rounds.

For each prompt the policy model answers; each round draws a critique/revision
pair from the constitution (seeded per row and round), asks the model to
critique its last answer and then to rewrite it. Instruct models get the chat
template; base models get a few-shot transcript (Human/Assistant/Critique...)
and raw completion. Every intermediate text is kept in the row.

Row status: `ok`, or `empty_revision` when the model returned nothing for a
revision (the previous answer is then kept as the final text).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cai_core import records
from cai_core.configbase import ConfigBase, require
from cai_core.constitution import Constitution, CritiquePair, load_constitution
from cai_core.llm.base import ChatModel, Sampling
from cai_core.progress import Progress
from cai_core.stages.base import StageResult

# Labels of the base-model transcript; generation is cut at the next label.
_BASE_LABELS = ("Human:", "Assistant:", "Critique request:", "Critique:", "Revision request:", "Revision:", "---")


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


def chat_messages(row: dict, pair: CritiquePair | None, stage: str) -> list[dict]:
    """The conversation for the next generation of an instruct model.

    stage is "answer", "critique" or "revision"; the row holds the texts so far.
    """
    messages = [{"role": "user", "content": row["prompt"]}]
    if stage == "answer":
        return messages
    messages.append({"role": "assistant", "content": row["_last"]})
    messages.append({"role": "user", "content": pair.critique})
    if stage == "critique":
        return messages
    messages.append({"role": "assistant", "content": row["_critique"]})
    messages.append({"role": "user", "content": pair.revision})
    return messages


def base_prompt(row: dict, pair: CritiquePair | None, stage: str, constitution: Constitution) -> str:
    """A few-shot transcript ending where the base model must continue."""
    shots = []
    for shot in constitution.few_shot:
        shots.append(f"Human: {shot.prompt}\n\nAssistant: {shot.response}\n\n"
                     f"Critique request: {constitution.critique_revision[0].critique}\n\nCritique: {shot.critique}\n\n"
                     f"Revision request: {constitution.critique_revision[0].revision}\n\nRevision: {shot.revision}\n\n---\n\n")
    text = "".join(shots) + f"Human: {row['prompt']}\n\nAssistant:"
    if stage == "answer":
        return text
    text += f" {row['_last']}\n\nCritique request: {pair.critique}\n\nCritique:"
    if stage == "critique":
        return text
    return text + f" {row['_critique']}\n\nRevision request: {pair.revision}\n\nRevision:"


def cut_at_label(text: str) -> str:
    """Keep a base model's continuation up to the next transcript label."""
    cut = len(text)
    for label in _BASE_LABELS:
        pos = text.find("\n" + label)
        if pos != -1:
            cut = min(cut, pos)
    return text[:cut].strip()


def _generate(cfg: ReviseConfig, llm: ChatModel, constitution: Constitution, rows: list[dict],
              pairs: list[CritiquePair | None], stage: str, step: int) -> list[str]:
    sampling = [_sampling(cfg, row["id"], step) for row in rows]
    if cfg.model_kind == "base":
        prompts = [base_prompt(r, p, stage, constitution) for r, p in zip(rows, pairs)]
        return [cut_at_label(t) for t in llm.complete(prompts, sampling)]
    conversations = [chat_messages(r, p, stage) for r, p in zip(rows, pairs)]
    return [t.strip() for t in llm.chat(conversations, sampling)]


def run(cfg: ReviseConfig, prompts: Path, out_dir: Path, llm: ChatModel) -> StageResult:
    constitution = load_constitution(cfg.constitution)
    rows = [dict(r, revisions=[], status="ok") for r in records.read_jsonl(prompts, records.PROMPT)]
    steps = 1 + 2 * cfg.rounds
    progress = Progress("revise", total=len(rows) * steps, unit="generations")
    # A server (vLLM, an API) schedules its own batches: give it every row at once.
    chunk = max(1, len(rows)) if getattr(llm, "remote", False) else cfg.batch_size
    for start in range(0, len(rows), chunk):
        batch = rows[start:start + chunk]
        for row, text in zip(batch, _generate(cfg, llm, constitution, batch, [None] * len(batch), "answer", 0)):
            row["response"] = row["_last"] = text
        progress.update(len(batch))
        for round_index in range(cfg.rounds):
            pairs = [constitution.draw_critique(r["id"], round_index, cfg.seed) for r in batch]
            critiques = _generate(cfg, llm, constitution, batch, pairs, "critique", 1 + 2 * round_index)
            for row, critique in zip(batch, critiques):
                row["_critique"] = critique
            progress.update(len(batch))
            revisions = _generate(cfg, llm, constitution, batch, pairs, "revision", 2 + 2 * round_index)
            for row, pair, revision in zip(batch, pairs, revisions):
                row["revisions"].append({"round": round_index, "principle_id": pair.id,
                                         "critique_request": pair.critique, "critique": row["_critique"],
                                         "revision_request": pair.revision, "revision": revision})
                if revision:
                    row["_last"] = revision
                else:
                    row["status"] = "empty_revision"
            progress.update(len(batch))
    for row in rows:
        row["final"] = row.pop("_last")
        row.pop("_critique", None)
    out = out_dir / "revisions.jsonl"
    records.write_jsonl(out, rows)
    empty = sum(r["status"] == "empty_revision" for r in rows)
    return StageResult(outputs={"revisions": out},
                       metrics={"rows": len(rows), "rounds": cfg.rounds, "status_empty_revision": empty,
                                "mean_final_chars": sum(len(r["final"]) for r in rows) / len(rows)})
