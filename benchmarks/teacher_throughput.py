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

``--mode ceiling`` (issue 17): limits nobody told the client. Against the
simulated server with hidden limits (no x-ratelimit-* headers, 429 + Retry-After when full, 3% 500s), for
several latency ranges and ceilings of 5, 20 and 100 req/s, side by side: ours unaided (no rpm/tpm), ours
told the limits, and a plain openai SDK asyncio.gather loop with a semaphore; then a SIGTERM-and-rerun
check on the journal. Prints the headline last, as `ceiling_ratio_min: <x>`.
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

# ------------------------------------------------------------------ --mode ceiling (issue 17)

CEIL_LATENCIES = ((0.05, 0.2), (0.3, 1.5), (0.5, 3.0))
CEILINGS = (5, 20, 100)
CEIL_ERROR_RATE = 0.03
CEIL_BURST_S = 1.0  # the hidden bucket holds one second's worth: a rate, not a minute's allowance at once
CEIL_MAX_TOKENS = 32
GATHER_CONCURRENCY = 64
CLIENTS = ("unaided", "told", "gather")
LABELS = {"unaided": "ours unaided", "told": "ours told the limits", "gather": f"openai gather (sem {GATHER_CONCURRENCY})"}


def ceil_convs(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"Critique answer {i} against principle {i % 17}, briefly."}] for i in range(n)]


def ceil_sim(lat: tuple[float, float], ceiling: int, seed: int) -> SimConfig:
    """The server of a case: a hidden rate limit of `ceiling` req/s (no x-ratelimit-* headers, 429 + Retry-After
    when full, refused requests counted), `lat` latency, 3% 500s after admission."""
    return SimConfig(latency_s=lat, rpm=ceiling * 60, burst_s=CEIL_BURST_S, ratelimit_headers=False,
                     error_rate=CEIL_ERROR_RATE, models=(MODEL,), seed=seed)


def ceil_ideal_s(n: int, ceiling: int, lat: tuple[float, float]) -> float:
    """Least wall time the hidden limit allows: every request admitted once (and the 3% that fail once more),
    the bucket's second's worth at once, the rest at the ceiling, the last one answered a minimum latency later."""
    admissions = n / (1.0 - CEIL_ERROR_RATE)
    return max(0.0, (admissions - ceiling * CEIL_BURST_S) / ceiling) + lat[0]


def ceil_worker(kind: str, base_url: str, n: int, ceiling: int, journal: str | None) -> int:
    """One client on one case, in its own process; prints one JSON line (wall time, ok, the client's state)."""
    import json

    import openai

    convs = ceil_convs(n)
    out: dict = {}
    if kind == "gather":
        async def main() -> int:
            client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=6, timeout=60)
            sem = asyncio.Semaphore(GATHER_CONCURRENCY)

            async def one(c) -> bool:
                async with sem:
                    try:
                        await client.chat.completions.create(model=MODEL, messages=c, max_tokens=CEIL_MAX_TOKENS)
                        return True
                    except openai.APIError:
                        return False

            try:
                return sum(await asyncio.gather(*(one(c) for c in convs)))
            finally:
                await client.close()

        t0 = time.perf_counter()
        out["ok"] = asyncio.run(main())
        out["wall"] = time.perf_counter() - t0
    else:
        from cai_core.llm.journal import Journal

        given = dict(rpm=ceiling * 60, burst_s=CEIL_BURST_S) if kind == "told" else {}
        cfg = ClientConfig(base_url=base_url, model=MODEL, progress_every_s=5.0, shutdown_grace_s=30.0, **given)
        client = LLMClient(cfg, Journal(journal, flush_s=2.0) if journal else None, api_key="sk-bench")
        reqs = [chat_request(MODEL, c, max_tokens=CEIL_MAX_TOKENS) for c in convs]
        t0 = time.perf_counter()
        res = client.run(reqs, kind)
        out["wall"] = time.perf_counter() - t0
        w = client.window()
        out.update(ok=sum(r.ok for r in res), status=client.rate_status(), window=w.size, cuts=w.cuts,
                   rate_cuts=w.rate_cuts, latency_cuts=w.latency_cuts)
    print(json.dumps(out), flush=True)
    return 0


def _start_worker(kind: str, base_url: str, n: int, ceiling: int, journal: str | None = None,
                  quiet: bool = True) -> "subprocess.Popen":
    import subprocess

    cmd = [sys.executable, os.path.abspath(__file__), "--mode", "ceiling", "--worker", kind, base_url, str(n),
           str(ceiling)] + ([journal] if journal else [])
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL if quiet else None, text=True)


def _result(proc) -> dict:
    import json

    out, _ = proc.communicate(timeout=900)
    lines = [x for x in (out or "").splitlines() if x.startswith("{")]
    return json.loads(lines[-1]) if lines else {"wall": float("nan"), "ok": 0, "exit": proc.returncode}


def ceil_case(lat, ceiling: int, seconds: float, parallel: bool, seed: int) -> dict:
    """The three clients on one case (each with its own server: at once with `parallel`)."""
    n = max(60, int(round(ceiling * seconds)))
    sims = {k: SimServer(ceil_sim(lat, ceiling, seed + i), process=True).start() for i, k in enumerate(CLIENTS)}
    try:
        results = {}
        if parallel:
            procs = {k: _start_worker(k, sims[k].base_url, n, ceiling) for k in CLIENTS}
            results = {k: _result(p) for k, p in procs.items()}
        else:
            for k in CLIENTS:
                results[k] = _result(_start_worker(k, sims[k].base_url, n, ceiling))
        for k in CLIENTS:
            st = sims[k].stats()
            span = (st["last_admitted_t"] or 0.0) - (st["first_admitted_t"] or 0.0)
            results[k].update(requests=st["requests"], rate_limited=st["rate_limited"], retried_gt2=st["retried_gt2"],
                              duplicates=st["duplicates"], distinct=st["distinct"], admitted=st["admitted"],
                              span=span)
    finally:
        for sim in sims.values():
            sim.stop()
    ideal = ceil_ideal_s(n, ceiling, lat)
    for r in results.values():
        # Achieved: what the server admitted per second while the client had work for it (first to last
        # admission), net of the bucket's one burst at the start; over the ceiling.
        r["achieved"] = (r["admitted"] - ceiling * CEIL_BURST_S) / r["span"] if r["span"] > 0 else 0.0
        r["ratio"] = r["achieved"] / ceiling
        r["e2e"] = ideal / r["wall"] * r["ok"] / n if r.get("wall") and r["wall"] == r["wall"] else 0.0
        r["rate"] = r["ok"] / r["wall"] if r.get("wall") else 0.0
        r["gt2_share"] = r["retried_gt2"] / n
    return {"lat": lat, "ceiling": ceiling, "n": n, "ideal": ideal, "results": results}


def ceil_sigterm(n: int = 400, ceiling: int = 20, lat=(0.3, 1.5)) -> dict:
    """Ours unaided with a journal: SIGTERM at ~50% served, then the same command again; duplicates served."""
    import signal
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, SimServer(ceil_sim(lat, ceiling, 99), process=True) as sim:
        journal = os.path.join(tmp, "journal")
        proc = _start_worker("unaided", sim.base_url, n, ceiling, journal)
        while proc.poll() is None and sim.stats()["served_total"] < n // 2:
            time.sleep(0.05)
        at_signal = sim.stats()["served_total"]
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
        by_exit = sim.stats()["served_total"]
        rerun = _result(_start_worker("unaided", sim.base_url, n, ceiling, journal))
        st = sim.stats()
    return {"n": n, "at_signal": at_signal, "by_exit": by_exit, "exit": proc.returncode, "rerun_ok": rerun["ok"],
            "duplicates": st["duplicates"], "distinct": st["distinct"]}


def ceiling_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="teacher_throughput.py --mode ceiling", description="hidden limits (issue 17)")
    ap.add_argument("--seconds", type=float, default=20.0, help="work per case, in seconds at the ceiling")
    ap.add_argument("--ceilings", default=",".join(map(str, CEILINGS)))
    ap.add_argument("--latencies", default=",".join(f"{a:g}-{b:g}" for a, b in CEIL_LATENCIES))
    ap.add_argument("--sequential", action="store_true", help="the three clients one after another (slower)")
    ap.add_argument("--skip-sigterm", action="store_true")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        kind, base_url, n, ceiling = args.worker[:4]
        return ceil_worker(kind, base_url, int(n), int(ceiling), args.worker[4] if len(args.worker) > 4 else None)
    ceilings = [int(x) for x in args.ceilings.split(",")]
    lats = [tuple(float(v) for v in x.split("-")) for x in args.latencies.split(",")]
    print(f"hidden limits: a token bucket of <ceiling> req/s holding {CEIL_BURST_S:g} s (no x-ratelimit-* headers; "
          f"429 + Retry-After when empty, refused requests counted), {100 * CEIL_ERROR_RATE:g}% 500s; "
          f"{args.seconds:g} s of work per case; clients {'one after another' if args.sequential else 'at once'}, "
          f"each with its own server process")
    print("of the ceiling = requests the server admitted per second from the first admission to the last (net of "
          "its bucket's one-second burst) / the ceiling; end to end = the least time the limit allows (one minimum "
          "latency after the last admission) / wall time x share ok; retried>2 = requests sent more than 3 times")
    t_all = time.perf_counter()
    cases = []
    for lat in lats:
        for c in ceilings:
            case = ceil_case(lat, c, args.seconds, not args.sequential, seed=len(cases) * 10)
            cases.append(case)
            print(f"latency {lat[0]:g}-{lat[1]:g} s, ceiling {c} req/s: {case['n']} requests, least time "
                  f"{case['ideal']:.1f} s")
            for k in CLIENTS:
                r = case["results"][k]
                extra = f"; {r['status']}" if "status" in r else ""
                print(f"  {LABELS[k]:<22} {r['achieved']:6.1f} req/s admitted = {r['ratio']:.3f} of the ceiling; "
                      f"end to end {r['rate']:.1f} ok/s = {r['e2e']:.3f} of the least time; ok {r['ok']}/{case['n']}; "
                      f"retried>2 {100 * r['gt2_share']:.2f}%; 429s {r['rate_limited']} of {r['requests']} sent"
                      f"{extra}", flush=True)
    print(f"(cases took {time.perf_counter() - t_all:.0f} s)")
    sig = None
    if not args.skip_sigterm:
        sig = ceil_sigterm()
        print(f"SIGTERM at {sig['at_signal']}/{sig['n']} served (drained to {sig['by_exit']}, exit {sig['exit']}), "
              f"then a rerun: {sig['rerun_ok']}/{sig['n']} ok, {sig['distinct']} distinct requests served, "
              f"duplicate paid requests {sig['duplicates']}")
    table = {k: [case["results"][k] for case in cases] for k in CLIENTS}
    worst = {k: min(r["ratio"] for r in rs) for k, rs in table.items()}
    worst_e2e = {k: min(r["e2e"] for r in rs) for k, rs in table.items()}
    gt2 = {k: max(r["gt2_share"] for r in rs) for k, rs in table.items()}
    met = worst["unaided"] >= 0.9 and gt2["unaided"] < 0.01 and (sig is None or sig["duplicates"] == 0)
    print(f"worst case of {len(cases)}: " + "; ".join(f"{LABELS[k]} {worst[k]:.3f} (retried>2 at most "
                                                          f"{100 * gt2[k]:.2f}%)" for k in CLIENTS))
    print(f"end to end, worst case: " + "; ".join(f"{LABELS[k]} {worst_e2e[k]:.3f}" for k in CLIENTS))
    print(f"target (unaided >= 0.9 of the ceiling everywhere, < 1% retried > 2 times, 0 duplicates): "
          f"{'met' if met else 'MISSED'}")
    if sig is not None:
        print(f"duplicates_after_sigterm: {sig['duplicates']}")
    print(f"retried_gt2_share_max: {gt2['unaided']:.4f}")
    print(f"ceiling_ratio_min: {worst['unaided']:.3f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("limits", "ceiling"), default="limits",
                    help="limits: the issue-5 workload with the limits given; ceiling: hidden limits (issue 17)")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--scale", type=float, default=5.0,
                    help="time scale (1 = real time); at 5x the peers' SDK clients are not CPU-bound on 2 cores")
    ap.add_argument("--seq-n", type=int, default=100, help="requests for the sequential loop")
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--free-rejections", action="store_true",
                    help="the server does not count refused (429) requests against RPM (kinder to clients that hammer it)")
    ap.add_argument("--peer-budget", type=float, default=3.0,
                    help="a peer gets this many times the ceiling's time to finish (then its unfinished requests count as such)")
    args, rest = ap.parse_known_args()
    if args.mode == "ceiling":
        return ceiling_main(rest)
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
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
