"""Registered names both sides of the cluster rely on (the BEAM twin lives in the Elixir app).

Keep this the only place these strings are spelled out on the Python side.
"""

from __future__ import annotations

# Registered on every Python agent node.
LOAD_BALANCER = "dspex_load_balancer"
HEALTH_MONITOR = "dspex_health_monitor"
FAILURE_PREDICTOR = "dspex_failure_predictor"
PERFORMANCE = "dspex_performance"
PYTHON_AGENT_NAMES = (LOAD_BALANCER, HEALTH_MONITOR, FAILURE_PREDICTOR, PERFORMANCE)

# Registered on every BEAM node.
SIGNAL_BUS = "dspex_signal_bus"  # also the :pg scope name
MEMBERSHIP = "dspex_membership"
NODE_DISCOVERY = "dspex_node_discovery"
BEAM_NAMES = (SIGNAL_BUS, MEMBERSHIP, NODE_DISCOVERY)
# What a joining Python node sends to MEMBERSHIP and NODE_DISCOVERY of the BEAM nodes it joins:
# {dspex_hello, Node, #{kind => python}}. Hidden nodes that never say it (erl_call, C nodes,
# remote shells) get no message from the BEAM side.
HELLO = "dspex_hello"
# Registered on every BEAM node: holds the signal subscriptions of processes on other nodes.
SIGNAL_RELAY = "dspex_signal_relay"

# The BEAM module Python calls over :erpc to publish a signal and read the members.
CLUSTERING_MODULE = "Elixir.DSPEx.Clustering"

# The module a Python agent node exposes to :erpc/:rpc (see dspex_cluster.cluster.node).
EXPOSED_MODULE = "dspex_agents"
