"""Benchmark: crash and resume of teacher calls through the request journal (issue 5).

A worker process sends N chat requests (default 3,000; 0.05-0.3 s latency, 32 in flight)
to the simulated OpenAI server through `LLMClient` with a journal flushed every 5 s, and
writes its finished rows. Three runs, side by side, against one server whose counters say
how often each distinct request was served (= paid for):

  * reference: uninterrupted, with its own journal;
  * kill -9 at ~50% of the requests served, then the same command again: the finished rows
    must be identical to the reference's, and the duplicate requests at most the work of the
    last 5 s before the kill (what the server served in that window: the journal's flush period);
  * SIGTERM at ~50%, then the same command again: the worker flushes, lets its requests in flight
    finish (and journals them), exits; the rerun must send zero duplicates.

    python benchmarks/crash_resume.py [--n 3000]

Prints the headline last, as `duplicates_after_sigterm: <n>`.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

MODEL = "gpt-4o-mini"
FLUSH_S = 5.0


def requests(n: int):
    from cai_core.llm.client import chat_request

    return [chat_request(MODEL, [{"role": "user", "content": f"Critique answer {i} against principle {i % 17}."}],
                         max_tokens=64, temperature=0.7, seed=i) for i in range(n)]


def worker(base_url: str, journal: str, out: str, n: int) -> int:
    from cai_core import records
    from cai_core.llm.client import ClientConfig, LLMClient
    from cai_core.llm.journal import Journal

    cfg = ClientConfig(base_url=base_url, model=MODEL, max_concurrency=32, journal_flush_s=FLUSH_S,
                       progress_every_s=5.0, shutdown_grace_s=30.0)
    res = LLMClient(cfg, Journal(journal, flush_s=FLUSH_S), api_key="sk-bench").run(requests(n), "worker")
    records.write_jsonl(out, [{"key": r.key, "status": r.status, "text": r.text} for r in res])
    return 0


def start(base_url: str, journal: str, out: str, n: int) -> subprocess.Popen:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", base_url, journal, out, "--n", str(n)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def rows(path: str) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def interrupted(sim, sig: int, n: int, tmp: str, name: str) -> dict:
    """Run, send `sig` at ~50% served, rerun to completion; served-counter series for the bound."""
    sim.reset()
    journal, out = os.path.join(tmp, f"{name}-journal"), os.path.join(tmp, f"{name}.jsonl")
    proc = start(sim.base_url, journal, out, n)
    series = []  # (time, served_total)
    while True:
        st = sim.stats()
        series.append((time.monotonic(), st["served_total"]))
        if st["served_total"] >= n // 2 or proc.poll() is not None:
            break
        time.sleep(0.05)
    t_sig = time.monotonic()
    served_at_sig = series[-1][1]
    proc.send_signal(sig)
    code = proc.wait(timeout=120)
    after_exit = sim.stats()["served_total"]
    window = [s for t, s in series if t >= t_sig - FLUSH_S]
    last_window = served_at_sig - (window[0] if window else 0)
    t0 = time.monotonic()
    proc2 = start(sim.base_url, journal, out, n)
    code2 = proc2.wait(timeout=600)
    st = sim.stats()
    return {"exit": code, "exit2": code2, "served_at_signal": served_at_sig, "served_by_exit": after_exit,
            "last_window": last_window, "duplicates": st["duplicates"], "distinct": st["distinct"],
            "abandoned": st["abandoned"], "rerun_s": time.monotonic() - t0, "out": out}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--worker", nargs=3, metavar=("BASE_URL", "JOURNAL", "OUT"))
    args = ap.parse_args()
    if args.worker:
        return worker(*args.worker, args.n)

    from cai_core.testing.sim_openai import SimConfig, SimServer

    n = args.n
    with tempfile.TemporaryDirectory() as tmp, SimServer(SimConfig(latency_s=(0.05, 0.3), models=(MODEL,)),
                                                          process=True) as sim:
        t0 = time.monotonic()
        ref_out = os.path.join(tmp, "reference.jsonl")
        code = start(sim.base_url, os.path.join(tmp, "ref-journal"), ref_out, n).wait(timeout=600)
        ref = rows(ref_out)
        print(f"reference: exit {code}, {len(ref)} rows, {sum(r['status'] == 'ok' for r in ref)} ok, "
              f"{time.monotonic() - t0:.1f} s, server duplicates {sim.stats()['duplicates']}")

        k = interrupted(sim, signal.SIGKILL, n, tmp, "kill9")
        same = rows(k["out"]) == ref
        print(f"kill -9 at {100 * k['served_at_signal'] / n:.0f}% ({k['served_at_signal']} served; exit {k['exit']}); "
              f"rerun exit {k['exit2']} in {k['rerun_s']:.1f} s; rows identical to the reference: {same}")
        print(f"kill -9: duplicate requests {k['duplicates']} <= served in the last {FLUSH_S:g} s before the kill "
              f"({k['last_window']}): {k['duplicates'] <= k['last_window']}; replies the dead client never got "
              f"(abandoned, not counted as served): {k['abandoned']}")

        t = interrupted(sim, signal.SIGTERM, n, tmp, "sigterm")
        same_t = rows(t["out"]) == ref
        print(f"SIGTERM at {100 * t['served_at_signal'] / n:.0f}% ({t['served_at_signal']} served; worker drained to "
              f"{t['served_by_exit']} and exited {t['exit']}); rerun exit {t['exit2']} in {t['rerun_s']:.1f} s; "
              f"rows identical to the reference: {same_t}; duplicate requests {t['duplicates']}")
        ok = same and same_t and k["duplicates"] <= k["last_window"] and t["duplicates"] == 0
        print(f"all checks passed: {ok}")
    print(f"duplicates_after_kill9: {k['duplicates']}")
    print(f"duplicates_after_sigterm: {t['duplicates']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
