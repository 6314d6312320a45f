"""``python -m cai_core.testing.sim_openai``: run the simulated server standalone."""
from __future__ import annotations

import argparse
import asyncio
import json
import signal

from cai_core.testing.sim_openai.handlers import SimApp, _start
from cai_core.testing.sim_openai.state import SimConfig, SimState

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cai_core.testing.sim_openai",
                                 description="Simulated OpenAI-compatible server (127.0.0.1 only).")
    ap.add_argument("--port", type=int, default=0, help="port (0: a free one; printed on the first line)")
    ap.add_argument("--config-json", default="{}", help="SimConfig fields as JSON (the flags below override)")
    ap.add_argument("--latency", help="min,max seconds, e.g. 0.5,3")
    ap.add_argument("--rpm", type=int)
    ap.add_argument("--tpm", type=int)
    ap.add_argument("--burst-s", type=float)
    ap.add_argument("--hide-limits", action="store_true", help="send no x-ratelimit-* headers")
    ap.add_argument("--error-rate", type=float)
    ap.add_argument("--drop-rate", type=float)
    ap.add_argument("--api-key")
    ap.add_argument("--models", help="comma-separated model names ('' = any)")
    ap.add_argument("--context-length", type=int)
    ap.add_argument("--batch-delay-s", type=float)
    ap.add_argument("--reply", choices=("judge-longer", "judge-shorter", "judge-first"))
    ap.add_argument("--seed", type=int)
    args = ap.parse_args(argv)
    cfg = SimConfig()
    cfg.update(json.loads(args.config_json))
    flags = {"rpm": args.rpm, "tpm": args.tpm, "burst_s": args.burst_s, "error_rate": args.error_rate,
             "drop_rate": args.drop_rate, "api_key": args.api_key, "context_length": args.context_length,
             "batch_delay_s": args.batch_delay_s, "reply": args.reply, "seed": args.seed}
    cfg.update({k: v for k, v in flags.items() if v is not None})
    if args.hide_limits:
        cfg.update({"ratelimit_headers": False})
    if args.latency:
        lo, _, hi = args.latency.partition(",")
        cfg.update({"latency_s": (float(lo), float(hi or lo))})
    if args.models is not None:
        cfg.update({"models": tuple(m for m in args.models.split(",") if m)})

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        server = await _start(SimApp(SimState(cfg)), "127.0.0.1", args.port)
        port = server.sockets[0].getsockname()[1]
        print(f"sim-openai listening on http://127.0.0.1:{port}/v1", flush=True)
        await stop
        server.close()

    try:
        import uvloop  # type: ignore[import-not-found]
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve())
    return 0
