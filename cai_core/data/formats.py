"""Field-mapping recipes: a prompt (or a preference pair) from the common shapes of public data sets.

Formats (``prompts.format``, ``discover.format``):

* ``plain`` - the prompt is the string in the prompt field (``prompt`` by default);
* ``hh`` - an HH-RLHF transcript (``"\\n\\nHuman: ... \\n\\nAssistant: ..."``) in the prompt field or, when that
  field is absent, in ``transcript``, ``chosen`` or ``text``: the prompt is the first human turn;
* ``messages`` - a chat list (``[{"role": "user", "content": ...}, ...]``, or ShareGPT's ``from``/``value``) in the
  prompt field or in ``messages``, ``conversations`` or ``chosen``: the prompt is the first user turn;
* ``auto`` - decided once, from the first row: a string prompt field is plain (hh if it holds a transcript),
  else a chat list is messages, else a transcript is hh, else plain (which then names the missing field).

Preference rows (discover) hold ``chosen`` / ``rejected`` as strings (plain answers, or whole HH transcripts:
the answer is the last assistant turn, the prompt what came before it) or as chat lists, as
``HuggingFaceH4/ultrafeedback_binarized`` does (the answer is the last assistant message; the prompt the prompt
field, else the first user turn).

A row with no user turn gives ``None`` (the caller drops it as ``no_user_turn``); a field of the wrong type
is an `InputError` naming the row and field.
"""
from __future__ import annotations

import re
from typing import Any

from cai_core.errors import InputError

FORMATS = ("auto", "plain", "hh", "messages")
#: Fields tried, after the configured prompt field, for each recipe.
HH_FIELDS = ("transcript", "chosen", "text")
MESSAGE_FIELDS = ("messages", "conversations", "conversation", "chosen")

_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):", re.S)
_USER_ROLES = ("user", "human")
_ASSISTANT_ROLES = ("assistant", "gpt", "bot", "model")


def is_transcript(text: Any) -> bool:
    return isinstance(text, str) and bool(re.search(r"(?:^|\n\n)Human:", text)) and "Assistant:" in text


def turns(transcript: str) -> list[tuple[str, str]]:
    """(speaker, text) of each turn of an HH transcript; speaker is 'user' or 'assistant'."""
    marks = list(_TURN.finditer(transcript))
    out = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(transcript)
        speaker = "user" if m.group(1) == "Human" else "assistant"
        out.append((speaker, transcript[m.end():end].strip()))
    return out


def first_human_turn(transcript: str) -> str | None:
    for speaker, text in turns(transcript):
        if speaker == "user":
            return text
    return None


def message_parts(message: Any, where: str, line: int, field: str) -> tuple[str, str]:
    if not isinstance(message, dict):
        raise InputError(f"expected a list of messages (objects with role and content), got an item of type "
                         f"{type(message).__name__}", path=where, line=line, field=field)
    role = message.get("role", message.get("from"))
    content = message.get("content", message.get("value"))
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    if not isinstance(role, str) or not isinstance(content, str):
        raise InputError("a message needs a string role (or from) and content (or value)", path=where, line=line,
                         field=field)
    return role.lower(), content


def first_user_turn(messages: list, where: str = "", line: int = 0, field: str = "messages") -> str | None:
    for message in messages:
        role, content = message_parts(message, where, line, field)
        if role in _USER_ROLES:
            return content
    return None


def last_assistant_turn(messages: list, where: str = "", line: int = 0, field: str = "chosen") -> str | None:
    for message in reversed(messages):
        role, content = message_parts(message, where, line, field)
        if role in _ASSISTANT_ROLES:
            return content
    return None


def _candidates(fmt: str, prompt_field: str) -> tuple[str, ...]:
    extra = HH_FIELDS if fmt == "hh" else MESSAGE_FIELDS if fmt == "messages" else ()
    return (prompt_field, *[f for f in extra if f != prompt_field])


def detect(row: dict, prompt_field: str) -> tuple[str, str]:
    """(format, field) for `auto`, from one row."""
    value = row.get(prompt_field)
    if isinstance(value, str):
        return ("hh" if is_transcript(value) else "plain"), prompt_field
    for name in _candidates("messages", prompt_field):
        if isinstance(row.get(name), list):
            return "messages", name
    for name in _candidates("hh", prompt_field):
        if is_transcript(row.get(name)):
            return "hh", name
    return "plain", prompt_field


def resolve(fmt: str, row: dict, prompt_field: str) -> tuple[str, str]:
    """The recipe and the field it reads, decided from the first row."""
    if fmt == "auto":
        return detect(row, prompt_field)
    if fmt == "plain":
        return fmt, prompt_field
    want = str if fmt == "hh" else list
    for name in _candidates(fmt, prompt_field):
        if isinstance(row.get(name), want):
            return fmt, name
    return fmt, prompt_field  # extract() names it as missing


def extract(fmt: str, field: str, row: dict, where: str, line: int) -> str | None:
    """The prompt of one row by recipe `fmt` from `field`; None when it has no user turn."""
    if field not in row:
        raise InputError("missing", path=where, line=line, field=field)
    value = row[field]
    if fmt == "messages":
        if not isinstance(value, list):
            raise InputError(f"expected a list of messages, got {type(value).__name__}", path=where, line=line,
                             field=field)
        return first_user_turn(value, where, line, field)
    if not isinstance(value, str):
        raise InputError(f"expected a string, got {type(value).__name__}", path=where, line=line, field=field)
    if fmt == "hh":
        return first_human_turn(value)
    return value


# -- preference pairs ---------------------------------------------------------------------------------

def _split_transcript(text: str) -> tuple[str, str] | None:
    """(context, last assistant answer) of an HH transcript; the context of a single exchange is its human turn."""
    parts = turns(text)
    if not parts or parts[-1][0] != "assistant":
        return None
    context = parts[:-1]
    if len(context) == 1:
        return context[0][1], parts[-1][1]
    prompt = "\n\n".join(f"{'Human' if s == 'user' else 'Assistant'}: {t}" for s, t in context)
    return prompt, parts[-1][1]


def pair_format(row: dict, chosen_field: str) -> str:
    """The recipe of a preference row (auto): messages for chat lists, hh for transcripts, else plain."""
    value = row.get(chosen_field)
    if isinstance(value, list):
        return "messages"
    return "hh" if is_transcript(value) else "plain"


def extract_pair(fmt: str, row: dict, prompt_field: str, chosen_field: str, rejected_field: str, where: str,
                 line: int) -> tuple[str, str, str] | None:
    """(prompt, chosen, rejected) of one preference row by recipe `fmt`; None when a side has no answer."""
    for name in (chosen_field, rejected_field):
        if name not in row:
            raise InputError("missing", path=where, line=line, field=name)
    given = row.get(prompt_field)
    if given is not None and not isinstance(given, str):
        raise InputError(f"expected a string, got {type(given).__name__}", path=where, line=line, field=prompt_field)
    if fmt == "messages":
        sides = []
        for name in (chosen_field, rejected_field):
            if not isinstance(row[name], list):
                raise InputError(f"expected a list of messages, got {type(row[name]).__name__}", path=where,
                                 line=line, field=name)
            sides.append(last_assistant_turn(row[name], where, line, name))
        prompt = given if given is not None else first_user_turn(row[chosen_field], where, line, chosen_field)
        if prompt is None or sides[0] is None or sides[1] is None:
            return None
        return prompt, sides[0], sides[1]
    for name in (chosen_field, rejected_field):
        if not isinstance(row[name], str):
            raise InputError(f"expected a string, got {type(row[name]).__name__}", path=where, line=line, field=name)
    if fmt == "hh":
        chosen, rejected = _split_transcript(row[chosen_field]), _split_transcript(row[rejected_field])
        if chosen is None or rejected is None:
            return None
        return (given if given is not None else chosen[0]), chosen[1], rejected[1]
    if given is None:
        raise InputError("missing", path=where, line=line, field=prompt_field)
    return given, row[chosen_field], row[rejected_field]


__all__ = ["FORMATS", "detect", "extract", "extract_pair", "first_human_turn", "first_user_turn", "is_transcript",
           "last_assistant_turn", "message_parts", "pair_format", "resolve", "turns"]
