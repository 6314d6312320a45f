"""MT-Bench: two-turn helpfulness, graded 1-10 by a judge model.

The 80 questions (8 categories x 10) and the GPT-4 reference answers are bundled in
`cai_core/data/mt_bench/` (Apache-2.0, see SOURCE.md there). The model answers turn 1,
then turn 2 with its own first answer in context. A judge grades each answer alone
(single-answer grading) with cai's own prompt (the task `cai_core.tasks.mt_bench`); for
math, reasoning and coding the judge also sees the reference answer(s).

Two ways to read a grade (`mode`):

* ``text`` (remote judges): the judge explains briefly and ends with ``[[N]]``; the reply
  must hold exactly one such grade (the same number repeated is fine), N in 1..10;
* ``logprobs`` (the in-process judge): the judge is asked for the number only and the
  grade is the expected value sum(i * P(i)) over the choices "1".."10" (log-probabilities
  normalised over those ten).

Every (question, turn) ends with one status (stable codes):

=================  ===========================================================  ===============
status             meaning                                                      in the average
=================  ===========================================================  ===============
ok                 graded                                                       yes
empty_answer       the model answered with nothing (scored 1, the scale floor)   yes
missing_turn       the question file has no text for this turn                  no
generation_failed  the model request failed (turn 2 also when turn 1 failed)     no
no_score           the judge reply holds no [[N]] grade (or no score logprobs)   no
out_of_range       the grade is outside 1..10                                   no
ambiguous          the judge reply holds different grades                       no
request_failed     the judge request failed                                     no
=================  ===========================================================  ===============

`summarize` gives turn-1, turn-2 and overall averages (the overall one over every graded
turn, as MT-Bench does), per-category averages, and counts per status.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

from cai_core import records
from cai_core.errors import InputError
from cai_core.eval import data_path, mean
from cai_core.llm.base import ChatModel, Sampling, batches, failure_of
from cai_core.progress import Progress
from cai_core.tasks import mt_bench as task

CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
#: Categories whose judge prompt carries the reference answer.
REFERENCE_CATEGORIES = ("math", "reasoning", "coding")
STATUSES = ("ok", "empty_answer", "missing_turn", "generation_failed", "no_score", "out_of_range", "ambiguous",
            "request_failed")
SCORED = ("ok", "empty_answer")
EMPTY_SCORE = 1.0
TURNS = 2


@dataclass
class Question:
    question_id: str
    category: str
    turns: list[str | None]  # None: the file has no text for this turn
    reference: list[str] | None = None
    problems: list[str] = field(default_factory=list)


def load_questions(source: str = "builtin", reference: str = "builtin", limit: int = 0) -> list[Question]:
    """Questions from an MT-Bench question file (FastChat format: question_id, category, turns).

    `source`/`reference`: ``builtin`` (the bundled files), a local path, or ``none`` (reference only).
    A row whose turns are missing, not a list, or hold empty/non-text turns is kept, with those
    turns as None (graded ``missing_turn``); a file that is not JSONL fails with its line number.
    `limit` > 0 keeps a subset spread over the categories (see `select`).
    """
    path = str(data_path("mt_bench", "question.jsonl")) if source == "builtin" else source
    rows = records.read_jsonl(path)
    refs: dict[str, list[str]] = {}
    if reference != "none":
        ref_path = str(data_path("mt_bench", "reference_answer_gpt-4.jsonl")) if reference == "builtin" else reference
        for line, row in enumerate(records.read_jsonl(ref_path), start=1):
            try:
                refs[str(row["question_id"])] = [str(t) for t in row["choices"][0]["turns"]]
            except (KeyError, IndexError, TypeError):
                raise InputError("expected question_id and choices[0].turns", path=ref_path, line=line) from None
    out: list[Question] = []
    for line, row in enumerate(rows, start=1):
        if "question_id" not in row:
            raise InputError("missing", path=path, line=line, field="question_id")
        qid = str(row["question_id"])
        category = row.get("category") if isinstance(row.get("category"), str) else "unknown"
        raw = row.get("turns")
        problems = []
        if not isinstance(raw, list):
            problems.append("turns missing" if raw is None else f"turns is {type(raw).__name__}, not a list")
            raw = []
        turns: list[str | None] = []
        for t in range(TURNS):
            text = raw[t] if t < len(raw) else None
            if not isinstance(text, str) or not text.strip():
                problems.append(f"turn {t + 1} missing")
                text = None
            turns.append(text)
        ref = refs.get(qid) if category in REFERENCE_CATEGORIES else None
        out.append(Question(qid, category, turns, ref, problems))
    return select(out, limit)


def select(questions: Sequence[Question], n: int) -> list[Question]:
    """The first `n` questions taken round-robin over the categories in file order (n <= 0: all)."""
    if n <= 0 or n >= len(questions):
        return list(questions)
    by_cat: dict[str, list[Question]] = defaultdict(list)
    for q in questions:
        by_cat[q.category].append(q)
    picked: list[Question] = []
    depth = 0
    while len(picked) < n:
        for cat in by_cat:
            if depth < len(by_cat[cat]) and len(picked) < n:
                picked.append(by_cat[cat][depth])
        depth += 1
    order = {id(q): i for i, q in enumerate(questions)}
    return sorted(picked, key=lambda q: order[id(q)])


# ---------------------------------------------------------------------------------- answering


def _seed(seed: int, qid: str, turn: int) -> int:
    return int(records.row_id("mt_bench", seed, qid, turn)[:8], 16)


def _chat(llm: ChatModel, convs: list[list[dict]], sampling: list[Sampling], batch_size: int,
          progress: Progress | None) -> list[str]:
    out: list[str] = []
    for batch in batches(llm, list(zip(convs, sampling)), batch_size):
        out += llm.chat([c for c, _ in batch], [s for _, s in batch])
        if progress is not None:
            progress.update(len(batch))
    return out


def answer(llm: ChatModel, questions: Sequence[Question], model: str, *, max_new_tokens: int,
           temperature: float = 0.0, seed: int = 0, batch_size: int = 16) -> list[dict]:
    """Both turns of every question; turn 2 sees the model's own first answer.

    Row: question_id, category, model, turns, answers (None where not generated),
    answer_status per turn (ok, empty, missing_turn, generation_failed) and reasons.
    """
    rows = [{"question_id": q.question_id, "category": q.category, "model": model, "turns": list(q.turns),
             "reference": q.reference, "answers": [None] * TURNS, "answer_status": ["missing_turn"] * TURNS,
             "answer_reason": [""] * TURNS, "problems": list(q.problems)} for q in questions]
    progress = Progress(f"mt_bench[{model}]", total=sum(t is not None for q in questions for t in q.turns),
                        unit="answers")
    for turn in range(TURNS):
        todo, convs = [], []
        for i, (q, row) in enumerate(zip(questions, rows)):
            if q.turns[turn] is None:
                continue
            conv: list[dict] = []
            if turn == 1:
                if q.turns[0] is None or row["answer_status"][0] == "generation_failed":
                    missing = q.turns[0] is None
                    row["answer_status"][1] = "missing_turn" if missing else "generation_failed"
                    row["answer_reason"][1] = "turn 1 is missing (no context)" if missing else "turn 1 was not answered"
                    progress.update(1)
                    continue
                conv = [{"role": "user", "content": q.turns[0]}, {"role": "assistant", "content": row["answers"][0]}]
            conv.append({"role": "user", "content": q.turns[turn]})
            todo.append(i)
            convs.append(conv)
        sampling = [Sampling(temperature=temperature, max_new_tokens=max_new_tokens,
                             seed=_seed(seed, rows[i]["question_id"], turn)) for i in todo]
        texts = _chat(llm, convs, sampling, batch_size, progress)
        for i, text in zip(todo, texts):
            fail = failure_of(text)
            row = rows[i]
            if fail:
                row["answer_status"][turn], row["answer_reason"][turn] = "generation_failed", f"{fail[0]}: {fail[1]}"
                row["answers"][turn] = ""
                continue
            row["answers"][turn] = str(text).strip()
            row["answer_status"][turn] = "ok" if row["answers"][turn] else "empty"
    return rows


# ---------------------------------------------------------------------------------- grading


def grade(judge: ChatModel, rows: list[dict], mode: str, *, max_new_tokens: int = 512,
          batch_size: int = 16) -> list[dict]:
    """Set row["grades"] = [{status, score, reason?, judge_reply?}, ...] per turn (in place); return rows."""
    items: list[tuple[int, int]] = []
    for i, row in enumerate(rows):
        row["grades"] = [None] * TURNS
        for t in range(TURNS):
            status = row["answer_status"][t]
            if status == "ok":
                items.append((i, t))
            elif status == "empty":
                row["grades"][t] = {"status": "empty_answer", "score": EMPTY_SCORE}
            else:
                row["grades"][t] = {"status": status, "score": None, "reason": row["answer_reason"][t]}
    jobs = [((i, t), task.format_input(rows[i], t, mode)) for i, t in items]
    progress = Progress("mt_bench judge", total=len(items), unit="grades")
    for batch in batches(judge, jobs, batch_size):
        convs = [conv for _, conv in batch]
        if mode == "logprobs":
            results = [(*task.parse_logprobs(lp), None) for lp in judge.choice_logprobs(convs, list(task.SCORES))]
        else:
            replies = judge.chat(convs, [Sampling(temperature=0.0, max_new_tokens=max_new_tokens)] * len(batch))
            results = [(*task.parse_output(r), r) for r in replies]
        for ((i, t), _), (status, score, reply) in zip(batch, results):
            g: dict[str, Any] = {"status": status, "score": score}
            if reply is not None:
                g["judge_reply"] = str(reply)
            fail = failure_of(reply)
            if fail:
                g["reason"] = f"{fail[0]}: {fail[1]}"
            rows[i]["grades"][t] = g
        progress.update(len(batch))
    return rows


def summarize(rows: Sequence[dict]) -> dict:
    """turn1 / turn2 / average (None when nothing was graded), n per turn, categories, statuses."""
    per_turn: list[list[float]] = [[] for _ in range(TURNS)]
    per_cat: dict[str, list[float]] = defaultdict(list)
    statuses: Counter = Counter()
    for row in rows:
        for t, g in enumerate(row.get("grades") or []):
            if g is None:
                continue
            statuses[g["status"]] += 1
            if g["status"] in SCORED and g["score"] is not None:
                per_turn[t].append(float(g["score"]))
                per_cat[row["category"]].append(float(g["score"]))
    every = [s for scores in per_turn for s in scores]
    return {"turn1": mean(per_turn[0]), "turn2": mean(per_turn[1]), "average": mean(every),
            "n_turn1": len(per_turn[0]), "n_turn2": len(per_turn[1]), "questions": len(rows),
            "categories": {c: mean(v) for c, v in sorted(per_cat.items())},
            "statuses": {s: statuses.get(s, 0) for s in STATUSES}}


__all__ = ["CATEGORIES", "Question", "REFERENCE_CATEGORIES", "STATUSES", "answer", "grade", "load_questions", "select",
           "summarize"]
