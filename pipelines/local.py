"""Run the real KFP pipeline on this machine with kfp.local's SubprocessRunner.

Each task runs in a subprocess of this Python (no containers). KFP's own
verbose output goes to `<run_dir>/pipeline.log`; the terminal shows the
`[cai]` progress lines of the components and KFP's task status lines.
"""
from __future__ import annotations

import contextlib
import re
import shutil
import sys
import warnings
from pathlib import Path

from cai_core.config.run import RunConfig
from cai_core.errors import StageError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SHOW = re.compile(r"\[cai\]|Task '.*' finished with status|Pipeline '.*' finished with status")
_EXCEPTION = re.compile(r"^[\w.]*(Error|Exception|Interrupt)\b.*")


class _FilteredTee:
    """Everything to the log file; only progress and status lines to the terminal."""

    def __init__(self, log, terminal, verbose: bool):
        self.log, self.terminal, self.verbose = log, terminal, verbose
        self._buffer = ""
        self.errors: list[str] = []
        self.crash = ""

    def write(self, text: str) -> int:
        self.log.write(text)
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            plain = _ANSI.sub("", line).strip()
            if "[cai] ERROR" in plain:
                self.errors.append(plain.split("[cai] ", 1)[1])
            elif _EXCEPTION.match(plain):  # the last line of a task's traceback: a crash, not a user error
                self.crash = plain
            if self.verbose or _SHOW.search(plain):
                self.terminal.write(plain + "\n")
                self.terminal.flush()
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        self.terminal.flush()

    def isatty(self) -> bool:
        return False


def run_local(cfg: RunConfig, run_dir: Path, run_root: str | None = None, verbose: bool = False,
              ablation: bool = False) -> None:
    """Run the whole pipeline; KFP's files go to `run_dir`, the steps publish to `run_root`
    (default: `run_dir`; may be an s3:// prefix). Raise StageError naming the failed step."""
    from kfp import local

    from cai_pipelines.ablation import build_ablation
    from cai_pipelines.cai_pipeline import PIPELINE_NAME, build_pipeline

    run_dir.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(run_dir / "kfp"),
               raise_on_error=True)
    pipeline = (build_ablation if ablation else build_pipeline)(cfg, run_root=run_root or str(run_dir))
    with open(run_dir / "pipeline.log", "a", encoding="utf-8") as log:
        tee = _FilteredTee(log, sys.stdout, verbose)
        try:
            with contextlib.redirect_stdout(tee), contextlib.redirect_stderr(tee), warnings.catch_warnings():
                # kfp.local warns that images and display names are ignored locally: true, and expected.
                warnings.simplefilter("ignore")
                pipeline()
        except RuntimeError as exc:
            reason = tee.errors[-1] if tee.errors else str(exc).splitlines()[0] + (f" ({tee.crash})" if tee.crash else "")
            raise StageError(f"the pipeline stopped: {_ANSI.sub('', reason)} (full log: {run_dir / 'pipeline.log'})") from None
    # Every step published its output under the run root; KFP's per-execution copies are redundant.
    for execution in (run_dir / "kfp").glob(f"{PIPELINE_NAME}-*"):
        shutil.rmtree(execution, ignore_errors=True)
