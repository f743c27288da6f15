"""Placement constraints, with exactly the semantics of the BEAM `PlacementScore.filter/2`.

A candidate is a map with `node`, `kind`, `status` and, from its latest load report, `cpu`,
`memory`, `free_memory_mb`, `agents`, `capabilities` (and `rtt_ms`). Constraints (keyword list or
map, atom or string keys): only `status == up`; `exclude_nodes`, `nodes` (allow-list), `kinds`,
`min_memory_mb` (free memory; unknown fails), `capabilities` (all required), `max_cpu`,
`max_agents` (unknown fails). `prefer_capabilities` does not filter: it is scored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dspex_cluster.cluster.terms import as_mapping, atom_list, number
from dspex_cluster.etf import Atom

FILTERS = (
    "exclude_nodes",
    "nodes",
    "kinds",
    "min_memory_mb",
    "capabilities",
    "max_cpu",
    "max_agents",
)


@dataclass
class Filter:
    """Constraints parsed once: what `compile_filter` and `candidates.eligible_mask` read."""

    exclude: list[Atom]
    allow: list[Atom] | None
    kinds: list[Atom] | None
    caps: list[Atom]
    prefer: list[Atom]
    bounds: list[tuple[str, float, float]] = field(default_factory=list)

    @classmethod
    def of(cls, c: Mapping[str, Any]) -> Filter:
        return cls(
            exclude=atom_list(c.get("exclude_nodes")),
            allow=atom_list(c.get("nodes")) if c.get("nodes") is not None else None,
            kinds=atom_list(c.get("kinds")) if c.get("kinds") is not None else None,
            caps=atom_list(c.get("capabilities")),
            prefer=atom_list(c.get("prefer_capabilities")),
            bounds=[
                (key, float(c[limit]), sign)
                for key, limit, sign in (
                    ("free_memory_mb", "min_memory_mb", -1.0),
                    ("cpu", "max_cpu", 1.0),
                    ("agents", "max_agents", 1.0),
                )
                if c.get(limit) is not None
            ],
        )

    @property
    def needs_caps(self) -> bool:
        return bool(self.caps or self.prefer)


def merged_constraints(agent_spec: Any, constraints: Any) -> dict[str, Any]:
    """`constraints`, over those a map agent spec carries under `constraints` (as the BEAM does)."""
    spec = as_mapping(agent_spec)
    return {**as_mapping(spec.get("constraints")), **as_mapping(constraints)}


def eligible(candidate: Mapping[str, Any], c: Mapping[str, Any]) -> bool:
    return compile_filter(c)(candidate)


def compile_filter(c: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bool]:
    """The constraints parsed once, as a predicate over candidates (for many candidates)."""
    f = Filter.of(c)
    exclude, caps, bounds = set(f.exclude), f.caps, f.bounds
    allow = set(f.allow) if f.allow is not None else None
    kinds = set(f.kinds) if f.kinds is not None else None

    def ok(n: Mapping[str, Any]) -> bool:
        if n.get("status") != "up":
            return False
        node = n.get("node")
        if node in exclude or (allow is not None and node not in allow):
            return False
        if kinds is not None and n.get("kind") not in kinds:
            return False
        for key, limit, sign in bounds:  # unknown values fail, as on the BEAM
            v = number(n.get(key))
            if v is None or sign * v > sign * limit:
                return False
        if caps:
            have = set(atom_list(n.get("capabilities")))
            return all(cap in have for cap in caps)
        return True

    return ok


def capability_match(candidate: Mapping[str, Any], c: Mapping[str, Any]) -> float:
    """Share of `prefer_capabilities` the node has (1.0 when none are asked for)."""
    prefer = atom_list(c.get("prefer_capabilities"))
    if not prefer:
        return 1.0
    have = set(atom_list(candidate.get("capabilities")))
    return sum(p in have for p in prefer) / len(prefer)
