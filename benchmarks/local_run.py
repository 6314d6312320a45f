"""Benchmark: `cai run` on the embedded default config, then the same run id again.

Measures, side by side in one run: the first run's wall time and peak RSS
(the process tree: the CLI and every kfp.local task subprocess), and the rerun
that reuses every completed step. Targets (issue 3): first run <= 300 s on a
2-core machine with peak RSS <= 4 GB; rerun <= 20% of the first run.

    python benchmarks/local_run.py [--out DIR] [--set key=value ...]

Prints the headline last, as `rerun_to_first_ratio: <x>`.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

import psutil


def measure(cmd: list[str], env: dict) -> tuple[float, float, int]:
    """(wall seconds, peak RSS of the process tree in MB, exit code)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]
    done = threading.Event()

    def sample():
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
                peak[0] = max(peak[0], rss)
            except psutil.Error:
                pass
            time.sleep(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    for line in proc.stdout:
        sys.stdout.write("    " + line)
    proc.wait()
    done.set()
    thread.join()
    return time.monotonic() - start, peak[0] / 2**20, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output directory (default: a temporary one)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--keep-cache", action="store_true",
                        help="reuse the tiny-model cache in CAI_CACHE_DIR (default: a fresh cache, so the build is timed)")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="cai-bench-")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    if not args.keep_cache:
        env["CAI_CACHE_DIR"] = tempfile.mkdtemp(prefix="cai-cache-")
    cmd = [sys.executable, "-m", "cai_core.cli", "run", "--run-id", "bench", "--output-dir", out]
    for item in args.overrides:
        cmd += ["--set", item]
    print(f"first run: {' '.join(cmd)}")
    first_s, first_mb, rc = measure(cmd, env)
    if rc:
        sys.exit(f"first run failed with exit code {rc}")
    print("rerun (same run id):")
    rerun_s, rerun_mb, rc = measure(cmd, env)
    if rc:
        sys.exit(f"rerun failed with exit code {rc}")
    print(f"first_run_s: {first_s:.1f}  (target <= 300)")
    print(f"first_run_peak_rss_mb: {first_mb:.0f}  (target <= 4096)")
    print(f"rerun_s: {rerun_s:.1f}")
    print(f"rerun_peak_rss_mb: {rerun_mb:.0f}")
    print(f"rerun_to_first_ratio: {rerun_s / first_s:.3f}")


if __name__ == "__main__":
    main()
