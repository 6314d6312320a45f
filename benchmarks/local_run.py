"""Benchmark: `cai run` on the embedded default config, then the same run id again.

Measures, side by side in one run: the first run's wall time and peak RSS
(the process tree: the CLI and every kfp.local task subprocess), and the rerun
that reuses every completed step. Targets (issue 3): first run <= 300 s on a
2-core machine with peak RSS <= 4 GB; rerun <= 20% of the first run.

    python benchmarks/local_run.py [--out DIR] [--set key=value ...]
    python benchmarks/local_run.py --baseline 25c774b [--rounds 2] [--set ...]

Prints the headline last, as `rerun_to_first_ratio: <x>`.

With `--baseline REF`, the same command runs side by side with the code of git REF
(checked out in a temporary worktree and put first on PYTHONPATH, so the installed
dependencies are shared): warm model cache, alternating REF / current for `--rounds`
rounds, and the headline is `current_to_baseline_ratio: <x>` (median wall times).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psutil


def measure(cmd: list[str], env: dict) -> tuple[float, float, int]:
    """(wall seconds, peak RSS of the process tree in MB, exit code).

    Runs from a neutral directory: `python -m` puts the working directory first on
    sys.path, which would shadow a baseline's PYTHONPATH with this checkout.
    """
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=tempfile.gettempdir())
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


def baseline_tree(ref: str, work: str) -> str:
    """A directory to put first on PYTHONPATH that imports cai_core, cai_components and cai_pipelines from REF."""
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True).stdout.strip()
    tree = os.path.join(work, "tree")
    subprocess.run(["git", "-C", root, "worktree", "add", "--detach", tree, ref], check=True, capture_output=True)
    shim = os.path.join(work, "shim")
    os.makedirs(shim)
    for package, folder in (("cai_core", "cai_core"), ("cai_components", "components"), ("cai_pipelines", "pipelines")):
        os.symlink(os.path.join(tree, folder), os.path.join(shim, package))
    return shim


def side_by_side(args, env: dict) -> None:
    work = tempfile.mkdtemp(prefix="cai-baseline-")
    shim = baseline_tree(args.baseline, work)
    versions = {args.baseline: dict(env, PYTHONPATH=shim), "current": dict(env)}
    walls: dict[str, list[float]] = {name: [] for name in versions}
    peaks: dict[str, list[float]] = {name: [] for name in versions}
    try:
        for name, version_env in versions.items():  # warm-up: each version builds its own tiny model once
            out = tempfile.mkdtemp(prefix=f"cai-warm-{name}-")
            print(f"warm-up ({name})")
            measure(run_command(out, "warm", args.overrides), version_env)
        for round_no in range(args.rounds):
            for name, version_env in versions.items():
                out = tempfile.mkdtemp(prefix=f"cai-{name}-")
                print(f"round {round_no + 1}, {name}:")
                wall, peak, rc = measure(run_command(out, "bench", args.overrides), version_env)
                if rc:
                    sys.exit(f"{name} run failed with exit code {rc}")
                walls[name].append(wall)
                peaks[name].append(peak)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", os.path.join(work, "tree")], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    for name in versions:
        print(f"{name}: wall_s {', '.join(f'{w:.1f}' for w in walls[name])} (median {statistics.median(walls[name]):.1f}), "
              f"peak_rss_mb {max(peaks[name]):.0f}")
    ratio = statistics.median(walls["current"]) / statistics.median(walls[args.baseline])
    print(f"current_to_baseline_ratio: {ratio:.3f}  (target <= 1.10)")


def run_command(out: str, run_id: str, overrides: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "cai_core.cli", "run", "--run-id", run_id, "--output-dir", out]
    for item in overrides:
        cmd += ["--set", item]
    return cmd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output directory (default: a temporary one)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--keep-cache", action="store_true",
                        help="reuse the tiny-model cache in CAI_CACHE_DIR (default: a fresh cache, so the build is timed)")
    parser.add_argument("--baseline", default=None, metavar="GIT_REF",
                        help="time the same run with the code of this git ref, side by side (warm caches)")
    parser.add_argument("--rounds", type=int, default=2, help="with --baseline: alternating runs per version")
    args = parser.parse_args()
    out = os.path.abspath(args.out) if args.out else tempfile.mkdtemp(prefix="cai-bench-")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    if not args.keep_cache:
        env["CAI_CACHE_DIR"] = tempfile.mkdtemp(prefix="cai-cache-")
    if args.baseline:
        return side_by_side(args, env)
    cmd = run_command(out, "bench", args.overrides)
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
