"""Per-layer options: one value for every layer, or a {layer name: value} mapping.

The one rule every stage (pruning and clustering settings, the exporter's bits, the size report) and the
config validation use to read them: a scalar applies to every layer, a mapping to the layers it names, and
a layer it does not name (or maps to None) gets the caller's default.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

Checker = Callable[[Any, str], Any]
"""A limits-style check: (value, label for the message) -> the value, or ValueError."""


def is_given(value, layer_name: str) -> bool:
    """True when the option `value` sets `layer_name` explicitly: a scalar, or a mapping naming it with a
    value other than None."""
    if isinstance(value, Mapping):
        return value.get(layer_name) is not None
    return value is not None


def resolve_per_layer(value, layer_name: str, default=None, valid: Optional[Checker] = None, label: str = ""):
    """The setting of `layer_name` from the per-layer option `value` (None, a scalar or a mapping), else
    `default`. With `valid` (e.g. limits.check_index_bits), an explicitly given setting is checked and
    returned as `valid` returns it; `label` names it in the message."""
    if not is_given(value, layer_name):
        return default
    setting = value[layer_name] if isinstance(value, Mapping) else value
    return valid(setting, label or layer_name) if valid is not None else setting


def check_per_layer(owner: str, name: str, value, ok: Callable[[Any], bool], what: str) -> None:
    """ValueError unless the per-layer option `value` is None, a scalar that is `ok`, or a mapping of layer
    names to `ok` values; messages read "<owner>: <name>[layer] must be <what>, got ..."."""
    if value is None:
        return
    if isinstance(value, Mapping):
        for layer, v in value.items():
            if not isinstance(layer, str):
                raise ValueError(f"{owner}: {name} keys must be layer names, got {layer!r}")
            if not ok(v):
                raise ValueError(f"{owner}: {name}[{layer!r}] must be {what}, got {v!r}")
    elif not ok(value):
        raise ValueError(f"{owner}: {name} must be {what} or a dict of layer name -> value, got {value!r}")
