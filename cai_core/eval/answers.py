"""What the collapse gate and the evaluate stage share: the models under test, their answers, the loop gallery.

`policy_loader` loads each model under test on the policy backend, `answer_all` has it answer a
prompt set (`cai_core.llm.base.opened` releases it after), and `worst_loops` picks the tail-looping
answers the report shows.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

from cai_core import records
from cai_core.llm.base import ChatModel, Sampling, batches, failure_of
from cai_core.metrics.repetition import is_tail_loop, ngrams, tokens
from cai_core.progress import Progress


class AnswerSettings(Protocol):
    """How `answer_all` samples (EvaluateConfig has these fields; the gate answers greedily)."""

    max_new_tokens: int
    temperature: float
    batch_size: int
    seed: int


def policy_loader(model_cfg: Any, vllm_cfg: Any = None) -> Callable[[str], ChatModel]:
    """path -> ChatModel for the policy backend of `model_cfg` (transformers in process, or vLLM servers).

    `vllm_cfg`: the run config's `vllm` section (layout, server options, stage_dir for s3:// models).
    """
    from cai_core.llm.vllm_server import load_policy_model

    return lambda path: load_policy_model(path, model_cfg, vllm_cfg)


def answer_all(cfg: AnswerSettings, llm: ChatModel, rows: list[dict], name: str,
               desc: str = "evaluate") -> list[dict]:
    """Answers to the held-out prompts: rows {id, prompt, category, model, response}."""
    progress = Progress(f"{desc}[{name}]", total=len(rows), unit="answers")
    out = []
    for batch in batches(llm, rows, cfg.batch_size):
        sampling = [Sampling(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                             seed=int(records.row_id(cfg.seed, r["id"])[:8], 16)) for r in batch]
        texts = llm.chat([[{"role": "user", "content": r["prompt"]}] for r in batch], sampling)
        for r, t in zip(batch, texts):
            row = {"id": r["id"], "prompt": r["prompt"], "category": r.get("category", "unknown"),
                   "model": name, "response": str(t).strip()}
            failure = failure_of(t)
            if failure:
                row["answer_status"], row["answer_reason"] = "generation_failed", str(failure)
            out.append(row)
        progress.update(len(batch))
    return out


def rep_n(text: str, n: int = 3) -> float:
    grams = ngrams(tokens(text), n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def worst_loops(rows: list[dict], n: int) -> list[dict]:
    """The `n` tail-looping answers with the highest rep-3 (then the longest)."""
    loops = [r for r in rows if r["response"].strip() and is_tail_loop(r["response"])]
    loops.sort(key=lambda r: (-rep_n(r["response"]), -len(r["response"]), r.get("model", ""), r["id"]))
    return [{"model": r.get("model", ""), "set": r.get("set", ""), "id": r["id"], "prompt": r["prompt"],
             "response": r["response"][:1200], "rep_3": round(rep_n(r["response"]), 4)} for r in loops[:n]]
