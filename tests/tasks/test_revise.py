"""The revise task on strings alone: answer, critique and revision requests (chat and base transcript), replies."""
import pytest

from cai_core.constitution import load_constitution
from cai_core.llm.openai_backend import FailedText
from cai_core.tasks import revise

ROW = {"prompt": "How do I bake bread?", "_last": "Use flour.", "_critique": "It skips the steps."}


@pytest.fixture(scope="module")
def constitution():
    return load_constitution()


@pytest.fixture(scope="module")
def pair(constitution):
    return constitution.draw_critique("row-1", 0, 0)


def test_chat_conversations_grow_with_each_step(pair):
    assert revise.format_input(ROW, None, "answer") == [{"role": "user", "content": "How do I bake bread?"}]
    assert revise.format_input(ROW, pair, "critique") == [
        {"role": "user", "content": "How do I bake bread?"},
        {"role": "assistant", "content": "Use flour."},
        {"role": "user", "content": pair.critique}]
    assert revise.format_input(ROW, pair, "revision") == [
        {"role": "user", "content": "How do I bake bread?"},
        {"role": "assistant", "content": "Use flour."},
        {"role": "user", "content": pair.critique},
        {"role": "assistant", "content": "It skips the steps."},
        {"role": "user", "content": pair.revision}]


def test_base_transcript_has_the_few_shots_then_ends_at_the_label_to_continue(constitution, pair):
    answer = revise.format_transcript(ROW, None, "answer", constitution)
    critique = revise.format_transcript(ROW, pair, "critique", constitution)
    revision = revise.format_transcript(ROW, pair, "revision", constitution)
    assert answer.endswith("Human: How do I bake bread?\n\nAssistant:")
    assert critique == answer + f" Use flour.\n\nCritique request: {pair.critique}\n\nCritique:"
    assert revision == critique + f" It skips the steps.\n\nRevision request: {pair.revision}\n\nRevision:"
    shot = constitution.few_shot[0]
    first = constitution.critique_revision[0]
    assert answer.startswith(f"Human: {shot.prompt}\n\nAssistant: {shot.response}\n\n"
                             f"Critique request: {first.critique}\n\nCritique: {shot.critique}\n\n"
                             f"Revision request: {first.revision}\n\nRevision: {shot.revision}\n\n---\n\n")
    assert answer.count("---\n\n") == len(constitution.few_shot)


def test_instruct_replies_are_stripped():
    g = revise.parse_output("  A better answer.\n")
    assert g.text == "A better answer." and g.status == "ok"


@pytest.mark.parametrize("reply, text", [
    (" Knead the dough.\n\nHuman: next question", "Knead the dough."),
    (" Knead it.\nCritique request: more", "Knead it."),
    (" Step one.\n---\nHuman: x", "Step one."),
    (" No label here. ", "No label here."),
    ("Human: inline label stays", "Human: inline label stays"),
])
def test_base_replies_are_cut_at_the_next_transcript_label(reply, text):
    assert revise.parse_output(reply, "base").text == text


@pytest.mark.parametrize("reply", ["", "   \n", "\nHuman: only the next turn"])
def test_an_empty_reply_is_empty(reply):
    g = revise.parse_output(reply, "base")
    assert g.text == "" and g.status == "empty"
    assert revise.parse_output(reply.replace("\nHuman: only the next turn", "")).status == "empty"


def test_a_failed_request_reads_as_empty():
    g = revise.parse_output(FailedText("retries_exhausted", "503"))
    assert g.text == "" and g.status == "empty"
