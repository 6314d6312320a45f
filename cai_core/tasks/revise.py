"""The revise task: the initial answer, the critique request and the revision request.

Each generation of the revise stage is one of three steps (`Step`): ``answer`` the
prompt, ``critique`` the last answer under a critique request, ``revision``: rewrite
it under the revision request. Instruct models get a chat conversation
(`format_input`, rendered with their chat template); base models get a few-shot
transcript (Human/Assistant/Critique...) to continue (`format_transcript`), cut at
the next transcript label when read back (`parse_output`).

The row holds the texts so far: ``prompt``, then ``_last`` (the answer being revised)
and ``_critique`` (the critique of this round).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cai_core.constitution import Constitution, CritiquePair
from cai_core.llm.base import Message

Step = Literal["answer", "critique", "revision"]
# Labels of the base-model transcript; generation is cut at the next label.
_BASE_LABELS = ("Human:", "Assistant:", "Critique request:", "Critique:", "Revision request:", "Revision:", "---")


def format_input(row: dict, pair: CritiquePair | None, stage: Step) -> list[Message]:
    """The conversation for the next generation of an instruct model.

    stage is "answer", "critique" or "revision"; the row holds the texts so far.
    """
    messages = [{"role": "user", "content": row["prompt"]}]
    if stage == "answer":
        return messages
    messages.append({"role": "assistant", "content": row["_last"]})
    messages.append({"role": "user", "content": pair.critique})
    if stage == "critique":
        return messages
    messages.append({"role": "assistant", "content": row["_critique"]})
    messages.append({"role": "user", "content": pair.revision})
    return messages


def format_transcript(row: dict, pair: CritiquePair | None, stage: Step, constitution: Constitution) -> str:
    """A few-shot transcript ending where the base model must continue."""
    shots = []
    for shot in constitution.few_shot:
        shots.append(f"Human: {shot.prompt}\n\nAssistant: {shot.response}\n\n"
                     f"Critique request: {constitution.critique_revision[0].critique}\n\nCritique: {shot.critique}\n\n"
                     f"Revision request: {constitution.critique_revision[0].revision}\n\n"
                     f"Revision: {shot.revision}\n\n---\n\n")
    text = "".join(shots) + f"Human: {row['prompt']}\n\nAssistant:"
    if stage == "answer":
        return text
    text += f" {row['_last']}\n\nCritique request: {pair.critique}\n\nCritique:"
    if stage == "critique":
        return text
    return text + f" {row['_critique']}\n\nRevision request: {pair.revision}\n\nRevision:"


def _cut_at_label(text: str) -> str:
    """Keep a base model's continuation up to the next transcript label."""
    cut = len(text)
    for label in _BASE_LABELS:
        pos = text.find("\n" + label)
        if pos != -1:
            cut = min(cut, pos)
    return text[:cut].strip()


@dataclass(frozen=True)
class Generation:
    """One generated text: ``ok``, or ``empty`` when the model returned nothing (a failed request too)."""

    text: str

    @property
    def status(self) -> str:
        return "ok" if self.text else "empty"


def parse_output(reply: str, model_kind: Literal["instruct", "base"] = "instruct") -> Generation:
    """The text of a reply: stripped; a base model's continuation is cut at the next transcript label."""
    text = reply if isinstance(reply, str) else ""
    return Generation(_cut_at_label(text) if model_kind == "base" else text.strip())


__all__ = ["Generation", "Step", "format_input", "format_transcript", "parse_output"]
