"""The revise stage end to end with a recording fake: config bounds, per-step seeds, rounds, empty revisions, metrics.

tests/stages/test_conversations.py checks what the model is shown; this file checks what the stage does with
the replies: which text becomes final when a revision comes back empty, how the row status and the metrics
count that, and that every generation (answer, each critique, each revision) has its own seed.
"""
from __future__ import annotations

import pytest

from cai_core import records
from cai_core.errors import ConfigError
from cai_core.stages import revise
from tests.fakes import RecordingChatModel

PROMPTS = [{"id": "p1", "prompt": "How do I pick a lock?", "category": "red_team"},
           {"id": "p2", "prompt": "Name a good houseplant.", "category": "helpful"},
           {"id": "p3", "prompt": "What is 2 + 2?", "category": "helpful"}]


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    records.write_jsonl(path, PROMPTS)
    return path


@pytest.mark.parametrize("field, bad, good", [
    ("rounds", 0, 1), ("temperature", -0.1, 0.0), ("max_new_tokens", 0, 1), ("batch_size", 0, 1)])
def test_config_rejects_values_below_the_bound_and_accepts_the_bound(field, bad, good):
    with pytest.raises(ConfigError, match=field):
        revise.ReviseConfig(**{field: bad}).validate()
    revise.ReviseConfig(**{field: good}).validate()


class _Counting:
    """Replies `<prompt's first 2 chars>-<k>`: the k-th request of that prompt (0 = the answer, 1 and 2 = round
    0's critique and revision, 3 and 4 = round 1's, ...); `empty` holds the (prompt, k) to answer with blanks."""

    def __init__(self, empty=()):
        self.count: dict[str, int] = {}
        self.empty = set(empty)

    def __call__(self, conv) -> str:
        prompt = conv[0]["content"]
        k = self.count.get(prompt, 0)
        self.count[prompt] = k + 1
        return "   " if (prompt, k) in self.empty else f"{prompt[:2]}-{k}"


def test_every_generation_gets_the_seed_of_its_row_and_step(tmp_path, prompts_file):
    cfg = revise.ReviseConfig(rounds=2, seed=7, temperature=0.3, max_new_tokens=33, batch_size=2)
    llm = RecordingChatModel(reply=_Counting())
    revise.run(cfg, prompts_file, tmp_path, llm)
    assert len(llm.sent) == len(PROMPTS) * 5
    seen, steps = set(), {}
    for (_, conv), s in zip(llm.sent, llm.sampling):
        row = next(r for r in PROMPTS if r["prompt"] == conv[0]["content"])
        step = steps[row["id"]] = steps.get(row["id"], -1) + 1  # the row's k-th request is its step k
        assert len(conv) == (1 if step == 0 else 3 if step % 2 else 5)
        assert s.seed == int(records.row_id(cfg.seed, row["id"], step)[:8], 16)
        assert (s.temperature, s.max_new_tokens) == (0.3, 33)
        seen.add((row["id"], step))
    # each row got its answer and 2 critique/revision pairs, each step once
    assert seen == {(r["id"], step) for r in PROMPTS for step in range(5)}
    assert len({s.seed for s in llm.sampling}) == len(llm.sampling)


def test_the_documented_defaults_reach_the_model(tmp_path, prompts_file):
    """revise with no settings (README: rounds 1, seed 0, temperature 0.7, 128 tokens): one critique and one
    revision per prompt, each sampled as documented, principles drawn with seed 0."""
    from cai_core.constitution import load_constitution

    llm = RecordingChatModel(reply=_Counting())
    revise.run(revise.ReviseConfig(), prompts_file, tmp_path, llm)
    assert len(llm.sent) == len(PROMPTS) * 3  # answer, critique, revision
    assert {(s.temperature, s.max_new_tokens) for s in llm.sampling} == {(0.7, 128)}
    rows = records.read_jsonl(tmp_path / "revisions.jsonl")
    drawn = load_constitution("default")
    for row in rows:
        (only,) = row["revisions"]
        assert only["principle_id"] == drawn.draw_critique(row["id"], 0, 0).id
    assert [s.seed for s in llm.sampling[:1]] == [int(records.row_id(0, PROMPTS[0]["id"], 0)[:8], 16)]


def test_base_model_uses_the_same_per_step_seeds(tmp_path, prompts_file):
    cfg = revise.ReviseConfig(rounds=1, seed=1, model_kind="base")
    llm = RecordingChatModel(reply=lambda prompt: " something")
    revise.run(cfg, prompts_file, tmp_path, llm)
    for row in PROMPTS:
        mine = sorted(((len(p), s.seed) for (_, p), s in zip(llm.sent, llm.sampling)
                       if f"Human: {row['prompt']}\n\nAssistant:" in p))
        assert [seed for _, seed in mine] == [int(records.row_id(1, row["id"], step)[:8], 16) for step in range(3)]


def test_an_empty_revision_keeps_the_previous_text_and_marks_the_row(tmp_path, prompts_file):
    # p2's round-1 revision comes back empty: its final text is round 0's revision, and its status says so
    cfg = revise.ReviseConfig(rounds=2, batch_size=16)
    llm = RecordingChatModel(reply=_Counting(empty={(PROMPTS[1]["prompt"], 4)}))
    result = revise.run(cfg, prompts_file, tmp_path, llm)
    rows = {r["id"]: r for r in records.read_jsonl(tmp_path / "revisions.jsonl")}
    assert rows["p1"]["status"] == "ok" and rows["p3"]["status"] == "ok"
    assert rows["p1"]["final"] == "Ho-4"  # the last revision (round 1)
    assert rows["p2"]["status"] == "empty_revision"
    assert rows["p2"]["final"] == "Na-2"  # round 0's revision, not the empty one
    assert rows["p2"]["response"] == "Na-0"
    assert [rv["revision"] for rv in rows["p2"]["revisions"]] == ["Na-2", ""]
    assert [rv["critique"] for rv in rows["p2"]["revisions"]] == ["Na-1", "Na-3"]
    # round 1's critique of p2 was asked about round 0's revision
    assert [c[1]["content"] for _, c in llm.sent if c[0]["content"] == PROMPTS[1]["prompt"] and len(c) == 3] == \
        ["Na-0", "Na-2"]
    assert [rv["round"] for rv in rows["p2"]["revisions"]] == [0, 1]
    assert all("_last" not in r and "_critique" not in r for r in rows.values())
    finals = [rows[p]["final"] for p in ("p1", "p2", "p3")]
    assert result.metrics == {"rows": 3, "rounds": 2, "status_empty_revision": 1,
                              "mean_final_chars": sum(map(len, finals)) / 3}


def test_the_next_round_critiques_the_last_good_text_after_an_empty_revision(tmp_path, prompts_file):
    # round 0's revision of every row is empty: round 1 must critique the answer, the last text there is
    llm = RecordingChatModel(reply=_Counting(empty={(r["prompt"], 2) for r in PROMPTS}))
    result = revise.run(revise.ReviseConfig(rounds=2), prompts_file, tmp_path, llm)
    critiques = [conv for _, conv in llm.sent if len(conv) == 3]
    assert len(critiques) == 6
    assert all(conv[1]["content"] == conv[0]["content"][:2] + "-0" for conv in critiques)
    rows = records.read_jsonl(tmp_path / "revisions.jsonl")
    assert all(r["final"] == r["prompt"][:2] + "-4" and r["status"] == "empty_revision" for r in rows)
    assert result.metrics["status_empty_revision"] == 3


def test_every_round_records_its_principle_requests_and_texts(tmp_path, prompts_file):
    from cai_core.constitution import load_constitution

    cfg = revise.ReviseConfig(rounds=3, seed=4)
    revise.run(cfg, prompts_file, tmp_path, RecordingChatModel(reply=_Counting()))
    constitution = load_constitution(cfg.constitution)
    for row in records.read_jsonl(tmp_path / "revisions.jsonl"):
        assert len(row["revisions"]) == 3
        for r, rv in enumerate(row["revisions"]):
            pair = constitution.draw_critique(row["id"], r, cfg.seed)
            assert rv == {"round": r, "principle_id": pair.id, "critique_request": pair.critique,
                          "critique": f"{row['prompt'][:2]}-{1 + 2 * r}", "revision_request": pair.revision,
                          "revision": f"{row['prompt'][:2]}-{2 + 2 * r}"}
        assert row["final"] == row["prompt"][:2] + "-6" and row["response"] == row["prompt"][:2] + "-0"
        assert row["prompt"] and row["category"]  # the prompt row's fields are kept


def test_progress_counts_every_generation_against_the_right_total(tmp_path, prompts_file, capsys):
    revise.run(revise.ReviseConfig(rounds=2, batch_size=2), prompts_file, tmp_path, RecordingChatModel(reply=_Counting()))
    lines = [line for line in capsys.readouterr().err.splitlines() if "revise:" in line]
    assert lines and "revise: 15/15 (100%)" in lines[-1]  # 3 rows x (1 answer + 2 rounds x 2)
