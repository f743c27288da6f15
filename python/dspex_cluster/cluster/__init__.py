"""The clustering agents that tie the skills to the cluster's signals, and `run_agent_node`, which
hosts all four on one Python node (names in `dspex_cluster.names`).

What the BEAM side can send (GenServer calls unless noted; `Node` an atom; maps may have atom or
binary keys; keyword lists work where maps do):

  {dspex_load_balancer, Py}
    {place, Spec, Constraints}              -> {ok, Node} | {error, no_suitable_nodes}
    {advise, Spec, Constraints, Candidates} -> {ok, Node} | no_advice   (PlacementAdvisor)
    {placement_outcome, Node, #{work => W}, DurationMs} -> ok   (call or cast)
    {drain, Node} | {undrain, Node} -> ok;  drained -> [Node];  stats -> map
    {forecast, Steps} -> #{Node => [cpu]}
  {dspex_health_monitor, Py}     scores -> #{Node => map};  {explain, Node} -> #{Feature => share}
  {dspex_failure_predictor, Py}  predictions -> #{Node => map};  {predict, Node} -> map
  {dspex_performance, Py}        report -> map
  any agent                      {cmd, Action, Params} -> {ok, R} | {error, Why};  state -> map
  :erpc.call(Py, dspex_agents, names | stats | predictions | scores | report, [])

Signals consumed: cluster.load.report, cluster.health.data, cluster.health.anomaly,
cluster.node.up|suspect|down, cluster.failure.predicted (and cluster.** for performance).
Signals published (scope cluster, source dspex://<py node>/<agent>, subject the node):
  cluster.health.anomaly    %{node, score, rarity, deviation, threshold, features, values}
  cluster.health.alert      %{node, severity: warning|critical|info, message, score}
  cluster.failure.predicted %{node, probability, horizon_s, time_to_failure_s | nil,
                              confidence, reasons: %{silence, memory, leak, saturation,
                              anomaly, history}}
  cluster.rebalance.request %{nodes, reason: overload|predicted_failure,
                              plan: [%{from, to, agents, reason}]}
  cluster.performance.report (see `performance`)
  cluster.health.data       this Python host's vitals (kind: :python)
Each module's docstring gives the details.
"""

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
