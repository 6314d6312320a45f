"""One module per `cai` command; each adds its command(s) to the group in its `register(group)`."""
from __future__ import annotations

import click

from cai_core.cli.commands import (clean, compile, config, discover, evaluate, init, judge, metrics, run, submit,
                                   train)

MODULES = (run, init, config, metrics, clean, judge, train, evaluate, discover, compile, submit)


def register(group: click.Group) -> None:
    for module in MODULES:
        module.register(group)
