"""The options the `cai` commands share: one config option set (`config_options`), the one loader behind it
(`load_config`), and the teacher endpoint options of the commands that call a teacher."""
from __future__ import annotations

import os
import tempfile
from importlib import resources
from pathlib import Path

import click

from cai_core.errors import CaiError, ConfigError, InputError


def bundled_configs() -> dict[str, Path]:
    """name -> file of every config bundled in cai_core/configs/<name>.yaml."""
    entries = sorted(resources.files("cai_core.configs").iterdir(), key=lambda entry: entry.name)
    return {entry.name.removesuffix(".yaml"): Path(str(entry)) for entry in entries
            if entry.name.endswith(".yaml") and entry.is_file()}


def resolve_config(value: str | None) -> str | None:
    """A --config value as the loader reads it: a bare name (no path separator, no .yaml suffix, no such file)
    becomes the file of that bundled config; env:NAME and paths stay as they are."""
    if value is None or value.startswith("env:") or os.path.exists(value) or "/" in value or os.sep in value \
            or value.endswith((".yaml", ".yml")):
        return value
    bundled = bundled_configs()
    if value in bundled:
        return str(bundled[value])
    raise ConfigError(f"no bundled config named {value!r} (bundled: {', '.join(bundled)}); "
                      "a path to a YAML file works too")


class ConfigSource(click.ParamType):
    """--config FILE|env:NAME|NAME: a file, an environment variable holding YAML or JSON, or a bundled config."""

    name = "config"
    _file = click.Path(dir_okay=False)

    def convert(self, value, param, ctx):
        if value.startswith("env:"):
            return value
        try:
            resolved = resolve_config(value)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)
        return self._file.convert(value, param, ctx) if resolved == value else resolved


def _stacked(decorators):
    """One decorator applying `decorators` so that the options show in this order in --help."""
    def apply(command):
        for decorator in reversed(decorators):
            command = decorator(command)
        return command
    return apply


def config_options(uses: str | None = None, *, example: str = "sft.learning_rate=1e-4", cluster: bool = False):
    """--config and --set (the command's `config` and `overrides` arguments); load them with `load_config`.

    `uses` ends the --config help (which sections the command reads, or its default); `example` is the --set
    example; `cluster` names the config a cluster run config (load it with ``load_config(..., cluster=True)``).
    """
    what = "Cluster run config" if cluster else "Run config"
    config_help = (f"{what}: a YAML FILE, env:NAME (YAML or JSON in that variable) or a bundled NAME "
                   f"({', '.join(bundled_configs())})" + (f"; {uses}." if uses else "."))
    options = [
        click.option("--config", "config", type=ConfigSource(), metavar="FILE|env:NAME|NAME", help=config_help),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help=f"Override one config value, e.g. --set {example} (repeatable; the value is read as YAML)."),
    ]
    return _stacked(options)


def load_config(config: str | None, overrides=(), *, cluster: bool = False):
    """The RunConfig of a command: the embedded defaults (for `cluster`, then the built-in cluster config), then
    `config` (a file, env:NAME or a bundled name), then the `KEY=VALUE` overrides."""
    if cluster:
        from cai_core.config.loading import load_cluster_run_config as load
    else:
        from cai_core.config.loading import load_run_config as load

    source = resolve_config(config)
    if source is None or not source.startswith("env:"):
        return load(source, list(overrides))
    name = source[len("env:"):]
    text = os.environ.get(name)
    if text is None:
        raise InputError(f"--config {source}: environment variable {name} is not set")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            return load(path, list(overrides))
        except CaiError as exc:
            raise type(exc)(str(exc).replace(str(path), f"env {name}")) from None


_BASE_URL_HELP = ("OpenAI-compatible endpoint of the teacher (default: teacher.base_url, else OPENAI_BASE_URL, "
                  "else the OpenAI API when OPENAI_API_KEY is set).")


def teacher_options(section: str, journal_default: str):
    """The options every teacher command shares: --config, --set, --base-url, --model, --journal."""
    options = [
        config_options(f"its {section} and teacher sections are used", example="teacher.max_concurrency=32"),
        click.option("--base-url", help=_BASE_URL_HELP),
        click.option("--model", "model_name", help="Teacher model name at the endpoint (default: teacher.model)."),
        click.option("--journal", "journal_dir", help=f"Request journal folder, local or s3:// (default: "
                                                      f"{journal_default}); rerunning resumes from it."),
    ]
    return _stacked(options)
