"""The one interface every model backend implements.

Stages talk to models only through `ChatModel`: batched chat generation with
per-request sampling (seeded), raw text completion for base models, and the
log-probabilities of a fixed set of answers (used by the judge and the
local evaluation judges). Messages are OpenAI-style dicts: {"role", "content"}.

A request that could not be processed does not raise: its slot in the returned list
holds a failed-request marker (an empty ``str`` or neutral scores, see
`cai_core.llm.openai_backend`) carrying a `Failure`; `failure_of(reply)` reads it.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple, Protocol, Sequence, TypeVar

Message = dict  # {"role": "system"|"user"|"assistant", "content": str}
T = TypeVar("T")


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int | None = None  # per-request seed: same seed, same text


class Failure(NamedTuple):
    """Why one request failed: a stable status code (context_length, retries_exhausted, ...) and a reason."""

    status: str
    reason: str

    def __str__(self) -> str:
        return f"{self.status}: {self.reason}"


def failure_of(value: Any) -> Failure | None:
    """The `Failure` of a failed-request marker a backend returned in a reply's slot, else None."""
    failure = getattr(value, "failure", None)
    return failure if failure is None or isinstance(failure, Failure) else Failure(*failure)


class ChatModel(Protocol):
    name: str
    #: True for a server or an API (its client pipelines requests): stages send it a whole stage at once.
    remote: bool

    def chat(self, conversations: Sequence[Sequence[Message]], sampling: Sequence[Sampling]) -> list[str]:
        """One assistant reply per conversation (len(sampling) == len(conversations))."""

    def complete(self, prompts: Sequence[str], sampling: Sequence[Sampling]) -> list[str]:
        """Raw continuation of each prompt (base models, few-shot framing)."""

    def choice_logprobs(self, conversations: Sequence[Sequence[Message]], choices: Sequence[str]) -> list[list[float]]:
        """For each conversation, log P(choice | conversation) as the start of the assistant reply, per choice."""

    def close(self) -> None:
        """Release the model (frees memory; stops a vLLM server; flushes a journal). Closing twice is harmless."""


def batches(llm: ChatModel, items: Sequence[T], batch_size: int) -> Iterator[Sequence[T]]:
    """`items` in the slices to send to `llm` per call.

    A server (vLLM, an API) schedules its own batches: it gets every item at once, so its
    client can keep its concurrency (or one Batch API job) full. An in-process model gets
    `batch_size` items per call.
    """
    size = max(1, len(items)) if llm.remote else batch_size
    for start in range(0, len(items), size):
        yield items[start:start + size]


@contextmanager
def opened(model: ChatModel | None) -> Iterator[ChatModel | None]:
    """``with opened(model) as llm:`` uses `model` and closes it after, also on an error (None: nothing to close)."""
    try:
        yield model
    finally:
        if model is not None:
            model.close()
