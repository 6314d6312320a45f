"""The configuration reference, generated from the config classes' `#:` comments.

`cai config docs` prints it; README.md embeds it between markers and a test
keeps the two equal, so the reference cannot drift from the code.
"""
from __future__ import annotations

import dataclasses
import typing

from cai_core.config.base import ConfigBase, field_docs


def _default(value) -> str:
    if isinstance(value, ConfigBase):
        return "(section)"
    if isinstance(value, str):
        return f'"{value}"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(_default(v) for v in value) + "]"
    return str(value)


def _rows(cls: type[ConfigBase], default: ConfigBase, laptop: ConfigBase, prefix: str,
          blank: bool = False) -> list[str]:
    """`blank`: an entry class whose instances need required keys: defaults read from the dataclass fields."""
    docs = field_docs(cls)
    hints = cls.field_types()
    rows = []
    for f in dataclasses.fields(cls):
        if blank:
            value = local = f.default if f.default is not dataclasses.MISSING else None
        else:
            value, local = getattr(default, f.name), getattr(laptop, f.name)
        if isinstance(value, ConfigBase):
            rows += _rows(type(value), value, local, f"{prefix}{f.name}.")
            continue
        shown = f"`{_default(local)}`" if local != value else ""
        rows.append(f"| `{prefix}{f.name}` | `{_default(value)}` | {shown} | {docs.get(f.name, '')} |")
        item = _item_config(hints[f.name])
        if item is not None:  # a list of sections (prompts.mix): document an entry's keys as <key>[].<field>
            rows += _rows(item, item.__new__(item), item.__new__(item), f"{prefix}{f.name}[].", blank=True)
    return rows


def _item_config(tp) -> type[ConfigBase] | None:
    """The section class of a `tuple[SomeConfig, ...]` field, else None."""
    args = [a for a in typing.get_args(tp) if a is not Ellipsis] if typing.get_origin(tp) in (tuple, list) else []
    if args and isinstance(args[0], type) and issubclass(args[0], ConfigBase):
        return args[0]
    return None


def reference() -> str:
    """Every key: its default, the embedded laptop config's value where it differs, and its meaning."""
    from cai_core.config.loading import load_run_config
    from cai_core.config.run import RunConfig

    lines = ["| key | default | laptop config | meaning |", "|---|---|---|---|"]
    lines += _rows(RunConfig, RunConfig(), load_run_config(), "")
    return "\n".join(lines) + "\n"


def write_readme(path: str = "README.md") -> None:
    """Replace the reference between the README's markers with the current one."""
    import re
    from pathlib import Path

    text = Path(path).read_text(encoding="utf-8")
    start = re.search(r"<!-- config-reference:start.*?-->\n", text)
    end = text.index("<!-- config-reference:end -->")
    Path(path).write_text(text[:start.end()] + "\n" + reference() + "\n" + text[end:], encoding="utf-8")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--write-readme"]:
        write_readme()
    else:
        print(reference(), end="")
