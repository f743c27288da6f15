"""DSPEx Cluster: Python nodes as real peers in a distributed Erlang cluster.

The public API is imported lazily so that `import dspex_cluster` stays cheap (no numpy, no asyncio
machinery) for code that only needs, say, the term codec.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Atom": "dspex_cluster.etf",
    "Pid": "dspex_cluster.etf",
    "Reference": "dspex_cluster.etf",
    "Port": "dspex_cluster.etf",
    "ImproperList": "dspex_cluster.etf",
    "BitString": "dspex_cluster.etf",
    "Node": "dspex_cluster.runtime",
    "Process": "dspex_cluster.runtime",
    "GenServer": "dspex_cluster.runtime",
    "Exit": "dspex_cluster.runtime",
    "State": "dspex_cluster.state",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dspex_cluster' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
