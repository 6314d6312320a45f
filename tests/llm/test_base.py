"""The model interface's helpers: batches per call, closing a model, reading a failed-request marker."""
import pytest

from cai_core.llm.base import Failure, batches, failure_of, opened
from cai_core.llm.openai_backend import FailedScores, FailedText


class Model:
    name = "m"

    def __init__(self, remote):
        self.remote = remote
        self.closed = 0

    def close(self):
        self.closed += 1


def test_an_in_process_model_gets_batch_size_items_per_call():
    assert [list(b) for b in batches(Model(False), list(range(7)), 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batches(Model(False), [], 3)) == []


def test_a_remote_model_gets_everything_in_one_call():
    assert [list(b) for b in batches(Model(True), list(range(7)), 3)] == [list(range(7))]
    assert list(batches(Model(True), [], 3)) == []


def test_opened_closes_also_on_an_error():
    model = Model(False)
    with opened(model) as llm:
        assert llm is model and not model.closed
    assert model.closed == 1
    with pytest.raises(RuntimeError), opened(model):
        raise RuntimeError("boom")
    assert model.closed == 2
    with opened(None) as nothing:
        assert nothing is None


def test_failure_of_reads_the_markers():
    assert failure_of(FailedText("context_length", "too long")) == Failure("context_length", "too long")
    assert failure_of(FailedScores(2, "no_logprobs", "none")).status == "no_logprobs"
    assert failure_of("a reply") is None and failure_of([0.0, 1.0]) is None
    failure = Failure("retries_exhausted", "503")
    assert str(failure) == "retries_exhausted: 503" and failure.reason == "503"


def test_every_backend_says_where_it_runs_and_closes_twice_harmlessly(tmp_path):
    from cai_core.llm.openai_backend import OpenAIChatModel
    from cai_core.llm.transformers_backend import TransformersChatModel
    from cai_core.llm.vllm_server import VLLMChatModel
    from cai_core.testing.standin_teacher import StandInTeacher
    from tests.fakes import FakeChatModel

    models = [(OpenAIChatModel("m", base_url="http://127.0.0.1:9/v1", api_key="x", journal=str(tmp_path / "j")), True),
              (VLLMChatModel("m"), True), (TransformersChatModel("tiny"), False), (StandInTeacher(), False),
              (FakeChatModel(), False)]
    for model, remote in models:
        assert model.remote is remote
        model.close()
        model.close()
