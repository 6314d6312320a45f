"""Benchmark: client overhead — requests per second on one core against a zero-latency server (issue 5).

The simulated OpenAI server runs in its own process pinned to the second core (no latency, no
limits); this process, the client, is pinned to the first core. N chat requests (default 20,000)
go through `LLMClient` with its journal on (local temp dir, flushed every 5 s), 64 in flight: the
rate is the client's ceiling, which must stay above what a vLLM server can answer (target >= 2,000
requests/s). Side by side on the same core and server: the client with ``transport: sdk`` (every
request through openai.AsyncOpenAI) and a plain openai.AsyncOpenAI + asyncio.gather loop.

    python benchmarks/client_overhead.py [--n 20000]

Prints the headline last, as `requests_per_s: <x>`.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from cai_core.llm.client import ClientConfig, LLMClient, chat_request  # noqa: E402
from cai_core.llm.journal import Journal  # noqa: E402
from cai_core.testing.sim_openai import SimConfig, SimServer  # noqa: E402

MODEL = "sim-model"


def reqs(n: int, tag: str):
    return [chat_request(MODEL, [{"role": "user", "content": f"{tag} request {i}: rate this answer."}], max_tokens=32,
                         temperature=0.0) for i in range(n)]


def ours(sim: SimServer, n: int, transport: str, journal_dir: str | None, tag: str = "") -> tuple[float, float, int]:
    cfg = ClientConfig(base_url=sim.base_url, model=MODEL, max_concurrency=64, progress_every_s=3600,
                       transport=transport)
    client = LLMClient(cfg, Journal(journal_dir) if journal_dir else None, api_key="sk-bench")
    batch = reqs(n, f"{tag}{transport}-{bool(journal_dir)}")
    t0, c0 = time.perf_counter(), time.process_time()
    res = client.run(batch, f"ours ({transport})")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return n / wall, n / cpu, sum(r.ok for r in res)


def sdk_gather(sim: SimServer, n: int) -> tuple[float, float, int]:
    import openai

    async def main() -> int:
        client = openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-bench", max_retries=0)
        sem = asyncio.Semaphore(64)

        async def one(r):
            async with sem:
                await client.chat.completions.create(**r.body)
                return 1

        try:
            return sum(await asyncio.gather(*(one(r) for r in reqs(n, "gather"))))
        finally:
            await client.close()

    t0, c0 = time.perf_counter(), time.process_time()
    ok = asyncio.run(main())
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0), ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--peer-n", type=int, default=2000, help="requests for the slower SDK paths")
    args = ap.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    import openai  # noqa: F401 - imported before timing
    with SimServer(SimConfig(models=(MODEL,)), process=True) as sim, tempfile.TemporaryDirectory() as tmp:
        if len(cores) >= 2:
            os.sched_setaffinity(sim._proc.pid, {cores[1]})
            os.sched_setaffinity(0, {cores[0]})
            print(f"client pinned to core {cores[0]}, server to core {cores[1]} ({len(cores)} cores)")
        else:
            print("one core only: client and server share it (the figure is a lower bound)")
        ours(sim, 2000, "fast", None, tag="warm-up")
        rate, cpu_rate, ok = ours(sim, args.n, "fast", os.path.join(tmp, "journal"))
        print(f"ours (fast transport, journal on): {ok}/{args.n} ok, {rate:.0f} req/s wall; client CPU "
              f"{1e6 / cpu_rate:.0f} us per request = {cpu_rate:.0f} req/s per CPU-second (the wall rate is bounded "
              f"by the server on the other core)")
        rate_nj, _, _ = ours(sim, args.n, "fast", None)
        print(f"ours (fast transport, no journal): {rate_nj:.0f} req/s wall")
        sdk_rate, _, sdk_ok = ours(sim, args.peer_n, "sdk", None)
        print(f"ours (transport: sdk, every request through openai.AsyncOpenAI): {sdk_ok}/{args.peer_n} ok, {sdk_rate:.0f} req/s wall")
        g_rate, g_cpu, g_ok = sdk_gather(sim, args.peer_n)
        print(f"plain openai.AsyncOpenAI + gather: {g_ok}/{args.peer_n} ok, {g_rate:.0f} req/s wall, {g_cpu:.0f} req/s per CPU-second")
        print(f"ours/sdk_gather: {rate / g_rate:.1f}")
        st = sim.stats()
        print(f"server: {st['served_total']} served, {st['duplicates']} duplicates")
    print(f"requests_per_s: {rate:.0f}")
    return 0 if rate >= 2000 else 1


if __name__ == "__main__":
    sys.exit(main())
