"""The one interface every model backend implements.

Stages talk to models only through `ChatModel`: batched chat generation with
per-request sampling (seeded), raw text completion for base models, and the
log-probabilities of a fixed set of answers (used by the judge and the
local evaluation judges). Messages are OpenAI-style dicts: {"role", "content"}.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

Message = dict  # {"role": "system"|"user"|"assistant", "content": str}


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int | None = None  # per-request seed: same seed, same text


class ChatModel(Protocol):
    name: str

    def chat(self, conversations: Sequence[Sequence[Message]], sampling: Sequence[Sampling]) -> list[str]:
        """One assistant reply per conversation (len(sampling) == len(conversations))."""

    def complete(self, prompts: Sequence[str], sampling: Sequence[Sampling]) -> list[str]:
        """Raw continuation of each prompt (base models, few-shot framing)."""

    def choice_logprobs(self, conversations: Sequence[Sequence[Message]], choices: Sequence[str]) -> list[list[float]]:
        """For each conversation, log P(choice | conversation) as the start of the assistant reply, per choice."""
