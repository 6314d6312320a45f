"""The LLM cleaner's task on strings alone: the contract prompt and the strict parse of every reply shape."""
import pytest

from cai_core.llm.base import Failure
from cai_core.llm.openai_backend import FailedText
from cai_core.tasks import clean_llm

TEXT = "Water it weekly. I hope this helps! I hope this helps!"
PROMPT = "How often do I water a fern?"


def test_the_prompt_carries_the_contract_and_the_text_as_data():
    messages = clean_llm.format_input(TEXT, PROMPT)
    nonce = clean_llm.nonce_of(messages)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == clean_llm.CONTRACT and nonce not in clean_llm.CONTRACT
    assert messages[1]["content"] == (f"Marker code: {nonce}\n\n"
                                      f"<<<PROMPT {nonce}>>>\n{PROMPT}\n<<<END PROMPT {nonce}>>>\n\n"
                                      f"<<<TEXT {nonce}>>>\n{TEXT}\n<<<END TEXT {nonce}>>>")
    assert clean_llm.unpack_request(messages[1]["content"]) == (TEXT, PROMPT, nonce)
    assert clean_llm.format_input(TEXT, PROMPT) == messages  # same text, same request
    assert clean_llm.format_input(TEXT, None)[1]["content"].count("<<<PROMPT") == 1


def test_a_long_prompt_is_cut():
    messages = clean_llm.format_input(TEXT, "x" * 50, max_prompt_chars=10)
    assert clean_llm.unpack_request(messages[1]["content"])[1] == "x" * 10


N = "0123456789abcdef0123"


@pytest.mark.parametrize("reply, status, text", [
    (f"<<<CLEANED {N}>>>\nWater it weekly. I hope this helps!\n<<<END CLEANED {N}>>>", "ok",
     "Water it weekly. I hope this helps!"),
    (f"  <<<CLEANED {N}>>>\r\nline one\nline two\r\n<<<END CLEANED {N}>>>\n", "ok", "line one\nline two"),
    (f"<<<UNCHANGED {N}>>>", "unchanged", None),
    ("", "empty_reply", None),
    ("  \n ", "empty_reply", None),
    ("Here is the cleaned text: Water it weekly.", "no_block", None),
    (f"<<<CLEANED {N}>>>\nWater it weekly.", "unclosed", None),
    (f"<<<END CLEANED {N}>>> <<<CLEANED {N}>>>", "unclosed", None),
    (f"<<<CLEANED {N}>>>\na\n<<<END CLEANED {N}>>>\n<<<CLEANED {N}>>>\nb\n<<<END CLEANED {N}>>>", "several_blocks",
     None),
    ("<<<CLEANED ffff>>>\na\n<<<END CLEANED ffff>>>", "wrong_nonce", None),
    ("<<<UNCHANGED ffff>>>", "wrong_nonce", None),
    (f"Sure!\n<<<CLEANED {N}>>>\na\n<<<END CLEANED {N}>>>", "extra_text", None),
])
def test_every_reply_shape_has_its_status(reply, status, text):
    parsed = clean_llm.parse_output(reply, N)
    assert (parsed.status, parsed.text) == (status, text)
    assert parsed.ok == (status in ("ok", "unchanged"))
    assert status in clean_llm.PARSE_STATUSES


def test_a_well_formed_reply_round_trips():
    assert clean_llm.parse_output(clean_llm.format_reply("clean text", N), N).text == "clean text"
    assert clean_llm.parse_output(clean_llm.format_reply(None, N), N).status == "unchanged"


def test_a_failed_request_is_request_failed_with_its_failure():
    parsed = clean_llm.parse_output(FailedText("retries_exhausted", "503"), N)
    assert parsed.status == "request_failed" and parsed.text is None
    assert parsed.failure == Failure("retries_exhausted", "503")
