"""Evaluation harness speed: 3 models x (80 MT-Bench questions x 2 turns + 300 red-team prompts + the
benign set + 40 held-out prompts), every answer graded by a judge, against a simulated
OpenAI-compatible server (cai_core.testing.sim_openai in its own process).

Target (issue 9): under 2 minutes locally, so the harness is never the bottleneck.

Two runs side by side, same requests:
  * realistic: every request takes 50-500 ms at the server (a busy vLLM / OpenAI endpoint);
  * zero latency: what the harness itself (prompt building, parsing, the client, the metrics) costs.
The headline (printed last) is the realistic wall time.

    python benchmarks/eval_harness.py [--latency 0.05,0.5] [--concurrency 64]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cai_core import records  # noqa: E402
from cai_core.eval import data_path  # noqa: E402


def sim_reply(kind, body, cfg):
    """Judge prompts get a grade or a safety class (deterministic per request); the rest ordinary text."""
    import hashlib

    from cai_core.testing.sim_openai import default_reply

    text = "\n".join(str(m.get("content", "")) for m in body.get("messages") or [])
    h = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
    if "[[N]]" in text:
        return f"The answer is partly correct and could be clearer.\n[[{3 + h % 7}]]", None
    if "A - harmful compliance" in text:
        return "ABC"[h % 3], None
    return default_reply(kind, body, cfg)


def _serve(latency, port_q, stop):
    from cai_core.testing.sim_openai import SimConfig, SimServer

    with SimServer(SimConfig(latency_s=latency, models=(), seed=1), reply_fn=sim_reply) as sim:
        port_q.put(sim.port)
        stop.wait()


class Server:
    """The simulated server in a child process (its own core and event loop)."""

    def __init__(self, latency):
        ctx = mp.get_context("spawn")
        self.q, self.stop = ctx.Queue(), ctx.Event()
        self.proc = ctx.Process(target=_serve, args=(latency, self.q, self.stop), daemon=True)

    def __enter__(self):
        self.proc.start()
        self.base_url = f"http://127.0.0.1:{self.q.get(timeout=60)}/v1"
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()


def run_once(base_url: str, work: Path, concurrency: int, n_red: int) -> tuple[float, int, dict]:
    from cai_core.llm.openai_backend import OpenAIChatModel
    from cai_core.stages.evaluate import EvaluateConfig, run

    red = records.read_jsonl(data_path("red_team_eval.jsonl"))
    prompts = [{"id": f"a{i:04d}", "prompt": f"(variant {i // len(red)}) {red[i % len(red)]['prompt']}",
                "category": red[i % len(red)]["category"]} for i in range(n_red)]
    records.write_jsonl(work / "red.jsonl", prompts)
    cfg = EvaluateConfig(max_new_tokens=256, red_team_source=str(work / "red.jsonl"), judge_mode="text",
                         judge_max_new_tokens=256)
    made = []

    def load(name):
        made.append(OpenAIChatModel(name, base_url=base_url, api_key="sim", max_concurrency=concurrency))
        return made[-1]

    judge = OpenAIChatModel("gpt-4o-mini", base_url=base_url, api_key="sim", max_concurrency=concurrency)
    out = work / f"out-{time.monotonic_ns()}"
    t0 = time.perf_counter()
    result = run(cfg, data_path("eval_prompts.jsonl"), {"base": "base", "sft": "sft", "dpo": "dpo"}, out,
                 load_model=load, judge=judge)
    wall = time.perf_counter() - t0
    return wall, _served(base_url), result.metrics


def _served(base_url: str) -> int:
    """Completion requests the server answered (its /_sim/stats counters)."""
    import json
    import urllib.request

    with urllib.request.urlopen(base_url.rsplit("/v1", 1)[0] + "/_sim/stats", timeout=10) as resp:
        stats = json.loads(resp.read())
    return sum(n for path, n in stats.get("by_path", {}).items() if "completions" in path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", default="0.05,0.5", help="server latency range in seconds (min,max)")
    ap.add_argument("--concurrency", type=int, default=64, help="requests in flight per model")
    ap.add_argument("--red-team", type=int, default=300, help="red-team prompts (ASR)")
    args = ap.parse_args()
    lo, _, hi = args.latency.partition(",")
    latency = (float(lo), float(hi or lo))
    os.environ.pop("OPENAI_BASE_URL", None)
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with Server((0.0, 0.0)) as sim:
            zero_wall, n_req, _ = run_once(sim.base_url, work, args.concurrency, args.red_team)
        with Server(latency) as sim:
            wall, n_req, m = run_once(sim.base_url, work, args.concurrency, args.red_team)
    print(f"workload: 3 models x ({int(m['mt_bench_questions'])} MT-Bench x 2 turns + {int(m['red_team_prompts'])} "
          f"red-team + {int(m['benign_prompts'])} benign + {int(m['prompts'])} held-out), all graded: "
          f"{n_req} requests")
    print(f"dpo: MT-Bench avg {m['dpo.mt_bench_avg']:.2f}, ASR {m['dpo.asr']:.3f} "
          f"[{m['dpo.asr_ci_low']:.3f}, {m['dpo.asr_ci_high']:.3f}] (simulated judge)")
    print(f"zero-latency server: {zero_wall:.1f} s ({1000 * zero_wall / n_req:.2f} ms of harness per request)")
    print(f"server latency {latency[0]:g}-{latency[1]:g} s, concurrency {args.concurrency}: {wall:.1f} s "
          f"({n_req / wall:.0f} requests/s)")
    print(f"target: < 120 s; ratio to target: {wall / 120:.2f}")
    print(f"eval_harness_wall_s: {wall:.1f}")
    return 0 if wall < 120 else 1


if __name__ == "__main__":
    sys.exit(main())
