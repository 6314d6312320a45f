"""`python -m cai_core.training sft|dpo --data URI [--model URI] [--out URI] [--config FILE] [--set KEY=VALUE]...`

One training stage in this process: what `cai train --launcher local` does, without the rest of the CLI, and
what torchrun starts once per rank (``torchrun --nproc-per-node 2 -m cai_core.training sft ...``).
"""
from __future__ import annotations

import argparse

from cai_core.errors import CaiError, run_program
from cai_core.training import STAGES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cai_core.training",
                                     description="Train one stage in this process (one rank under torchrun).")
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--data", required=True, metavar="URI",
                        help="Training data: sft rows or dpo pairs (JSONL; path or s3://).")
    parser.add_argument("--model", metavar="URI",
                        help="Model to train: an embedded model (tiny, smollm2-135m), a hub id, a directory or s3:// "
                   "(default: model.name_or_path).")
    parser.add_argument("--out", metavar="URI",
                        help="Output: model/, train_log.jsonl, checkpoints "
                             "(default: <output_dir>/<run id>/_train/<stage>).")
    parser.add_argument("--config", metavar="FILE", help="Run config YAML (default: the built-in config).")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="Override one config value, e.g. --set sft.max_steps=10 (repeatable; read as YAML).")
    parser.add_argument("--run-id", help="Run id of the default --out (default: run_id of the config, else 'manual').")
    return parser


def _train(args: argparse.Namespace) -> None:
    from cai_core.config.loading import load_run_config
    from cai_core.training.distributed import Dist
    from cai_core.training.launch import default_targets, summary, train_local, write_termination_message

    try:
        cfg = load_run_config(args.config, args.overrides)
        model, out, _ = default_targets(cfg, args.stage, args.model, args.out, args.run_id)
        result = train_local(args.stage, getattr(cfg, args.stage), args.data, model, out)
    except CaiError as exc:
        write_termination_message(f"{type(exc).__name__}: {exc}")
        raise
    if Dist.from_env().rank == 0:
        print(summary(args.stage, result), flush=True)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    run_program(lambda: _train(args))


if __name__ == "__main__":
    main()
