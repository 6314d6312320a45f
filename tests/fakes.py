"""A deterministic stand-in for a model, for stage unit tests (not a mock of a remote service)."""
from __future__ import annotations

import hashlib
from typing import Callable, Sequence

from cai_core.llm.base import Sampling


def _h(*parts) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16)


class FakeChatModel:
    """Replies are a function of the conversation and the seed; logprobs come from `prefer`."""

    name = "fake"
    remote = False

    def __init__(self, reply: Callable[[str, Sampling], str] | None = None,
                 prefer: Callable[[str, str], float] | None = None):
        self.reply = reply or (lambda text, s: f"answer {_h(text, s.seed) % 1000}. It is fine.")
        self.prefer = prefer  # (first option text, second option text) -> logit of A
        self.calls: list[tuple[str, int]] = []

    def chat(self, conversations: Sequence[Sequence[dict]], sampling: Sequence[Sampling]) -> list[str]:
        assert len(conversations) == len(sampling)
        self.calls.append(("chat", len(conversations)))
        return [self.reply(c[-1]["content"], s) for c, s in zip(conversations, sampling)]

    def complete(self, prompts: Sequence[str], sampling: Sequence[Sampling]) -> list[str]:
        self.calls.append(("complete", len(prompts)))
        return [" " + self.reply(p, s) + "\n\nHuman: next" for p, s in zip(prompts, sampling)]

    def choice_logprobs(self, conversations, choices):
        self.calls.append(("logprobs", len(conversations)))
        out = []
        for conv in conversations:
            text = conv[-1]["content"]
            first = text.split("Option A:\n<<<\n", 1)[1].split("\n>>>", 1)[0]
            second = text.split("Option B:\n<<<\n", 1)[1].split("\n>>>", 1)[0]
            logit = self.prefer(first, second) if self.prefer else 0.0
            out.append([logit, 0.0][: len(choices)])
        return out

    def close(self) -> None:
        pass
