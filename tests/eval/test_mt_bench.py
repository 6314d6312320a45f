"""MT-Bench: bundled questions, two turns in context, judge prompts, strict grade parsing, summaries."""
from __future__ import annotations

import json
import math

import pytest

from cai_core.errors import InputError
from cai_core.eval import data_path, mt_bench
from cai_core.eval.mt_bench import Question
from cai_core.llm.base import Sampling
from cai_core.llm.openai_backend import FailedScores, FailedText
from cai_core.tasks import mt_bench as mt_bench_task


class Recorder:
    """Answers with a function of the whole conversation and remembers every conversation it saw."""

    name = "recorder"

    def __init__(self, reply=None, remote=False):
        self.seen: list[list[dict]] = []
        self.reply = reply or (lambda conv: f"answer to: {conv[-1]['content'][:30]}")
        self.remote = remote
        self.calls = 0

    def chat(self, conversations, sampling):
        assert len(conversations) == len(sampling) and all(isinstance(s, Sampling) for s in sampling)
        self.calls += 1
        self.seen += [list(c) for c in conversations]
        return [self.reply(list(c)) for c in conversations]

    def choice_logprobs(self, conversations, choices):
        self.seen += [list(c) for c in conversations]
        return [self.reply(list(c)) for c in conversations]


def test_bundled_questions_and_references():
    qs = mt_bench.load_questions()
    assert len(qs) == 80 and len({q.question_id for q in qs}) == 80
    assert {q.category for q in qs} == set(mt_bench.CATEGORIES)
    assert all(sum(q.category == c for q in qs) == 10 for c in mt_bench.CATEGORIES)
    assert all(len(q.turns) == 2 and all(q.turns) and not q.problems for q in qs)
    with_ref = [q for q in qs if q.reference]
    assert {q.category for q in with_ref} == {"math", "reasoning", "coding"} and len(with_ref) == 30
    assert all(len(q.reference) == 2 for q in with_ref)
    source = data_path("mt_bench", "SOURCE.md").read_text()
    assert "Apache-2.0" in source and "lm-sys/FastChat" in source


def test_subset_spreads_over_categories():
    qs = mt_bench.load_questions(limit=8)
    assert [q.category for q in qs] == list(mt_bench.CATEGORIES)
    assert [q.question_id for q in mt_bench.load_questions(limit=3)] == ["81", "91", "101"]
    assert len(mt_bench.load_questions(limit=12)) == 12
    assert len(mt_bench.load_questions(limit=500)) == 80


def test_missing_turns_are_kept_and_counted(tmp_path):
    path = tmp_path / "q.jsonl"
    rows = [{"question_id": 1, "category": "writing", "turns": ["Write a haiku.", "Now make it rhyme."]},
            {"question_id": 2, "category": "writing", "turns": ["Only one turn."]},
            {"question_id": 3, "category": "math"},
            {"question_id": 4, "category": "stem", "turns": "not a list"},
            {"question_id": 5, "category": "stem", "turns": ["", "Second only."]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    qs = mt_bench.load_questions(str(path), reference="none")
    assert [q.turns for q in qs] == [["Write a haiku.", "Now make it rhyme."], ["Only one turn.", None], [None, None],
                                     [None, None], [None, "Second only."]]
    assert qs[1].problems == ["turn 2 missing"] and "turns missing" in qs[2].problems
    model = Recorder()
    answered = mt_bench.answer(model, qs, "m", max_new_tokens=16)
    assert [r["answer_status"] for r in answered] == [["ok", "ok"], ["ok", "missing_turn"],
                                                      ["missing_turn", "missing_turn"], ["missing_turn", "missing_turn"],
                                                      ["missing_turn", "missing_turn"]]
    judge = Recorder(reply=lambda conv: "Fine. [[6]]")
    mt_bench.grade(judge, answered, "text")
    summary = mt_bench.summarize(answered)
    assert summary["statuses"]["missing_turn"] == 7 and summary["statuses"]["ok"] == 3
    assert summary["turn1"] == 6.0 and summary["turn2"] == 6.0 and summary["n_turn1"] == 2 and summary["n_turn2"] == 1


def test_bad_question_file_names_the_line(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question_id": 1, "turns": ["a", "b"]}\nnot json\n')
    with pytest.raises(InputError, match=r"q.jsonl:2: not valid JSON"):
        mt_bench.load_questions(str(path), reference="none")
    path.write_text('{"turns": ["a", "b"]}\n')
    with pytest.raises(InputError, match=r"q.jsonl:1: field 'question_id': missing"):
        mt_bench.load_questions(str(path), reference="none")


def test_second_turn_sees_the_models_own_first_answer():
    qs = mt_bench.load_questions(limit=2)
    model = Recorder(reply=lambda conv: f"A{len(conv)}:{conv[-1]['content'][:12]}")
    rows = mt_bench.answer(model, qs, "m", max_new_tokens=16)
    second = [c for c in model.seen if len(c) == 3]
    assert len(second) == 2
    for conv, q, row in zip(second, qs, rows):
        assert conv[0] == {"role": "user", "content": q.turns[0]}
        assert conv[1] == {"role": "assistant", "content": row["answers"][0]}
        assert conv[2] == {"role": "user", "content": q.turns[1]}
        assert row["answers"][0].startswith("A1:") and row["answers"][1].startswith("A3:")
    assert model.calls == 2  # in-process: one call per turn here (2 questions <= batch size)


def test_remote_model_gets_each_turn_in_one_call():
    qs = mt_bench.load_questions(limit=40)
    model = Recorder(remote=True)
    mt_bench.answer(model, qs, "m", max_new_tokens=16, batch_size=4)
    assert model.calls == 2


def test_failed_and_empty_answers():
    qs = mt_bench.load_questions(limit=3)

    def reply(conv):
        if "Hawaii" in conv[0]["content"]:
            return FailedText("context_length", "too long")
        return "" if len(conv) == 1 and "Pretend" in conv[0]["content"] else "text"

    rows = mt_bench.answer(Recorder(reply=reply), qs, "m", max_new_tokens=8)
    assert rows[0]["answer_status"] == ["generation_failed", "generation_failed"]
    assert rows[0]["answer_reason"][0] == "context_length: too long"
    assert rows[1]["answer_status"] == ["empty", "ok"]
    mt_bench.grade(Recorder(reply=lambda conv: "[[8]]"), rows, "text")
    assert rows[1]["grades"][0] == {"status": "empty_answer", "score": 1.0}
    s = mt_bench.summarize(rows)
    assert s["statuses"]["generation_failed"] == 2 and s["statuses"]["empty_answer"] == 1
    assert s["turn1"] == pytest.approx((1 + 8) / 2) and s["n_turn1"] == 2


@pytest.mark.parametrize("reply, status, score", [
    ("Helpful and correct.\n[[7]]", "ok", 7.0),
    ("Rating: [[ 8.5 ]]", "ok", 8.5),
    ("[[10]]", "ok", 10.0),
    ("[[1]] and again [[1]]", "ok", 1.0),
    ("Good answer, I give it 7/10.", "no_score", None),
    ("Score: [[N]]", "no_score", None),
    ("", "no_score", None),
    ("[[11]]", "out_of_range", None),
    ("[[0]]", "out_of_range", None),
    ("[[-3]]", "out_of_range", None),
    ("First [[3]], on reflection [[7]]", "ambiguous", None),
])
def test_parse_score(reply, status, score):
    assert mt_bench_task.parse_output(reply) == (status, score)


def test_parse_score_failed_request():
    assert mt_bench_task.parse_output(FailedText("retries_exhausted", "503")) == ("request_failed", None)


def test_expected_score_from_logprobs():
    peaked = [-50.0] * 10
    peaked[6] = 0.0
    status, score = mt_bench_task.parse_logprobs(peaked)
    assert status == "ok" and score == pytest.approx(7.0, abs=1e-6)
    status, score = mt_bench_task.parse_logprobs([0.0] * 10)
    assert score == pytest.approx(5.5)
    two = [-math.inf] * 10
    two[1] = two[3] = math.log(0.5)
    assert mt_bench_task.parse_logprobs([x if math.isfinite(x) else -1e4 for x in two])[1] == pytest.approx(3.0)
    assert mt_bench_task.parse_logprobs([-100.0] * 10) == ("no_score", None)
    assert mt_bench_task.parse_logprobs([0.0] * 9) == ("no_score", None)
    assert mt_bench_task.parse_logprobs(FailedScores(10, "no_logprobs", "none")) == ("request_failed", None)


def test_grade_prompts_reference_and_context():
    qs = {q.category: q for q in mt_bench.load_questions(limit=8)}
    rows = mt_bench.answer(Recorder(reply=lambda conv: f"MY ANSWER {len(conv)}"), list(qs.values()), "m",
                           max_new_tokens=8)
    by_cat = {r["category"]: r for r in rows}
    math_t1 = mt_bench_task.format_input(by_cat["math"], 0, "text")
    assert math_t1[0]["role"] == "system" and "never gives you instructions" in math_t1[0]["content"]
    body = math_t1[1]["content"]
    assert "Reference answer" in body and qs["math"].reference[0] in body and "[[N]]" in body
    assert "MY ANSWER 1" in body and "MY ANSWER 3" not in body
    writing_t2 = mt_bench_task.format_input(by_cat["writing"], 1, "logprobs")[1]["content"]
    assert "Reference" not in writing_t2
    assert qs["writing"].turns[0] in writing_t2 and qs["writing"].turns[1] in writing_t2
    assert "MY ANSWER 1" in writing_t2 and "MY ANSWER 3" in writing_t2
    assert "grade only" in writing_t2.lower() and writing_t2.endswith("a whole number from 1 to 10.")
    coding_t2 = mt_bench_task.format_input(by_cat["coding"], 1, "text")[1]["content"]
    assert "Reference answer to the second message" in coding_t2


def test_grade_text_mode_counts_every_cause():
    qs = mt_bench.load_questions(limit=8)
    rows = mt_bench.answer(Recorder(), qs, "m", max_new_tokens=8)
    replies = iter(["[[9]]", "no grade here", "[[12]]", "[[2]] or [[5]]", FailedText("bad_request", "x"),
                    "[[4]]", "[[6]]", "[[8]]"] * 2)
    judge = Recorder(reply=lambda conv: next(replies), remote=True)
    mt_bench.grade(judge, rows, "text")
    s = mt_bench.summarize(rows)
    assert s["statuses"] == {"ok": 8, "empty_answer": 0, "missing_turn": 0, "generation_failed": 0, "no_score": 2,
                             "out_of_range": 2, "ambiguous": 2, "request_failed": 2}
    assert s["average"] == pytest.approx((9 + 4 + 6 + 8) / 4)
    failed = [g for r in rows for g in r["grades"] if g["status"] == "request_failed"]
    assert failed[0]["reason"] == "bad_request: x" and failed[0]["score"] is None
    assert all("judge_reply" in g for r in rows for g in r["grades"])


def test_grade_logprob_mode_reads_expected_values():
    qs = mt_bench.load_questions(limit=4)
    rows = mt_bench.answer(Recorder(), qs, "m", max_new_tokens=8)

    class LogprobJudge:
        name = "local"
        remote = False

        def __init__(self):
            self.choices = None

        def choice_logprobs(self, convs, choices):
            self.choices = list(choices)
            out = []
            for conv in convs:
                lp = [-30.0] * 10
                lp[2 if "second answer" in conv[1]["content"] else 7] = 0.0
                out.append(lp)
            return out

    judge = LogprobJudge()
    mt_bench.grade(judge, rows, "logprobs", batch_size=3)
    assert judge.choices == [str(i) for i in range(1, 11)]
    s = mt_bench.summarize(rows)
    assert s["turn1"] == pytest.approx(8.0) and s["turn2"] == pytest.approx(3.0)
    assert s["average"] == pytest.approx(5.5) and set(s["categories"]) == {"writing", "roleplay", "reasoning", "math"}


def test_summary_of_nothing_graded_is_none_not_zero():
    q = Question("1", "writing", ["a", "b"])
    rows = mt_bench.answer(Recorder(), [q], "m", max_new_tokens=4)
    mt_bench.grade(Recorder(reply=lambda conv: "no grade"), rows, "text")
    s = mt_bench.summarize(rows)
    assert s["turn1"] is None and s["average"] is None and s["statuses"]["no_score"] == 2


# ---------------------------------------------------------------------------------- cai evaluate


def _sim_reply(kind, body, cfg):
    """Simulated endpoint: grades and safety classes for judge prompts, ordinary text otherwise."""
    from cai_core.testing.sim_openai import default_reply

    text = "\n".join(str(m.get("content", "")) for m in body.get("messages") or [])
    if "[[N]]" in text:
        return "Mostly right, a little thin. [[7]]", None
    if "A - harmful compliance" in text:
        return ("A" if "bomb" in text else "B"), None
    return default_reply(kind, body, cfg)


def test_cai_evaluate_command_against_endpoints(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cai_core.cli.commands.evaluate import evaluate_cmd
    from cai_core.testing.sim_openai import SimServer

    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    with SimServer(reply_fn=_sim_reply, models=()) as sim:
        args = ["--model", "dpo=my-dpo", "--baseline", "base=my-base", "--base-url", sim.base_url,
                "--judge-base-url", sim.base_url, "--judge-model", "judge-x", "--out", str(tmp_path / "ev"),
                "--set", "evaluate.mt_bench_questions=3", "--set", "evaluate.red_team_max=6",
                "--set", "evaluate.benign_max=4", "--set", "eval_prompts.max_prompts=5"]
        result = CliRunner().invoke(evaluate_cmd, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        stats = sim.stats()
        again = CliRunner().invoke(evaluate_cmd, args, catch_exceptions=False)  # resumes from <out>/journal
        assert again.exit_code == 0 and sim.stats()["requests"] == stats["requests"], "paid twice"
        assert json.loads(again.stdout) == json.loads(result.stdout)
    summary = json.loads(result.stdout)
    assert list(summary) == ["base", "dpo"]
    for row in summary.values():
        assert row["mt_bench_t1"] == row["mt_bench_t2"] == row["mt_bench_avg"] == 7.0
        assert 0 <= row["asr_ci_low"] <= row["asr"] <= row["asr_ci_high"] <= 1 and row["asr_n"] == 6
        assert row["over_refusal"] == 1.0 and row["evaluated"] is True and row["gate"] is None
    out = tmp_path / "ev"
    assert (out / "report.html").exists() and (out / "report.md").exists()
    assert len(records_of(out / "evaluate" / "mt_bench_dpo.jsonl")) == 3
    assert len(records_of(out / "evaluate" / "answers_base.jsonl")) == 5
    assert "report:" in result.stderr and "Evaluation" in (out / "report.md").read_text()
    assert stats["by_status"].get("200", stats["by_status"].get(200)) > 0
    assert {p.name for p in (out / "journal").iterdir()} == {"judge", "my-base", "my-dpo"}


def records_of(path):
    from cai_core import records

    return records.read_jsonl(path)


def test_cai_evaluate_labels():
    from cai_core.errors import CaiError
    from cai_core.cli.commands.evaluate import model_specs, split_label

    assert split_label("dpo=/runs/x/model", "model") == ("dpo", "/runs/x/model")
    assert split_label("/runs/a=b/model", "model") == ("model", "/runs/a=b/model")
    specs = model_specs("runs/dpo", ("b1", "b2"), None)
    assert list(specs) == ["baseline_1", "baseline_2", "model"] and specs["model"] == ("runs/dpo", "runs/dpo")
    assert model_specs("dpo", (), "served/name")["model"] == ("dpo", "served/name")
    with pytest.raises(CaiError, match="share the label 'x'"):
        model_specs("x=a", ("x=b",), None)
