"""User-facing errors.

A `CaiError` is a problem the user can fix (bad input, bad config, missing
credentials). The CLI prints its message and exits non-zero without a
traceback; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable


class CaiError(Exception):
    """A user error: the message says what is wrong and where."""

    exit_code = 2


class ConfigError(CaiError):
    """A config key is unknown, mistyped or out of range; the message names the key path."""


class InputError(CaiError):
    """An input file is missing, malformed or empty; the message names file, line and field."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, field: str | None = None):
        where = ""
        if path is not None:
            where = str(path) + (f":{line}" if line is not None else "")
            where += ": "
        if field is not None:
            message = f"field '{field}': {message}"
        super().__init__(where + message)
        self.path, self.line, self.field = path, line, field


class StorageError(CaiError):
    """A storage location cannot be read or written (missing bucket, credentials, endpoint down)."""


class StageError(CaiError):
    """A stage cannot go on with what it was given (e.g. every pair was dropped)."""


def run_program(main: Callable[[], object]) -> None:
    """Run `main` as a program: a CaiError ends with one line and its exit status, Ctrl-C with 130; no traceback."""
    try:
        main()
    except CaiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
