"""The model cache: built-once directories, published atomically.

Embedded models (see `cai_core.models.registry`) are built or converted on
first use into ``<cache>/models/<name>-<fingerprint>/``. A build goes to a
temporary directory that is renamed into place only when finished, under a
file lock, so two processes building at once are safe and a killed build
never leaves a directory that looks finished: a directory counts only once
its marker file (written last) exists.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable


def cache_root(cache_dir: Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("CAI_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "cai"


def publish_once(models_dir: Path, name: str, marker: str, build: Callable[[Path], object]) -> Path:
    """`models_dir/name`, built by `build(tmp_dir)` unless a finished copy (with `marker`) is already there."""
    final = models_dir / name
    if (final / marker).exists():
        return final
    models_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(models_dir / f".{name}.lock"):
        if (final / marker).exists():  # another process finished it while we waited
            return final
        _remove_stale_builds(models_dir, name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=models_dir))
        try:
            build(tmp)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
            if final.exists() and not (final / marker).exists():
                shutil.rmtree(final, ignore_errors=True)  # a leftover without the marker: not a finished build
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / marker).exists():
                    raise
                # another process (without a working lock) renamed its identical build first
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def _remove_stale_builds(models_dir: Path, name: str, min_age_s: float = 3600.0) -> None:
    """Delete temporary directories of builds that died (killed mid-build) and are over an hour old."""
    now = time.time()
    for path in models_dir.glob(f".{name}.*.tmp"):
        try:
            if now - path.stat().st_mtime > min_age_s:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


@contextlib.contextmanager
def file_lock(path: Path):
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the temp-dir + rename still keeps builds safe
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def quiet_progress_bars():
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
