"""Benchmark: does cleaning prevent collapse on a real model? none vs rule x 3 seeds on SmolLM2-135M-Instruct.

Runs the whole pipeline through kfp.local (`cai run --config smollm2 --ablation`) once per
(clean variant, seed), then prints, per variant, the mean over seeds with a 95% t interval
of the SFT and DPO models' collapse metrics on the gate's probes (tail-loop rate,
rep-2/3/4, distinct-2, empty rate) and of the judge's accuracy on its control pairs, and
the rule-minus-none difference of each. Side by side in one run: both variants see the
same prompts, seeds and settings; only `clean.variant` differs.

    python benchmarks/real_model_ablation.py [--seeds 0 1 2] [--prompts 16] [--out DIR] [--set k=v ...]

About 6 minutes per member on a quiet 2-core machine (MT-Bench and the safety set are
skipped: the figures are collapse metrics). Prints the headline last, as
`dpo_tail_loop_rate_rule_minus_none: <x>`. The result is reported whatever its sign.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METRICS = [f"gate.{model}.{key}" for model in ("base", "sft", "dpo")
           for key in ("tail_loop_rate", "rep_2", "rep_3", "rep_4", "distinct_2", "empty_rate")]
METRICS += ["judge.control_accuracy", "judge.control_first_slot_rate", "judge.kept",
            "clean_revisions.changed_rate", "clean_pairs.changed_rate", "sft.train_loss", "dpo.train_loss"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=["none", "rule"])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--probes", type=int, default=12)
    ap.add_argument("--out", default="")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="cai-real-ablation-"))
    sets = [f"ablation.variants={json.dumps(args.variants)}", f"ablation.seeds={json.dumps(args.seeds)}",
            f"ablation.metrics={json.dumps(METRICS)}", f"prompts.max_prompts={args.prompts}",
            f"eval_prompts.max_prompts={args.probes}", f"gate.probes={args.probes}",
            "gate.mode=flag",  # every member reaches evaluate and the report, whatever its verdict
            # collapse is measured on the gate's probes and the held-out answers: no MT-Bench or safety grading
            'evaluate.mt_bench_source=""', 'evaluate.red_team_source=""', 'evaluate.benign_source=""',
            "evaluate.min_grader_accuracy=0",
            *args.overrides]
    cmd = [sys.executable, "-m", "cai_core.cli", "run", "--config", "smollm2", "--ablation",
           "--output-dir", str(out), "--run-id", "ablation", *[x for s in sets for x in ("--set", s)]]
    print("running:", " ".join(cmd), flush=True)
    start = time.monotonic()
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.monotonic() - start
    table = json.loads((out / "ablation" / "ablation.json").read_text())
    print(f"\n{len(args.variants)} variants x {len(args.seeds)} seeds in {seconds / 60:.1f} min; "
          f"mean [95% CI] over seeds (gate probes: {args.probes} held-out prompts, greedy)\n")
    print(f"| metric | {' | '.join(args.variants)} | rule - none |")
    print("|---|" + "---|" * (len(args.variants) + 1))
    for key in METRICS:
        cells = []
        for variant in args.variants:
            s = table.get(variant, {}).get(key)
            cells.append("" if s is None else f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]")
        diff = ""
        if all(key in table.get(v, {}) for v in ("none", "rule")):
            diff = f"{table['rule'][key]['mean'] - table['none'][key]['mean']:+.3f}"
        print(f"| {key} | {' | '.join(cells)} | {diff} |")
    none, rule = table.get("none", {}), table.get("rule", {})
    key = "gate.dpo.tail_loop_rate"
    if key in none and key in rule:
        print(f"dpo_tail_loop_rate_rule_minus_none: {rule[key]['mean'] - none[key]['mean']:+.4f}")


if __name__ == "__main__":
    main()
