"""The clustering agents that tie the skills to the cluster's signals (registered names in
`dspex_cluster.agents.names`) and `run_agent_node`, which hosts all four on one Python node."""

from dspex_cluster.cluster.failure_predictor import FailureConfig, FailurePredictor
from dspex_cluster.cluster.health_monitor import HealthMonitor, HealthPolicy
from dspex_cluster.cluster.load_balancer import LoadBalancer, LoadBalancerConfig
from dspex_cluster.cluster.node import AgentNode, AgentSettings, run_agent_node, start_agent_node
from dspex_cluster.cluster.performance import PerformanceAgent, PerformanceConfig

__all__ = [
    "AgentNode",
    "AgentSettings",
    "FailureConfig",
    "FailurePredictor",
    "HealthMonitor",
    "HealthPolicy",
    "LoadBalancer",
    "LoadBalancerConfig",
    "PerformanceAgent",
    "PerformanceConfig",
    "run_agent_node",
    "start_agent_node",
]
