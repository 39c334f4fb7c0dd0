"""Dataclass configs filled from YAML and overridden by command-line flags.

Precedence, lowest first: the dataclass defaults, the YAML file's top-level scalar keys that name a
field (settings shared by all stages, such as `model` and `seed`), the YAML section of the stage, and
finally the `--key value` flags. Unknown keys are errors, so a typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mixsd.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A setting that cannot be used; the message names where it came from."""


def load(cls: type[T], config_path: str | None = None, section: str | None = None, **overrides: Any) -> T:
    """Build `cls` from defaults < YAML (shared keys, then `section`) < overrides."""
    fields = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if config_path is not None:
        values.update(_yaml_values(Path(config_path), section, fields))
    for key, value in overrides.items():
        if key not in fields:
            raise ConfigError(f"unknown setting --{key}; known: {', '.join(sorted(fields))}")
        values[key] = value
    hints = typing.get_type_hints(cls)
    coerced = {k: _coerce(v, hints[k], k) for k, v in values.items()}
    return cls(**coerced)


def _yaml_values(path: Path, section: str | None, fields: set[str]) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")
    values = {k: v for k, v in data.items() if not isinstance(v, dict) and k in fields}
    if section is not None and section in data:
        block = data[section] or {}
        if not isinstance(block, dict):
            raise ConfigError(f"{path}: section '{section}' must be a mapping")
        unknown = sorted(set(block) - fields)
        if unknown:
            raise ConfigError(f"{path}: section '{section}' has unknown key(s) {unknown}")
        values.update(block)
    return values


def _coerce(value: Any, kind: Any, name: str) -> Any:
    """Turn a YAML or fire value into the field's declared type, or say which setting is wrong."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, options[0], name)
    if origin in (list, tuple):
        (item,) = typing.get_args(kind)[:1] or (Any,)
        items = _as_sequence(value)
        return [_coerce(v, item, name) for v in items]
    if kind is Any:
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"--{name}: expected true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"--{name}: expected a number, got {value!r}")
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"--{name}: expected {kind.__name__}, got {value!r}") from None
        if kind is int and isinstance(value, float) and value != number:
            raise ConfigError(f"--{name}: expected an integer, got {value!r}")
        return number
    if kind is str:
        if isinstance(value, (list, tuple, dict)):
            raise ConfigError(f"--{name}: expected text, got {value!r}")
        return str(value)
    return value


def _as_sequence(value: Any) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [value]


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def describe(config: Any) -> str:
    """The resolved config as printed at the start of every command."""
    return f"{type(config).__name__}:\n" + "\n".join(f"  {k}: {json.dumps(v)}" for k, v in to_dict(config).items())
