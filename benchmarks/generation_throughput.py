"""Benchmark: in-process seeded sampling, one request at a time vs. batched, on a real model.

The old path generated each seeded request alone (so that its seed gave the same text in any
batch); the new one batches every request and gives each row its own random generator
(cai_core/llm/transformers_backend.py). Both run here side by side on the same prompts and
seeds: tokens/s at batch 1 (the old path) and at --batch (default 16), and whether every
row's text is the same in both (batch independence).

    python benchmarks/generation_throughput.py [--model smollm2-135m] [--prompts 32] [--batch 16]

Target (issue 13): batched >= 5x the one-at-a-time path. Prints the headline last, as
`batched_to_single_ratio: <x>`.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run(model_name: str, prompts: list[str], batch: int, max_new_tokens: int, seed: int) -> tuple[list[str], float, int]:
    from cai_core.llm.base import Sampling
    from cai_core.llm.transformers_backend import TransformersChatModel
    from cai_core.models.registry import resolve_model

    llm = TransformersChatModel(resolve_model(model_name), batch_size=batch)
    llm.chat([[{"role": "user", "content": "Hi"}]], [Sampling(max_new_tokens=2, seed=0)])  # load + warm up
    before = llm.stats["generated_tokens"]
    convs = [[{"role": "user", "content": p}] for p in prompts]
    sampling = [Sampling(temperature=0.7, top_p=0.95, max_new_tokens=max_new_tokens, seed=seed + i)
                for i in range(len(prompts))]
    start = time.perf_counter()
    texts = llm.chat(convs, sampling)
    seconds = time.perf_counter() - start
    return texts, seconds, llm.stats["generated_tokens"] - before


def main() -> None:
    from pathlib import Path

    from cai_core.stages.prepare import resolve_source

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(resolve_source("builtin:prompts", Path(".")), encoding="utf-8") if line.strip()]
    prompts = [r["prompt"] for r in rows[:args.prompts]]

    single, single_s, single_tokens = run(args.model, prompts, 1, args.max_new_tokens, args.seed)
    batched, batched_s, batched_tokens = run(args.model, prompts, args.batch, args.max_new_tokens, args.seed)
    same = sum(a == b for a, b in zip(single, batched))
    single_rate, batched_rate = single_tokens / single_s, batched_tokens / batched_s
    print(f"model: {args.model}; {len(prompts)} seeded requests, temperature 0.7, top_p 0.95, "
          f"max_new_tokens {args.max_new_tokens}")
    print(f"batch 1 (one at a time): {single_tokens} tokens in {single_s:.1f} s = {single_rate:.1f} tok/s")
    print(f"batch {args.batch}: {batched_tokens} tokens in {batched_s:.1f} s = {batched_rate:.1f} tok/s")
    print(f"rows with the same text in both: {same}/{len(prompts)}")
    print(f"batched_to_single_ratio: {batched_rate / single_rate:.2f}")


if __name__ == "__main__":
    main()
