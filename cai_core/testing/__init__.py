"""Test and benchmark helpers that ship with the package (no test framework needed).

`cai_core.testing.sim_openai` is a simulated OpenAI-compatible HTTP server:
chat completions with logprobs, completions, models, files and batches, with
latency, rate limits, random 5xx and connection drops, and counters of what it
served so tests can assert "no duplicate paid requests".
"""
from __future__ import annotations

__all__ = ["SimConfig", "SimServer", "request_hash", "sim_tokens"]


def __getattr__(name: str):
    # Lazy, so importing another cai_core.testing module does not load the simulated server.
    if name in __all__:
        from cai_core.testing import sim_openai

        return getattr(sim_openai, name)
    raise AttributeError(name)
