"""Prometheus metrics of a Python node (and of its clustering agents, on an agent node).

Everything is read from the node's own tables at scrape time by a custom collector, on the event
loop's thread (the aiohttp handler calls `render`), so no lock is needed and nothing is counted
twice. Only the placement decision histogram is fed as decisions happen
(`LoadBalancer.decision_observers`). Names follow Prometheus conventions: a `dspex_` prefix,
units in the name, `_total` counters, a histogram for latencies.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dspex_cluster.runtime import Node

if TYPE_CHECKING:
    from dspex_cluster.cluster.node import AgentNode

DECISION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class NodeCollector(Collector):
    """The distribution layer of one `Node`: connections, processes, names."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        n = self.node
        conns = GaugeMetricFamily(
            "dspex_python_connections", "Distribution connections of this node.", labels=["peer"]
        )
        for peer in n.nodes():
            conns.add_metric([str(peer)], 1)
        yield conns
        yield GaugeMetricFamily(
            "dspex_python_processes", "Processes on this Python node.", value=len(n._procs)
        )
        yield GaugeMetricFamily(
            "dspex_python_registered_names", "Registered process names.", value=len(n._names)
        )
        yield GaugeMetricFamily(
            "dspex_python_exposed_modules",
            "Modules reachable with :erpc/:rpc.",
            value=len(n._exposed),
        )


class AgentCollector(Collector):
    """The four clustering agents of an agent node and its signal bus."""

    def __init__(self, agent_node: AgentNode) -> None:
        self.a = agent_node

    def collect(self) -> Iterator[Metric]:
        lb, bus = self.a.load_balancer, self.a.bus
        placed = CounterMetricFamily(
            "dspex_python_placements", "Placements decided by this load balancer.", labels=["node"]
        )
        for node, count in sorted(lb.placements.items()):
            placed.add_metric([str(node)], count)
        yield placed
        yield GaugeMetricFamily(
            "dspex_python_drained_nodes",
            "Nodes this load balancer keeps drained.",
            value=len(lb.drained),
        )
        yield CounterMetricFamily(
            "dspex_python_signals_published", "Signals this node published.", value=bus.published
        )
        yield CounterMetricFamily(
            "dspex_python_signals_dropped",
            "Signals that could not be published (no BEAM node answered).",
            value=bus.dropped,
        )
        yield GaugeMetricFamily(
            "dspex_python_relay_connected",
            "1 while a BEAM signal relay holds this node's subscriptions.",
            value=1 if bus.relay is not None else 0,
        )
        scores = GaugeMetricFamily(
            "dspex_anomaly_score", "Health monitor anomaly score per node (0..1).", labels=["node"]
        )
        alerting = GaugeMetricFamily(
            "dspex_anomaly_alerting", "1 while the node is in anomaly alert.", labels=["node"]
        )
        for node, h in sorted(self.a.health_monitor.anomaly.nodes.items()):
            scores.add_metric([str(node)], float(h.score))
            alerting.add_metric([str(node)], 1 if h.alerting else 0)
        yield scores
        yield alerting
        prob = GaugeMetricFamily(
            "dspex_failure_probability",
            "Predicted probability that the node fails within the horizon.",
            labels=["node"],
        )
        for node, p in sorted(failure_probabilities(self.a).items()):
            prob.add_metric([str(node)], p)
        yield prob


def failure_probabilities(a: AgentNode) -> dict[Any, float]:
    """The failure predictor's current probability per node."""
    preds = a.failure_predictor.predictions()
    return {node: float(p.get("probability", 0.0)) for node, p in preds.items()}


def node_registry(node: Node, agent_node: AgentNode | None = None) -> CollectorRegistry:
    """A registry of its own for this node (several nodes may share a process, as in tests)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    if agent_node is not None:
        registry.register(AgentCollector(agent_node))
        decisions = Histogram(
            "dspex_python_placement_decision_duration_seconds",
            "Time the Python load balancer takes to decide one placement.",
            buckets=DECISION_BUCKETS,
            registry=registry,
        )
        # the agent node's list: a restarted load balancer reports to it as well
        agent_node.decision_observers.append(decisions.observe)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format."""
    return generate_latest(registry)
