"""Placement constraints, with exactly the semantics of the BEAM `PlacementScore.filter/2`.

A candidate is a map with `node`, `kind`, `status` and, from its latest load report, `cpu`,
`memory`, `free_memory_mb`, `agents`, `capabilities` (and `rtt_ms`). Constraints (keyword list or
map, atom or string keys): only `status == up`; `exclude_nodes`, `nodes` (allow-list), `kinds`,
`min_memory_mb` (free memory; unknown fails), `capabilities` (all required), `max_cpu`,
`max_agents` (unknown fails). `prefer_capabilities` does not filter: it is scored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dspex_cluster.cluster.terms import as_mapping, atom_list, number

FILTERS = (
    "exclude_nodes",
    "nodes",
    "kinds",
    "min_memory_mb",
    "capabilities",
    "max_cpu",
    "max_agents",
)


def merged_constraints(agent_spec: Any, constraints: Any) -> dict[str, Any]:
    """`constraints`, over those a map agent spec carries under `constraints` (as the BEAM does)."""
    spec = as_mapping(agent_spec)
    return {**as_mapping(spec.get("constraints")), **as_mapping(constraints)}


def eligible(candidate: Mapping[str, Any], c: Mapping[str, Any]) -> bool:
    n = candidate
    if n.get("status") != "up":
        return False
    if n.get("node") in atom_list(c.get("exclude_nodes")):
        return False
    if c.get("nodes") is not None and n.get("node") not in atom_list(c.get("nodes")):
        return False
    if c.get("kinds") is not None and n.get("kind") not in atom_list(c.get("kinds")):
        return False
    if not _at_least(n.get("free_memory_mb"), c.get("min_memory_mb")):
        return False
    if not _at_most(n.get("cpu"), c.get("max_cpu")):
        return False
    if not _at_most(n.get("agents"), c.get("max_agents")):
        return False
    have = set(atom_list(n.get("capabilities")))
    return all(cap in have for cap in atom_list(c.get("capabilities")))


def capability_match(candidate: Mapping[str, Any], c: Mapping[str, Any]) -> float:
    """Share of `prefer_capabilities` the node has (1.0 when none are asked for)."""
    prefer = atom_list(c.get("prefer_capabilities"))
    if not prefer:
        return 1.0
    have = set(atom_list(candidate.get("capabilities")))
    return sum(p in have for p in prefer) / len(prefer)


def _at_least(value: Any, minimum: Any) -> bool:
    if minimum is None:
        return True
    v = number(value)
    return v is not None and v >= float(minimum)


def _at_most(value: Any, maximum: Any) -> bool:
    if maximum is None:
        return True
    v = number(value)
    return v is not None and v <= float(maximum)
