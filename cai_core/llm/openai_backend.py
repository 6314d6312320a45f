"""`ChatModel` over an OpenAI-compatible endpoint (the OpenAI API, a vLLM server, any compatible one).

Every call goes through `cai_core.llm.client.LLMClient`: bounded concurrency, RPM/TPM
buckets, retries with backoff and Retry-After, an error budget, the request journal
(so a rerun pays for nothing twice), progress lines and, with ``batch: true``, the
OpenAI Batch API. The endpoint comes from the config, else OPENAI_BASE_URL, else the
OpenAI API; the key from the variable named by ``api_key_env``, else OPENAI_API_KEY.

A request that cannot be processed (context too long, no choices, malformed reply,
retries exhausted, ...) does not crash the call: its slot holds an empty
`FailedText` (a ``str``) or a `FailedScores` (a ``list``) whose ``failure`` attribute is
a `Failure` (status, reason); stages read it with ``failure_of(x)`` and mark the row.
Problems with the endpoint itself (key, URL, model, quota) and a blown error budget
raise a `TeacherError` (a `CaiError`) with one message naming the cause.
"""
from __future__ import annotations

from typing import Any, Sequence

from cai_core.llm.base import Failure, Message, Sampling
from cai_core.llm.client import ClientConfig, LLMClient, Result, chat_request, client_config_from, completion_request
from cai_core.llm.journal import Journal

_MISSING_LOGPROB = -100.0  # a choice absent from top_logprobs: far less likely than any listed one


class FailedText(str):
    """An empty reply standing for a request that failed; ``failure = Failure(status, reason)``."""

    failure: Failure

    def __new__(cls, status: str, reason: str) -> "FailedText":
        obj = super().__new__(cls, "")
        obj.failure = Failure(status, reason)
        return obj


class FailedScores(list):
    """Neutral scores standing for a request that failed; ``failure = Failure(status, reason)``."""

    def __init__(self, n: int, status: str, reason: str):
        super().__init__([0.0] * n)
        self.failure = Failure(status, reason)


class OpenAIChatModel:
    """The ChatModel protocol over `LLMClient`.

    ``OpenAIChatModel(ClientConfig(...), journal="runs/x/journal")`` or, as before,
    ``OpenAIChatModel("gpt-4o-mini", base_url=..., api_key=..., timeout_s=..., max_concurrency=...)``.
    `journal` is a storage prefix (local or s3://) or a `Journal`; None keeps no journal.
    """

    remote = True  # stages send whole stages at once to a remote model (concurrency, batch mode)

    def __init__(self, model: str | ClientConfig | None = None, base_url: str | None = None, api_key: str | None = None,
                 timeout_s: float | None = None, max_concurrency: int | None = None, max_retries: int | None = None,
                 *, config: ClientConfig | None = None, journal: str | Journal | None = None,
                 storage_cfg: Any = None, desc: str = "teacher"):
        base = model if isinstance(model, ClientConfig) else config
        self.cfg = client_config_from(base or ClientConfig(), model=model if isinstance(model, str) else None,
                                      base_url=base_url, timeout_s=timeout_s, max_concurrency=max_concurrency,
                                      max_retries=max_retries)
        self.name = self.cfg.model
        if isinstance(journal, Journal) or journal is None:
            self.journal = journal
        else:
            self.journal = Journal(str(journal), flush_s=self.cfg.journal_flush_s, storage_cfg=storage_cfg)
        self.client = LLMClient(self.cfg, self.journal, api_key=api_key)
        self.desc = desc

    @property
    def summary(self):
        """What all calls so far did (a `RunSummary`: counts by status, tokens, cost)."""
        return self.client.summary

    @staticmethod
    def _params(s: Sampling) -> dict:
        return {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_new_tokens, "seed": s.seed}

    @staticmethod
    def _text(r: Result) -> str:
        return r.text if r.ok else FailedText(r.status, r.reason)

    def chat(self, conversations: Sequence[Sequence[Message]], sampling: Sequence[Sampling]) -> list[str]:
        if len(conversations) != len(sampling):
            raise ValueError("one Sampling per conversation")
        reqs = [chat_request(self.name, list(c), **self._params(s)) for c, s in zip(conversations, sampling)]
        return [self._text(r) for r in self.client.run(reqs, f"{self.desc} chat")]

    def complete(self, prompts: Sequence[str], sampling: Sequence[Sampling]) -> list[str]:
        if len(prompts) != len(sampling):
            raise ValueError("one Sampling per prompt")
        reqs = [completion_request(self.name, p, **self._params(s)) for p, s in zip(prompts, sampling)]
        return [self._text(r) for r in self.client.run(reqs, f"{self.desc} completions")]

    def choice_logprobs(self, conversations: Sequence[Sequence[Message]], choices: Sequence[str]) -> list[list[float]]:
        """Log-probabilities of each choice as the first token, from the reply's top_logprobs."""
        k = min(20, max(5, len(choices)))
        reqs = [chat_request(self.name, list(c), max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=k)
                for c in conversations]
        out: list[list[float]] = []
        for r in self.client.run(reqs, f"{self.desc} logprobs"):
            if not r.ok:
                out.append(FailedScores(len(choices), r.status, r.reason))
                continue
            if not r.top:
                out.append(FailedScores(len(choices), "no_logprobs",
                                        "the endpoint returned no top_logprobs (use judge mode: letter)"))
                continue
            top: dict[str, float] = {}
            for token, logprob in r.top:
                key = str(token).strip().strip("()")
                top[key] = max(top.get(key, _MISSING_LOGPROB), logprob)
            out.append([top.get(c, _MISSING_LOGPROB) for c in choices])
        return out

    def close(self) -> None:
        """Flush the request journal (a second close flushes nothing new)."""
        if self.journal is not None:
            self.journal.flush()


__all__ = ["FailedScores", "FailedText", "OpenAIChatModel"]
