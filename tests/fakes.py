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


class RecordingChatModel:
    """A stand-in that keeps every request whole: `sent` holds (method, conversation or prompt) in call order.

    `reply(conversation_or_prompt)` answers chat/complete requests (it sees the whole conversation, not only
    the last message); `logprobs(conversation)` answers choice_logprobs. Tests assert on `sent`, so what a
    stage shows the model (every message, every role, in order) is checked, not only what it does with replies.
    """

    name = "recording-fake"
    remote = False

    def __init__(self, reply: Callable | None = None, logprobs: Callable | None = None):
        self.reply = reply or (lambda conv: "ok")
        self.logprobs = logprobs or (lambda conv: [0.0, 0.0])
        self.sent: list[tuple[str, object]] = []
        self.sampling: list[Sampling] = []

    def chat(self, conversations, sampling) -> list[str]:
        assert len(conversations) == len(sampling)
        out = []
        for conv, s in zip(conversations, sampling):
            conv = [dict(m) for m in conv]  # a copy: a later mutation by the caller must not rewrite history
            self.sent.append(("chat", conv))
            self.sampling.append(s)
            out.append(self.reply(conv))
        return out

    def complete(self, prompts, sampling) -> list[str]:
        assert len(prompts) == len(sampling)
        out = []
        for prompt, s in zip(prompts, sampling):
            self.sent.append(("complete", prompt))
            self.sampling.append(s)
            out.append(self.reply(prompt))
        return out

    def choice_logprobs(self, conversations, choices):
        out = []
        for conv in conversations:
            conv = [dict(m) for m in conv]
            self.sent.append(("logprobs", conv))
            out.append(list(self.logprobs(conv))[: len(choices)])
        return out

    def close(self) -> None:
        pass
