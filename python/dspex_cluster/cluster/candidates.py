"""Placement candidates as numpy columns, filtered and scored without a Python loop per node.

Two sources give the same columns (`Columns`, one entry per candidate, `rows` its row in the
placement model):

  * `NodeTable` — per-node arrays kept from the cluster's signals (a load report or a membership
    change writes one row), so `place` reads them instead of building a map per node;
  * `columns_of(candidates)` — the candidate maps the BEAM passes to `advise`, read field by
    field (one C-level pass per field, numbers converted by numpy).

`eligible_mask` is `constraints.compile_filter` (the BEAM `PlacementScore.filter/2`) over columns,
`capability_share` its `capability_match`. Unknown numbers are NaN, and every comparison with NaN
is false, so "unknown fails" holds as on the BEAM.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np

from dspex_cluster.cluster.constraints import Filter
from dspex_cluster.cluster.terms import as_mapping, atom_list, number
from dspex_cluster.cluster.view import NodeState
from dspex_cluster.etf import Atom

NUMBERS = (
    "cpu",
    "scheduler_utilization",
    "memory",
    "free_memory_mb",
    "agents",
    "capacity",
    "rtt_ms",
)
_PLAIN = {float, int, type(None)}


def floats(values: Sequence[Any]) -> np.ndarray:
    """`terms.number` over a column: NaN for nil, non-numbers, booleans and infinities."""
    if set(map(type, values)) <= _PLAIN:
        a = np.array(values, dtype=np.float64)
    else:
        a = np.array([number(v, math.nan) for v in values], dtype=np.float64)
    a[np.isinf(a)] = np.nan
    return a


class LazyColumns(dict[str, np.ndarray]):
    """Numeric columns built on first use: a decision reads only those it needs (bounds only
    when a constraint names them)."""

    def __init__(self, load: Callable[[str], np.ndarray]) -> None:
        super().__init__()
        self._load = load

    def __missing__(self, key: str) -> np.ndarray:
        value = self[key] = self._load(key)
        return value


@dataclass
class Columns:
    """Candidates as columns. `caps` (capability sets) is filled only when asked for."""

    rows: np.ndarray  # int64: the model row of each candidate
    node: np.ndarray  # object: Atom
    kind: np.ndarray  # object: Atom (or anything the map held)
    status: np.ndarray  # object
    num: dict[str, np.ndarray]  # NUMBERS -> float64, NaN when unknown (LazyColumns)
    caps: list[frozenset[Atom]] | None = None
    cap_col: dict[Atom, np.ndarray] | None = None  # capability -> has it, per candidate

    def has_capability(self, cap: Atom) -> np.ndarray:
        if self.cap_col is not None:
            return self.cap_col.get(cap, np.zeros(self.rows.size, dtype=bool))
        assert self.caps is not None
        return np.fromiter((cap in s for s in self.caps), dtype=bool, count=len(self.caps))


def columns_of(
    candidates: list[Any], rows_of: Callable[[list[Atom]], Any], need_caps: bool
) -> Columns:
    """Columns of BEAM candidate maps (atom or binary keys, or keyword lists); `rows_of(nodes)`
    gives their model rows. Entries whose `node` is not an atom are dropped."""
    # the wire decoder shares one key object per atom: looking keys up by those objects is an
    # identity hit instead of a string comparison per map
    keys = (
        {str(k): k for k in candidates[0]} if candidates and isinstance(candidates[0], dict) else {}
    )
    node_key = keys.get("node", "node")
    try:
        if set(map(type, candidates)) - {dict}:
            raise KeyError  # keyword lists or other mappings
        maps: list[dict[str, Any]] = candidates
        nodes = list(map(itemgetter(node_key), maps))  # KeyError: some map has binary keys
    except KeyError:
        maps = [x if isinstance(x, dict) and "node" in x else as_mapping(x) for x in candidates]
        nodes = _column(maps, "node")
    if set(map(type, nodes)) - {Atom}:
        maps = [m for m, x in zip(maps, nodes, strict=True) if isinstance(x, Atom)]
        nodes = _column(maps, "node")

    def column(name: str) -> list[Any]:
        return _column(maps, keys.get(name, name))

    out = Columns(
        rows=np.asarray(rows_of(nodes), dtype=np.int64).reshape(-1),
        node=_objects(nodes),
        kind=_objects(column("kind")),
        status=_objects(column("status")),
        num=LazyColumns(lambda name: floats(column(name))),
    )
    if need_caps:
        out.caps = [frozenset(atom_list(v)) for v in column("capabilities")]
    return out


def _column(maps: list[dict[str, Any]], key: str) -> list[Any]:
    """One field of every map, None where absent (one C-level pass)."""
    return list(map(dict.get, maps, repeat(key)))


def _objects(values: Sequence[Any]) -> np.ndarray:
    return np.fromiter(values, dtype=object, count=len(values))


class NodeTable:
    """Per-node columns in model-row order, kept up to date from `NodeState`s (`sync`)."""

    def __init__(self) -> None:
        self.size = 0
        self._cap = 0
        self.in_view = np.zeros(0, dtype=bool)  # a cluster member we know, not just a name
        self.node = np.empty(0, dtype=object)
        self.kind = np.empty(0, dtype=object)
        self.status = np.empty(0, dtype=object)
        self.reported_at = np.zeros(0)  # monotonic; NaN: never / not since it went down
        self.interval_s = np.zeros(0)
        self.num: dict[str, np.ndarray] = {k: np.zeros(0) for k in NUMBERS}
        self.cap_col: dict[Atom, np.ndarray] = {}
        self.caps: list[frozenset[Atom]] = []
        self.schedulers = np.zeros(0)  # parallel slots from health data (1 when unknown)

    def ensure(self, rows: int) -> None:
        """Room for `rows` rows (amortised doubling)."""
        if rows <= self.size:
            return
        if rows > self._cap:
            cap = max(rows, 2 * self._cap, 16)

            def grow(a: np.ndarray, fill: Any) -> np.ndarray:
                out = np.full(cap, fill, dtype=a.dtype)
                out[: a.size] = a
                return out

            self.in_view = grow(self.in_view, False)
            self.node = grow(self.node, None)
            self.kind = grow(self.kind, None)
            self.status = grow(self.status, None)
            self.reported_at = grow(self.reported_at, np.nan)
            self.interval_s = grow(self.interval_s, 1.0)
            self.num = {k: grow(v, np.nan) for k, v in self.num.items()}
            self.cap_col = {k: grow(v, False) for k, v in self.cap_col.items()}
            self.schedulers = grow(self.schedulers, 1.0)
            self._cap = cap
        self.caps.extend(frozenset() for _ in range(rows - self.size))
        self.size = rows

    def sync(self, row: int, s: NodeState) -> None:
        """Row `row` from the node's state: status, kind, its latest load report."""
        self.ensure(row + 1)
        self.in_view[row] = True
        self.node[row] = s.node
        self.kind[row] = s.kind
        self.status[row] = s.status
        self.reported_at[row] = np.nan if s.reported_at is None else s.reported_at
        load = s.load
        self.interval_s[row] = (number(load.get("interval_ms"), 1000.0) or 1000.0) / 1000.0
        for k in NUMBERS:
            self.num[k][row] = number(load.get(k), math.nan)
        caps = frozenset(atom_list(load.get("capabilities")))
        old = self.caps[row]
        if caps != old:
            for cap in old - caps:
                self.cap_col[cap][row] = False
            for cap in caps - old:
                col = self.cap_col.get(cap)
                if col is None:
                    col = self.cap_col[cap] = np.zeros(self._cap, dtype=bool)
                col[row] = True
            self.caps[row] = caps

    def set_schedulers(self, row: int, slots: float) -> None:
        self.ensure(row + 1)
        self.schedulers[row] = slots

    def columns(self, now: float, ttl_factor: float, stale_limit_s: float) -> Columns:
        """The place candidates: members whose reports did not stop for `stale_limit_s`; a
        report older than `ttl_factor` intervals counts as unknown load (as on the BEAM)."""
        n = self.size
        age = now - self.reported_at[:n]
        never = np.isnan(age)
        keep = self.in_view[:n] & (never | (age <= stale_limit_s))
        fresh = ~never & (age <= ttl_factor * self.interval_s[:n])
        rows = np.flatnonzero(keep)
        fresh = fresh[rows]
        nan = np.float64(np.nan)
        return Columns(
            rows=rows,
            node=self.node[rows],
            kind=self.kind[rows],
            status=self.status[rows],
            num=LazyColumns(lambda k: np.where(fresh, self.num[k][rows], nan)),
            cap_col={k: v[rows] & fresh for k, v in self.cap_col.items()},
        )


def node_mask(cols: Columns, nodes: list[Atom], index: Mapping[Atom, int], n: int) -> np.ndarray:
    """Which candidates are one of `nodes` (by model row: no per-candidate lookup)."""
    hit = np.zeros(n, dtype=bool)
    hit[[index[x] for x in nodes if x in index]] = True
    return hit[cols.rows]


def eligible_mask(
    cols: Columns, f: Filter, index: Mapping[Atom, int], n: int, status_up: np.ndarray
) -> np.ndarray:
    """`compile_filter` over columns, with `status_up` standing for `status == up`."""
    ok = status_up.copy()
    if f.exclude:
        ok &= ~node_mask(cols, f.exclude, index, n)
    if f.allow is not None:
        ok &= node_mask(cols, f.allow, index, n)
    if f.kinds is not None:
        kinds = np.zeros(ok.size, dtype=bool)
        for k in f.kinds:
            kinds |= cols.kind == k
        ok &= kinds
    for key, limit, sign in f.bounds:
        ok &= sign * cols.num[key] <= sign * limit  # NaN (unknown) compares false: fails
    for cap in f.caps:
        ok &= cols.has_capability(cap)
    return ok


def capability_share(cols: Columns, prefer: list[Atom]) -> np.ndarray | float:
    """Share of `prefer_capabilities` each candidate has (1.0 when none are asked for)."""
    if not prefer:
        return 1.0
    total = np.zeros(cols.rows.size)
    for cap in prefer:
        total += cols.has_capability(cap)
    return total / len(prefer)
