"""Typed stage configuration: defaults < `--config FILE.yaml` < CLI flags.

Each stage declares a `StageConfig` subclass whose field defaults work out of the box.
`load_config` layers a YAML/JSON file and then the flags the user actually gave on top, and
rejects unknown keys and wrong types with the offending key named:

    config file train.yaml: key 'optim.lr': Input should be a valid number (given: 'fast')
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from codefoundry.errors import ConfigError

C = TypeVar("C", bound="StageConfig")


class StageConfig(BaseModel):
    """Base for every stage's configuration: unknown keys are errors, assignment is checked."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or JSON) mapping; a missing, unreadable or non-mapping file is a ConfigError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {p} cannot be read: {e}") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        fmt = "JSON" if p.suffix == ".json" else "YAML"
        raise ConfigError(f"config file {p} is not valid {fmt}: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of keys, not a {type(data).__name__}")
    return data


def set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    """`set_dotted(d, "optim.lr", 1e-3)` sets `d["optim"]["lr"]`, creating mappings on the way."""
    *parents, leaf = dotted.split(".")
    node = target
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[leaf] = value


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `over` into a copy of `base`; nested mappings merge, everything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(error: Mapping[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "<root>"
    if error["type"] == "extra_forbidden":
        return f"key '{key}': unknown key"
    given = error.get("input")
    shown = repr(given) if not isinstance(given, dict) else "a mapping"
    return f"key '{key}': {error['msg']} (given: {shown})"


def load_config(
    model: type[C],
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> C:
    """Build `model` from its defaults, then `config_file`, then `overrides`.

    `overrides` holds CLI flags by (dotted) config key; a value of None means the flag was
    not given and does not override. Errors say which layer (file or flag) was wrong.
    """
    data: dict[str, Any] = {}
    if config_file is not None:
        data = read_config_file(config_file)
        _validate(model, data, f"config file {config_file}")
    flags: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if value is not None:
            set_dotted(flags, key, value)
    merged = deep_merge(data, flags)
    return _validate(model, merged, "command-line flags" if config_file is None else "flags")


def _validate(model: type[C], data: dict[str, Any], source: str) -> C:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(_describe(err) for err in e.errors())
        raise ConfigError(f"{source}: {problems}") from None
