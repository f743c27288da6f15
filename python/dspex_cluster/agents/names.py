"""Names the agents use. The registered names both runtimes rely on are spelled out once, in
`dspex_cluster.names` (the BEAM twin is `DSPEx.Clustering.Names`); this module re-exports them
and adds the few the agent layer needs besides."""

from __future__ import annotations

from dspex_cluster.names import (
    FAILURE_PREDICTOR,
    HEALTH_MONITOR,
    LOAD_BALANCER,
    MEMBERSHIP,
    PERFORMANCE,
    PYTHON_AGENT_NAMES,
    SIGNAL_BUS,
)

PYTHON_AGENTS = PYTHON_AGENT_NAMES

# Registered on every BEAM node: holds subscriptions of processes on other nodes (ours).
SIGNAL_RELAY = "dspex_signal_relay"

# The BEAM module Python calls (over :erpc) to publish a signal and read the members.
CLUSTERING_MODULE = "Elixir.DSPEx.Clustering"

# The module a Python agent node exposes to :erpc/:rpc (see dspex_cluster.cluster.node).
EXPOSED_MODULE = "dspex_agents"

__all__ = [
    "CLUSTERING_MODULE",
    "EXPOSED_MODULE",
    "FAILURE_PREDICTOR",
    "HEALTH_MONITOR",
    "LOAD_BALANCER",
    "MEMBERSHIP",
    "PERFORMANCE",
    "PYTHON_AGENTS",
    "SIGNAL_BUS",
    "SIGNAL_RELAY",
]
