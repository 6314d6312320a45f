"""Benchmark: 10 SFT steps and 10 DPO steps of the tiny model on CPU, each timed as a whole stage.

Target (issue 6): each stage, from reading its data to the saved model, in under 60 s on a laptop-class CPU.
The data are the bundled tiny-model dialogues (cai_core/data/tiny_corpus.jsonl): SFT on (prompt, response),
DPO on (prompt, response, another row's response). Both stages run in this process, as `launcher: local`
does; the tiny model is built first (not timed) in the CAI_CACHE_DIR cache.

    python benchmarks/train_steps.py [--steps 10] [--batch 8] [--zero3]

--zero3 also runs both through `torchrun --nproc_per_node 2` with DeepSpeed ZeRO-3 (gloo on CPU), the
PyTorchJob pods' code path (its first run compiles DeepSpeed's CPU op).

Prints per stage: the whole-stage seconds, the training-only seconds and the training tokens/s; the headline
last, as `slowest_stage_to_target_ratio: <x>` (the slower stage's seconds / 60; below 1 meets the target).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 60.0


def _rows():
    corpus = Path(__file__).resolve().parents[1] / "cai_core" / "data" / "tiny_corpus.jsonl"
    return [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()][:96]


def _write(work: Path) -> tuple[Path, Path]:
    from cai_core.records import write_jsonl

    rows = _rows()
    sft_data, pairs = work / "sft.jsonl", work / "pairs.jsonl"
    write_jsonl(sft_data, [{"id": f"r{i}", "prompt": r["prompt"], "response": r["response"]}
                           for i, r in enumerate(rows)])
    write_jsonl(pairs, [{"id": f"p{i}", "prompt": r["prompt"], "chosen": r["response"],
                         "rejected": rows[(i + 7) % len(rows)]["response"], "principle": "Be helpful.",
                         "confidence": 0.9} for i, r in enumerate(rows)])
    return sft_data, pairs


def _in_process(steps: int, batch: int, work: Path) -> dict[str, tuple[float, float, float]]:
    from cai_core.stages import dpo, sft

    sft_data, pairs = _write(work)
    out = {}
    start = time.perf_counter()
    r = sft.run(sft.SFTStageConfig(max_steps=steps, per_device_batch_size=batch, learning_rate=1e-3,
                                   max_length=256), sft_data, "tiny", work / "sft")
    out["sft"] = (time.perf_counter() - start, r.metrics["train_runtime_s"], r.metrics.get("tokens_per_s", 0.0))
    start = time.perf_counter()
    r = dpo.run(dpo.DPOStageConfig(max_steps=steps, per_device_batch_size=batch, learning_rate=1e-4,
                                   max_length=256), pairs, str(work / "sft" / "model"), work / "dpo")
    out["dpo"] = (time.perf_counter() - start, r.metrics["train_runtime_s"], r.metrics.get("tokens_per_s", 0.0))
    return out


def _zero3(steps: int, batch: int, work: Path) -> dict[str, tuple[float, float, float]]:
    sft_data, pairs = _write(work)
    out = {}
    for stage, data, model in (("sft", sft_data, "tiny"), ("dpo", pairs, str(work / "z3-sft" / "model"))):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               "-m", "cai_core.training", stage, "--data", str(data), "--model", model,
               "--out", str(work / f"z3-{stage}"), "--set", f"{stage}.deepspeed=zero3",
               "--set", f"{stage}.max_steps={steps}", "--set", f"{stage}.per_device_batch_size={max(1, batch // 2)}",
               "--set", f"{stage}.max_length=256"]
        env = dict(os.environ, OMP_NUM_THREADS="1", CAI_TRAIN_WORKDIR=str(work / "pods"))
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"zero3 {stage} failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
        text = proc.stdout
        summary = json.loads(text[text.index('{\n "details"'):])
        m = summary["metrics"]
        out[f"zero3_{stage}"] = (time.perf_counter() - start, m["train_runtime_s"], m.get("tokens_per_s", 0.0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8, help="rows (sft) or pairs (dpo) per step")
    parser.add_argument("--zero3", action="store_true", help="also run both stages on 2 ranks with ZeRO-3")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from cai_core.models.tiny import ensure_tiny_model

    print(f"tiny model: {ensure_tiny_model()}")
    with tempfile.TemporaryDirectory(prefix="cai-train-bench-") as tmp:
        results = _in_process(args.steps, args.batch, Path(tmp))
        if args.zero3:
            results.update(_zero3(args.steps, args.batch, Path(tmp)))
    for name, (stage_s, train_s, tok_s) in results.items():
        print(f"{name}_{args.steps}_steps_stage_s: {stage_s:.2f}  (training {train_s:.2f} s, {tok_s:.0f} tokens/s; "
              f"target < {TARGET_S:.0f} s)")
    worst = max(stage_s for stage_s, _, _ in results.values())
    print(f"slowest_stage_to_target_ratio: {worst / TARGET_S:.3f}")


if __name__ == "__main__":
    main()
