"""Registered names both runtimes rely on (the Python half of DESIGN.md "Names both sides rely on").

The BEAM half is `DSPEx.Clustering.Names`; keep the two in step.
"""

from __future__ import annotations

# Registered on every Python agent node.
LOAD_BALANCER = "dspex_load_balancer"
HEALTH_MONITOR = "dspex_health_monitor"
FAILURE_PREDICTOR = "dspex_failure_predictor"
PERFORMANCE = "dspex_performance"
PYTHON_AGENTS = (LOAD_BALANCER, HEALTH_MONITOR, FAILURE_PREDICTOR, PERFORMANCE)

# Registered on every BEAM node.
SIGNAL_BUS = "dspex_signal_bus"  # the :pg scope
SIGNAL_RELAY = "dspex_signal_relay"  # subscriptions of processes on other nodes
MEMBERSHIP = "dspex_membership"

# The BEAM module Python calls (over :erpc) to publish a signal on the cluster bus.
CLUSTERING_MODULE = "Elixir.DSPEx.Clustering"

# The module this node exposes to :erpc/:rpc (see dspex_cluster.cluster.node).
EXPOSED_MODULE = "dspex_agents"
