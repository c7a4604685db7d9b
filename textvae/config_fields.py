"""Typed, documented fields of the config dataclasses (`DataConfig`, `TrainConfig`): `option()` declares one
with its help text, `check_type()` checks a value against its annotation, and `read_config_file()` reads a
YAML or JSON file of options. Importable without torch: options are checked before anything heavy loads.
"""

from __future__ import annotations

import json
import math
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml


def option(default, help: str, **metadata):
    """A dataclass field with its `--help` text (a mutable default is copied for each instance)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})


_TYPE_NAMES = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "list[int]": "a list of integers",
}


def check_type(name: str, value: Any, annotation: str) -> Any:
    """`value` checked against a field's annotation (`"int"`, `"float | None"`, `"dict[str, Any]"`, ...).

    Config files and Python callers can pass anything: `epochs: "three"`, `beta: .nan`. Returns the value
    (an int where a float is expected becomes a float); `ValueError` naming the option otherwise.
    """
    kinds = [part.strip() for part in str(annotation).split("|")]
    if value is None:
        if "None" in kinds:
            return None
        raise ValueError(f"{name} must be set, got null")
    kind = kinds[0]
    if kind == "float":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
        return float(value)
    if kind.startswith("list"):  # a YAML / JSON list; its items are the option's own check
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be {_TYPE_NAMES.get(kind, 'a list')}, got {value!r}")
        return list(value)
    expected = {"int": int, "str": str, "bool": bool}.get(kind, dict if kind.startswith("dict") else None)
    if expected is None:
        return value
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ValueError(f"{name} must be {_TYPE_NAMES.get(kind, 'a mapping')}, got {value!r}")
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML or JSON file; `ValueError` for a missing, unreadable or non-mapping file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read config file {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a mapping of options")
    return values
