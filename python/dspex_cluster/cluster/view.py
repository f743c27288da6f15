"""What a Python agent knows about the cluster's nodes, from signals alone: status from
`cluster.node.up|suspect|down` (Membership), load from `cluster.load.report` (LoadReporter)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from dspex_cluster.cluster.terms import as_mapping, number
from dspex_cluster.etf import Atom
from dspex_cluster.signals import Signal


@dataclass
class NodeState:
    node: Atom
    kind: Atom = Atom("beam")
    status: Atom = Atom("up")
    load: dict[str, Any] = field(default_factory=dict)
    reported_at: float | None = None  # monotonic time of the latest load report
    down_at: float | None = None
    downs: int = 0  # how many times it went down while we watched

    def fresh(self, now: float, ttl_factor: float) -> bool:
        """A report younger than `ttl_factor` report intervals (as the BEAM front judges)."""
        if self.reported_at is None:
            return False
        interval = number(self.load.get("interval_ms"), 1000.0) or 1000.0
        return now - self.reported_at <= ttl_factor * interval / 1000.0

    def candidate(self) -> dict[str, Any]:
        """The BEAM candidate shape: the load report merged with membership fields."""
        return {**self.load, "node": self.node, "kind": self.kind, "status": self.status}


class ClusterView:
    def __init__(self) -> None:
        self.nodes: dict[Atom, NodeState] = {}

    def get(self, node: Any) -> NodeState:
        atom = Atom(node)
        state = self.nodes.get(atom)
        if state is None:
            state = self.nodes[atom] = NodeState(atom)
        return state

    def on_load_report(self, signal: Signal) -> NodeState | None:
        data = as_mapping(signal.data)
        node = data.get("node")
        if not isinstance(node, Atom):
            return None
        state = self.get(node)
        state.load = data
        state.reported_at = time.monotonic()
        if isinstance(data.get("kind"), Atom):
            state.kind = data["kind"]
        if state.status != "up" and state.down_at is not None:
            state.status = Atom("up")  # a node that reports again after a down is back
            state.down_at = None
        return state

    def on_membership(self, signal: Signal) -> tuple[NodeState, str] | None:
        """Applies cluster.node.up/suspect/down; returns (node state, previous status)."""
        data = as_mapping(signal.data)
        node = data.get("node")
        if not isinstance(node, Atom):
            return None
        state = self.get(node)
        before = str(state.status)
        if isinstance(data.get("kind"), Atom):
            state.kind = data["kind"]
        event = signal.type.rsplit(".", 1)[-1]
        if event == "up":
            state.status = Atom("up")
            state.down_at = None
        elif event == "suspect" and state.status == "up":
            state.status = Atom("suspect")
        elif event == "down":
            if state.status != "down":
                state.downs += 1
            state.status = Atom("down")
            state.down_at = time.monotonic()
            state.reported_at = None  # its last report says nothing about it now
        return state, before

    def apply_members(self, members: Any) -> list[NodeState]:
        """Statuses from `DSPEx.Clustering.members/0` (after missed signals); the nodes that
        are down."""
        down = []
        for m in members if isinstance(members, list) else []:
            m = as_mapping(m)
            node, status = m.get("node"), m.get("status")
            if not isinstance(node, Atom) or not isinstance(status, Atom):
                continue
            state = self.get(node)
            if isinstance(m.get("kind"), Atom):
                state.kind = m["kind"]
            if status == "down" and state.status != "down":
                state.downs += 1
                state.down_at = time.monotonic()
                state.reported_at = None
            state.status = status
            if status == "down":
                down.append(state)
        return down
