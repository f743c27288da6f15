"""Reading the Erlang terms the BEAM side sends: maps with atom (or binary) keys, keyword lists,
numbers that may be nil."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from dspex_cluster.etf import Atom


def as_mapping(value: Any) -> dict[str, Any]:
    """A map or keyword list as a str-keyed dict (binary keys decoded); anything else -> {}."""
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, list) and all(isinstance(x, tuple) and len(x) == 2 for x in value):
        items = value  # type: ignore[assignment]
    else:
        return {}
    out: dict[str, Any] = {}
    for k, v in items:
        if isinstance(k, bytes):
            k = k.decode("utf-8", "replace")
        out[str(k)] = v
    return out


def number(value: Any, default: float | None = None) -> float | None:
    """A finite float, or `default` for nil / non-numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    f = float(value)
    return f if math.isfinite(f) else default


def dig(data: Any, *path: str, default: float | None = None) -> float | None:
    """A number nested in maps: dig(d, "run_queue", "total")."""
    for key in path:
        data = as_mapping(data).get(key)
    return number(data, default)


def atom_list(value: Any) -> list[Atom]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [
        Atom(x.decode() if isinstance(x, bytes) else x) for x in items if isinstance(x, str | bytes)
    ]


def to_atom_map(d: Mapping[str, Any]) -> dict[Atom, Any]:
    """A str-keyed dict as an atom-keyed Erlang map (one level)."""
    return {Atom(k): v for k, v in d.items()}
