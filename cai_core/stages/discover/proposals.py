"""discover's teacher calls: principles proposed per pair, cluster summaries (prompts: cai_core.tasks.discover)."""
from __future__ import annotations

from collections import Counter

from cai_core import records
from cai_core.llm.base import ChatModel, Sampling, batches
from cai_core.progress import Progress
from cai_core.stages.discover.config import DiscoverConfig
from cai_core.tasks import discover as task

#: Summary task status -> metric name.
SUMMARY_METRICS = {"ok": "summary_ok", "unparsed": "summary_unparsed", "request_failed": "summary_failed"}


def chat(cfg: DiscoverConfig, llm: ChatModel, conversations: list[list[dict]], sampling: list[Sampling],
         desc: str) -> list[str]:
    """One reply per conversation, sent in `batches` with a progress line."""
    if not conversations:
        return []
    progress = Progress(desc, total=len(conversations), unit="requests")
    out: list[str] = []
    for batch in batches(llm, list(zip(conversations, sampling)), cfg.batch_size):
        out.extend(llm.chat([c for c, _ in batch], [s for _, s in batch]))
        progress.update(len(batch))
    return out


def propose(cfg: DiscoverConfig, pairs: list[dict], llm: ChatModel) -> tuple[list[dict], list[dict], Counter, Counter]:
    """(per-pair proposal rows, candidate rows, status counts, rejected-line counts)."""
    convs = [task.format_propose_input(p, cfg.per_pair) for p in pairs]
    sampling = [Sampling(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                         seed=int(records.row_id(cfg.seed, p["id"], "propose")[:8], 16)) for p in pairs]
    replies = chat(cfg, llm, convs, sampling, "discover propose")
    rows, candidates, statuses, rejected = [], [], Counter(), Counter()
    for pair, reply in zip(pairs, replies):
        row = {"pair_id": pair["id"], "line": pair["line"]}
        proposal = task.parse_propose_output(reply, cfg.per_pair)
        if proposal.status == "request_failed":
            row["status"], row["reason"] = proposal.status, proposal.reason
        else:
            rejected.update(proposal.rejected)
            row["principles"], row["status"] = proposal.principles, proposal.status
            if not proposal.principles:
                row["reply"] = str(reply)[:500]
            candidates.extend({"pair_id": pair["id"], "text": t} for t in proposal.principles)
        statuses[row["status"]] += 1
        rows.append(row)
    return rows, candidates, statuses, rejected


def summarise(cfg: DiscoverConfig, reps: list[dict], llm: ChatModel) -> dict[str, int]:
    """Replace each multi-member cluster's representative by a teacher-written summary; counts by outcome."""
    todo = [r for r in reps if len(r["members"]) > 1]
    convs = [task.format_summary_input(r["members"][:8]) for r in todo]
    sampling = [Sampling(temperature=0.0, max_new_tokens=96, seed=cfg.seed)] * len(convs)
    status = Counter()
    for rep, reply in zip(todo, chat(cfg, llm, convs, sampling, "discover summarise")):
        summary = task.parse_summary_output(reply)
        if summary.status == "ok":
            rep["text"], rep["source"] = summary.principle, "summary"
        status[SUMMARY_METRICS[summary.status]] += 1
    return dict(status)


__all__ = ["chat", "propose", "summarise"]
