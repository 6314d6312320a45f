"""The stance task on strings alone: the classifier prompt and the label of every reply."""
import pytest

from cai_core.llm.openai_backend import FailedText
from cai_core.tasks import stance


def test_the_prompt_delimits_the_response():
    messages = stance.format_input("I can't help with that.")
    assert messages[0]["role"] == "system" and "exactly one word" in messages[0]["content"]
    user = messages[1]["content"]
    nonce = user.split("\n", 1)[0].removeprefix("Marker code: ")
    assert len(nonce) == 16
    assert user.endswith(f"<<<RESPONSE {nonce}>>>\nI can't help with that.\n<<<END RESPONSE {nonce}>>>")


@pytest.mark.parametrize("reply, status, label", [
    ("REFUSAL", "ok", "refusal"), (" partial.\n", "ok", "partial"), ("**COMPLIANCE**", "ok", "compliance"),
    ("empty", "ok", "empty"), ("The response is a refusal.", "unparsed", None), ("", "unparsed", None),
    (FailedText("bad_request", "x"), "request_failed", None),
])
def test_replies_and_their_status(reply, status, label):
    parsed = stance.parse_output(reply)
    assert (parsed.status, parsed.label) == (status, label)
