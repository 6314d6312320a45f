"""The `cai` command (click): the group in `main`, the shared options in `options`, one module per command
in `commands/`. The only part of cai_core that imports the KFP layer (cai_pipelines), and only inside the
commands that compile or run the pipeline."""
from cai_core.cli.main import cli, main, run_command

__all__ = ["cli", "main", "run_command"]
