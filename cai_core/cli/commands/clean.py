"""`cai clean`: clean your own data with the rules, the teacher, or both."""
from __future__ import annotations

import json

import click

from cai_core.cli.options import load_config, teacher_options


@click.command("clean")
@click.option("--in", "in_path", required=True,
              help="Input: a JSONL file, a saved dataset directory, parquet/arrow files, s3:// or hf:<id>[@split].")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="JSONL output (written atomically).")
@click.option("--field", "fields", multiple=True, default=("response",), show_default=True,
              help="Field to clean; give it twice for pairs.")
@click.option("--prompt-field", default="prompt", show_default=True,
              help="Field with the prompt (sets the target language).")
@click.option("--variant", type=click.Choice(["none", "rule", "llm", "hybrid"]),
              help="rule: deterministic fixes; llm: every text to the teacher, verified; hybrid: rules, then the "
                   "teacher only where detectors still fire (default: clean.variant of the config, rule).")
@teacher_options("clean", "<out>.clean/journal")
def clean_cmd(in_path, out_path, fields, prompt_field, variant, config, overrides, base_url, model_name, journal_dir):
    """Clean your own data: adds <field>_cleaned and <field>_cleanup to every row.

    \b
    Prints the counts per reason code as JSON. With --variant llm or hybrid the
    teacher's replies are verified (stance kept, nothing added, not longer); a reply
    that fails falls back to the rule output and is counted with its reason.
    """
    from cai_core import storage
    from cai_core.cli.teacher import JOURNAL_DIR, command_teacher
    from cai_core.data.inputs import local_jsonl
    from cai_core.stages.clean import LLM_VARIANTS, clean_file

    cfg = load_config(config, overrides)
    variant = variant or cfg.clean.variant
    llm = None
    if variant in LLM_VARIANTS:
        journal = journal_dir or storage.join(f"{out_path}.clean", JOURNAL_DIR)
        llm = command_teacher(cfg.teacher, cfg.model, base_url=base_url, model_name=model_name, journal=journal,
                              command=f"cai clean --variant {variant}")
    try:
        with local_jsonl(in_path) as path:
            metrics = clean_file(path, out_path, fields, prompt_field, variant, llm=llm, cfg=cfg.clean)
    finally:
        getattr(llm, "close", lambda: None)()
    click.echo(json.dumps(metrics, sort_keys=True))


def register(group: click.Group) -> None:
    group.add_command(clean_cmd)
