"""Typed, frozen config dataclasses built from plain dicts (YAML/JSON).

Every stage config subclasses `ConfigBase`. `from_dict` rejects unknown keys
(with a "did you mean" hint), checks types (int, float, str, bool, Optional,
Literal, tuple[...], dict[str, ...] and nested configs) and names the full key
path in every error, e.g. ``sft.learning_rate: expected a number, got 'fast'``.
Range checks live in each class's ``validate()`` and raise `ConfigError`
naming the field; `from_dict` prefixes the path.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from cai_core.errors import ConfigError


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (tuple, list):
        return "a list"
    if origin is dict:
        return "a mapping"
    if isinstance(tp, type) and issubclass(tp, ConfigBase):
        return "a mapping"
    return str(tp)


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check `value` against type `tp`; return it in canonical form (tuples for lists)."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: expected {' or '.join(_type_name(o) for o in options if o is not type(None))}, got {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    if tp is Any:
        return value
    if origin in (tuple, list):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        args = [a for a in get_args(tp) if a is not Ellipsis] or [Any]
        return tuple(_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        _, vt = get_args(tp) or (str, Any)
        return {str(k): _coerce(v, vt, f"{path}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, ConfigBase):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return tp.from_dict(value, path=path)
    raise TypeError(f"unsupported config type {tp!r} at {path}")


@dataclasses.dataclass(frozen=True)
class ConfigBase:
    """Base of every config: build from dicts, validate, serialise, fingerprint."""

    def validate(self) -> None:
        """Range checks; raise ConfigError(f"{field}: ...") naming the field."""

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, path: str = "") -> "ConfigBase":
        data = dict(data or {})
        hints = cls.field_types()
        names = [f.name for f in dataclasses.fields(cls)]
        prefix = f"{path}." if path else ""
        for key in data:
            if key not in names:
                hint = difflib.get_close_matches(str(key), names, n=1)
                more = f" (did you mean '{prefix}{hint[0]}'?)" if hint else f" (known keys: {', '.join(names)})"
                raise ConfigError(f"{prefix}{key}: unknown config key{more}")
        kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{prefix}{exc}") from None

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            if isinstance(v, ConfigBase):
                return v.to_dict()
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ConfigBase":
        return cls.from_dict(json.loads(text) if text else {})

    def fingerprint(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> "ConfigBase":
        return dataclasses.replace(self, **changes)


def require(condition: bool, field: str, message: str) -> None:
    """Raise ConfigError naming `field` when `condition` is false (use inside validate())."""
    if not condition:
        raise ConfigError(f"{field}: {message}")


def field_docs(cls: type[ConfigBase]) -> dict[str, str]:
    """Per-field documentation from `#:` comments above each field (for `cai config docs`).

    Inherited fields are documented where they are declared; a subclass that re-declares one with its own
    `#:` comment replaces the base class's text (the classes are read base first, along the MRO).
    """
    import inspect

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, ConfigBase)) or klass is ConfigBase:
            continue
        pending: list[str] = []
        for line in inspect.getsource(klass).splitlines():
            stripped = line.strip()
            if stripped.startswith("#:"):
                pending.append(stripped[2:].strip())
                continue
            name = stripped.split(":", 1)[0].strip()
            if pending and name.isidentifier():
                docs[name] = " ".join(pending)
            pending = []
    return docs

