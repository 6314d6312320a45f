"""Benchmark: teacher-call throughput against rate limits, ours vs. the ceiling and vs. peers (issue 5).

Workload: 5,000 chat requests (prompts of 150-350 words, max_tokens 150) against the
simulated OpenAI server (`cai_core.testing.sim_openai`, its own process) limited to
500 RPM and 200k TPM (continuous buckets holding a minute's worth, as OpenAI does) with
0.5-3 s latency; as OpenAI documents, refused requests count against the RPM limit.
The ceiling is what those limits allow: the last request can be admitted
no earlier than max((N - bucket of requests) / RPM, (tokens - bucket of tokens) / TPM), and
finishes one minimal latency later; ratio_to_ceiling = ceiling time / our wall time.

Time is scaled (default 5x) so a run takes minutes, not hours: every duration is divided
by the scale and every per-minute limit multiplied by it (at 5x, 500 RPM / 200k TPM per 60 s become
2,500 RPM / 1M TPM with 12 s buckets, latency 0.1-0.6 s): the same workload, the same ratios.

Side by side, on the same workload and server (reset between runs):
  * ours: `LLMClient` told the account's limits (rpm, tpm, burst_s);
  * distilabel's OpenAILLM (installed only for this benchmark), called as its pipelines do:
    batches of 50 inputs (TextGeneration's default input_batch_size), the SDK's retries (6);
  * plain openai.AsyncOpenAI + asyncio.gather (64 at a time), the SDK's retries (6);
    for both peers, requests that still fail are run again in further passes (at most 5, within
    --peer-budget times the ceiling's time), as a user completing the workload would;
    ours/peer = the peer's seconds per finished request / ours;
  * a plain sequential loop (sync openai client) on the first --seq-n requests (a full
    sequential pass would take hours even scaled): its rate is compared with ours.

    python benchmarks/teacher_throughput.py [--n 5000] [--scale 20] [--skip-peers]

Prints the headline last, as `ratio_to_ceiling: <x>`.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from cai_core.llm.client import ClientConfig, LLMClient, chat_request  # noqa: E402
from cai_core.testing.sim_openai import SimConfig, SimServer, prompt_tokens  # noqa: E402

RPM, TPM, LAT = 500, 200_000, (0.5, 3.0)
MODEL, MAX_TOKENS = "gpt-4o-mini", 150
WORDS = ("policy model answer helpful harmless careful explain reason principle response critique revise "
         "the a of to and in that is for it with as on be by this are or from at an was have not").split()


def workload(n: int, seed: int = 0) -> list[list[dict]]:
    rng = random.Random(seed)
    convs = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(150, 350))]
        text = f"Request {i}: " + " ".join(words) + "."
        convs.append([{"role": "system", "content": "You are a careful judge."}, {"role": "user", "content": text}])
    return convs


def ceiling_s(convs: list[list[dict]], scale: float) -> tuple[float, int]:
    """Least wall time the server's buckets allow for the whole workload (seconds, scaled)."""
    tokens = sum(prompt_tokens({"messages": c}) + MAX_TOKENS for c in convs)
    r_rate, t_rate = RPM * scale / 60.0, TPM * scale / 60.0
    r_cap, t_cap = RPM, TPM  # a minute's worth (burst_s = 60 / scale in scaled seconds)
    admit_last = max(0.0, (len(convs) - r_cap) / r_rate, (tokens - t_cap) / t_rate)
    return admit_last + LAT[0] / scale, tokens


def run_ours(sim: SimServer, convs, scale: float) -> tuple[float, dict]:
    cfg = ClientConfig(base_url=sim.base_url, model=MODEL, rpm=int(RPM * scale), tpm=int(TPM * scale),
                       burst_s=60.0 / scale, max_concurrency=256, timeout_s=60.0, progress_every_s=10.0,
                       backoff_base_s=0.5 / scale)
    client = LLMClient(cfg, api_key="sk-bench")
    reqs = [chat_request(MODEL, c, max_tokens=MAX_TOKENS, temperature=0.7) for c in convs]
    import openai  # noqa: F401 - imported before timing, as for the peers: a one-off cost that does not scale
    t0 = time.perf_counter()
    res = client.run(reqs, "ours")
    wall = time.perf_counter() - t0
    s = client.last_summary
    return wall, {"ok": sum(r.ok for r in res), "retried_gt2": s.retried_gt2, "rate_limited": s.rate_limited}


def run_distilabel(sim: SimServer, convs, budget_s: float, batch: int = 50, max_passes: int = 5) -> tuple[float, dict] | None:
    """distilabel's OpenAILLM as its pipelines call it: batches of 50; batches that fail are run again
    (a later pass) until every request has a result, as a user completing the workload would."""
    try:
        import logging
        import warnings
        warnings.filterwarnings("ignore")
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # tasks of failed batches, abandoned by distilabel
        from distilabel.models.llms import OpenAILLM
    except ImportError:
        print("distilabel is not installed: skipped (pip install distilabel, without touching torch)")
        return None
    llm = OpenAILLM(model=MODEL, base_url=sim.base_url, api_key="sk-bench", max_retries=6, timeout=120)
    llm.load()
    pending, first_failed, passes = list(convs), None, 0
    t0 = time.perf_counter()
    while pending and passes < max_passes and time.perf_counter() - t0 < budget_s:
        passes += 1
        failed = []
        for i in range(0, len(pending), batch):
            chunk = pending[i:i + batch]
            if time.perf_counter() - t0 >= budget_s:  # out of time: the rest stays unfinished
                failed += pending[i:]
                break
            try:
                out = llm.generate(inputs=chunk, num_generations=1, max_new_tokens=MAX_TOKENS, temperature=0.7)
                failed += [c for c, o in zip(chunk, out) if not (o and o.get("generations") and o["generations"][0] is not None)]
            except Exception:  # noqa: BLE001 - one failed request fails the whole batch in distilabel
                failed += chunk
        first_failed = len(failed) if first_failed is None else first_failed
        pending = failed
    wall = time.perf_counter() - t0
    try:
        llm.event_loop.run_until_complete(llm._aclient.close())
    except Exception:  # noqa: BLE001 - cleanup only
        pass
    return wall, {"ok": len(convs) - len(pending), "first_pass_failed": first_failed, "passes": passes}


def run_gather(sim: SimServer, convs, budget_s: float, concurrency: int = 64, max_passes: int = 5) -> tuple[float, dict]:
    """openai.AsyncOpenAI + asyncio.gather (64 at a time, the SDK's 6 retries); failures run again in a later pass."""
    import openai

    async def one_pass(client, todo, seconds):
        sem = asyncio.Semaphore(concurrency)
        ok = [False] * len(todo)

        async def one(i, c):
            async with sem:
                try:
                    await client.chat.completions.create(model=MODEL, messages=c, max_tokens=MAX_TOKENS, temperature=0.7)
                    ok[i] = True
                except openai.APIError:
                    pass

        try:
            await asyncio.wait_for(asyncio.gather(*(one(i, c) for i, c in enumerate(todo))), max(0.0, seconds))
        except asyncio.TimeoutError:
            pass  # out of time: what has not finished stays unfinished
        return ok

    async def main() -> dict:
        client = openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-bench", max_retries=6, timeout=120)
        pending, first_failed, passes = list(convs), None, 0
        try:
            while pending and passes < max_passes and time.perf_counter() - t0 < budget_s:
                passes += 1
                ok = await one_pass(client, pending, budget_s - (time.perf_counter() - t0))
                pending = [c for c, good in zip(pending, ok) if not good]
                first_failed = len(pending) if first_failed is None else first_failed
        finally:
            await client.close()
        return {"ok": len(convs) - len(pending), "first_pass_failed": first_failed, "passes": passes}

    t0 = time.perf_counter()
    stats = asyncio.run(main())
    return time.perf_counter() - t0, stats


def run_sequential(sim: SimServer, convs) -> tuple[float, dict]:
    import openai

    client = openai.OpenAI(base_url=sim.base_url, api_key="sk-bench", max_retries=6, timeout=120)
    ok = 0
    t0 = time.perf_counter()
    for c in convs:
        try:
            client.chat.completions.create(model=MODEL, messages=c, max_tokens=MAX_TOKENS, temperature=0.7)
            ok += 1
        except openai.APIError:
            pass
    return time.perf_counter() - t0, {"ok": ok}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--scale", type=float, default=5.0,
                    help="time scale (1 = real time); at 5x the peers' SDK clients are not CPU-bound on 2 cores")
    ap.add_argument("--seq-n", type=int, default=100, help="requests for the sequential loop")
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--free-rejections", action="store_true",
                    help="the server does not count refused (429) requests against RPM (kinder to clients that hammer it)")
    ap.add_argument("--peer-budget", type=float, default=3.0,
                    help="a peer gets this many times the ceiling's time to finish (then its unfinished requests count as such)")
    args = ap.parse_args()
    scale = args.scale
    convs = workload(args.n)
    ceiling, tokens = ceiling_s(convs, scale)
    sim_cfg = SimConfig(latency_s=(LAT[0] / scale, LAT[1] / scale), rpm=int(RPM * scale), tpm=int(TPM * scale),
                        burst_s=60.0 / scale, models=(MODEL,), seed=1, charge_rejected=not args.free_rejections)
    print(f"workload: {args.n} chat requests, {tokens} tokens charged (prompt + max_tokens), "
          f"{tokens / args.n:.0f} per request; limits {RPM} RPM / {TPM} TPM, latency {LAT[0]}-{LAT[1]} s")
    print(f"time scaled {scale:g}x: server and clients see {int(RPM * scale)} RPM / {int(TPM * scale)} TPM with "
          f"{60 / scale:g} s buckets and {LAT[0] / scale:.3f}-{LAT[1] / scale:.3f} s latency; refused requests "
          f"{'do not count' if args.free_rejections else 'count'} against RPM; ceiling "
          f"{ceiling:.1f} s scaled = {ceiling * scale / 60:.1f} min real")
    rows = []
    with SimServer(sim_cfg, process=True) as sim:
        wall, st = run_ours(sim, convs, scale)
        served = sim.stats()
        ours_rate = st["ok"] / wall
        ratio = ceiling / wall
        print(f"ours: {st['ok']}/{args.n} ok in {wall:.1f} s ({ours_rate:.1f} req/s); ratio to ceiling {ratio:.3f}; "
              f"retried >2x {st['retried_gt2']} ({100 * st['retried_gt2'] / args.n:.2f}%); 429s {served['rate_limited']}; "
              f"server duplicates {served['duplicates']}")
        rows.append(("ours", wall, st["ok"], served))
        if not args.skip_peers:
            budget = args.peer_budget * ceiling
            for name, fn in (("distilabel", lambda: run_distilabel(sim, convs, budget)),
                             ("openai_gather", lambda: run_gather(sim, convs, budget))):
                sim.reset()
                out = fn()
                if out is None:
                    continue
                pwall, pst = out
                pserved = sim.stats()
                left = args.n - pst["ok"]
                print(f"{name}: {pst['ok']}/{args.n} ok in {pwall:.1f} s over {pst['passes']} pass(es) "
                      f"(not finished after the first pass: {pst['first_pass_failed']}; unfinished at the end: {left}"
                      f"{' (time budget ' + format(budget, '.0f') + ' s spent)' if left and pwall >= budget else ''}); ratio to ceiling "
                      f"{ceiling / pwall * pst['ok'] / args.n:.3f}; requests retried >2x {pserved['retried_gt2']} "
                      f"({100 * pserved['retried_gt2'] / args.n:.2f}%); 429s {pserved['rate_limited']}")
                # Time per finished request (the peer's share of unfinished requests is charged at its own pace).
                print(f"ours/{name}: {(pwall / max(1, pst['ok'])) / (wall / st['ok']):.2f} "
                      f"(seconds per finished request, peer / ours)")
            sim.reset()
            seq = convs[:args.seq_n]
            swall, sst = run_sequential(sim, seq)
            srate, orate = sst["ok"] / swall, st["ok"] / wall
            print(f"sequential: {sst['ok']}/{len(seq)} ok in {swall:.1f} s ({srate:.1f} req/s; first {len(seq)} requests "
                  f"only: a full pass would take about {args.n / srate / 60:.0f} min scaled)")
            print(f"ours/sequential: {orate / srate:.2f} (requests per second)")
    print("(process start-up and imports are outside every timing: a one-off cost that time scaling would magnify)")
    print(f"retried_gt2_share: {st['retried_gt2'] / args.n:.4f}")
    print(f"ratio_to_ceiling: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
