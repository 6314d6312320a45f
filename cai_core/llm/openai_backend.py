"""An OpenAI-compatible backend (the OpenAI API, a vLLM server, any compatible endpoint).

Requests of one call run concurrently (bounded by `max_concurrency`) on the
async client of the `openai` SDK, which retries 429/5xx with backoff and
honours Retry-After. It reads OPENAI_BASE_URL / OPENAI_API_KEY when not given.
"""
from __future__ import annotations

import asyncio
import os
from typing import Sequence

from cai_core.errors import CaiError
from cai_core.llm.base import Message, Sampling

_MISSING_LOGPROB = -100.0  # a choice absent from top_logprobs: far less likely than any listed one


class OpenAIChatModel:
    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None,
                 timeout_s: float = 60.0, max_concurrency: int = 16, max_retries: int = 4):
        import openai

        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not api_key:
            if base_url is None:
                raise CaiError("no API key for the teacher model: set OPENAI_API_KEY (or teacher.api_key_env), "
                               "or point teacher.base_url / OPENAI_BASE_URL at a server that needs none")
            api_key = "unused"
        self.name = model
        self._kwargs = dict(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=max_retries)
        self._openai = openai
        self.max_concurrency = max_concurrency

    def _run(self, coros_factory):
        async def main():
            client = self._openai.AsyncOpenAI(**self._kwargs)
            sem = asyncio.Semaphore(self.max_concurrency)

            async def bounded(make):
                async with sem:
                    return await make(client)

            try:
                return await asyncio.gather(*(bounded(m) for m in coros_factory))
            finally:
                await client.close()

        try:
            return asyncio.run(main())
        except self._openai.AuthenticationError as exc:
            raise CaiError(f"teacher endpoint rejected the API key: {exc.message}") from None
        except self._openai.NotFoundError as exc:
            raise CaiError(f"model '{self.name}' not found at {self._kwargs['base_url'] or 'the OpenAI API'}: {exc.message}") from None
        except self._openai.APIConnectionError:
            raise CaiError(f"cannot reach the teacher endpoint {self._kwargs['base_url'] or 'api.openai.com'}") from None

    @staticmethod
    def _params(s: Sampling) -> dict:
        params = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_new_tokens}
        if s.seed is not None:
            params["seed"] = s.seed
        return params

    def chat(self, conversations: Sequence[Sequence[Message]], sampling: Sequence[Sampling]) -> list[str]:
        def make(conv, s):
            async def call(client):
                resp = await client.chat.completions.create(model=self.name, messages=list(conv), **self._params(s))
                return resp.choices[0].message.content or "" if resp.choices else ""
            return call

        return self._run([make(c, s) for c, s in zip(conversations, sampling)])

    def complete(self, prompts: Sequence[str], sampling: Sequence[Sampling]) -> list[str]:
        def make(prompt, s):
            async def call(client):
                resp = await client.completions.create(model=self.name, prompt=prompt, **self._params(s))
                return resp.choices[0].text if resp.choices else ""
            return call

        return self._run([make(p, s) for p, s in zip(prompts, sampling)])

    def choice_logprobs(self, conversations: Sequence[Sequence[Message]], choices: Sequence[str]) -> list[list[float]]:
        """Log-probabilities of each choice as the first token, from the reply's top_logprobs."""
        def make(conv):
            async def call(client):
                resp = await client.chat.completions.create(
                    model=self.name, messages=list(conv), max_tokens=1, temperature=0.0,
                    logprobs=True, top_logprobs=min(20, max(5, len(choices))))
                top = {}
                if resp.choices and resp.choices[0].logprobs and resp.choices[0].logprobs.content:
                    for item in resp.choices[0].logprobs.content[0].top_logprobs:
                        key = item.token.strip().strip("()")
                        top[key] = max(top.get(key, _MISSING_LOGPROB), item.logprob)
                return [top.get(c, _MISSING_LOGPROB) for c in choices]
            return call

        return self._run([make(c) for c in conversations])
