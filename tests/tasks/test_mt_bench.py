"""The MT-Bench grading task on strings alone: the judge prompt per turn and mode, and grade parsing."""
import math

import pytest

from cai_core.llm.openai_backend import FailedScores, FailedText
from cai_core.tasks import mt_bench

ROW = {"turns": ["Name a prime.", "And an even one?"], "answers": ["7 is prime.", "2 is prime and even."],
       "reference": None}


def test_turn_one_prompt_grades_the_answer_alone():
    system, user = mt_bench.format_input(ROW, 0, "text")
    assert system == {"role": "system", "content": mt_bench.SYSTEM}
    body = user["content"]
    assert body.startswith("Grade the assistant's answer to the question below on a scale from 1")
    assert "\n\nQuestion:\n<<<\nName a prime.\n>>>\n\nAssistant's answer:\n<<<\n7 is prime.\n>>>\n\n" in body
    assert "Reference" not in body and "And an even one?" not in body
    assert body.endswith("in exactly this form: [[N]], with N replaced by a whole number from 1 to 10.")


def test_turn_two_prompt_gives_the_first_exchange_as_context_and_references_when_given():
    body = mt_bench.format_input({**ROW, "reference": ["7", "2"]}, 1, "logprobs")[1]["content"]
    assert body.startswith("Below is a two-turn conversation") and "A reference answer is given." in body
    for block in ("User's first message:\n<<<\nName a prime.", "Assistant's first answer:\n<<<\n7 is prime.",
                  "User's second message:\n<<<\nAnd an even one?", "Reference answer to the first message:\n<<<\n7",
                  "Reference answer to the second message:\n<<<\n2",
                  "Assistant's second answer (grade this one):\n<<<\n2 is prime and even.\n>>>"):
        assert block in body, block
    assert body.endswith("Reply with the grade only: a whole number from 1 to 10.")
    assert "Reference answer to the second message" not in mt_bench.format_input(
        {**ROW, "reference": ["7"]}, 1)[1]["content"]


@pytest.mark.parametrize("reply, status, score", [
    ("Correct and clear.\n[[9]]", "ok", 9.0), ("[[ 8.5 ]]", "ok", 8.5), ("[[3]] ... [[3]]", "ok", 3.0),
    ("I'd say 7/10.", "no_score", None), ("", "no_score", None), ("[[N]]", "no_score", None),
    ("[[11]]", "out_of_range", None), ("[[0]]", "out_of_range", None),
    ("[[4]] or rather [[6]]", "ambiguous", None),
])
def test_text_grades_each_status(reply, status, score):
    grade = mt_bench.parse_output(reply)
    assert (grade.status, grade.score) == (status, score)


def test_failed_requests_are_request_failed():
    assert mt_bench.parse_output(FailedText("retries_exhausted", "503")) == ("request_failed", None)
    assert mt_bench.parse_logprobs(FailedScores(10, "no_logprobs", "none")) == ("request_failed", None)


def test_logprob_grades_are_expected_values_or_no_score():
    peaked = [-60.0] * 10
    peaked[8] = 0.0
    grade = mt_bench.parse_logprobs(peaked)
    assert grade.status == "ok" and grade.score == pytest.approx(9.0, abs=1e-6)
    assert mt_bench.parse_logprobs([0.0] * 10).score == pytest.approx(5.5)
    assert mt_bench.parse_logprobs([-100.0] * 10) == ("no_score", None)
    assert mt_bench.parse_logprobs([0.0] * 9) == ("no_score", None)
    assert mt_bench.parse_logprobs([math.nan] + [0.0] * 9) == ("no_score", None)
    assert mt_bench.SCORES == tuple(str(i) for i in range(1, 11))
