"""A Python agent node: a hidden Erlang node with the four clustering agents registered.

    await run_agent_node("py1@127.0.0.1", cookie, join=["beam1@127.0.0.1"])

starts the node, registers `dspex_load_balancer`, `dspex_health_monitor`,
`dspex_failure_predictor` and `dspex_performance` under one `Supervisor` (`dspex_agents_sup`,
one_for_one: an agent that crashes is restarted with fresh state and registered again; more than
`max_restarts` in `max_seconds` stops the node's agents), joins the `join` BEAM nodes (retrying
until one answers), subscribes the agents' signal routes through a BEAM signal relay (failing
over between BEAM nodes) and runs until cancelled; then it stops everything it started.

It also exposes the module `dspex_agents` to `:erpc` / `:rpc`:
`:erpc.call(py, :dspex_agents, :names, [])` (the agents running now), `…:stats, []` (load
balancer), `…:predictions, []`, `…:scores, []`, `…:report, []`.

`start_agent_node(...)` is the same without the waiting: it returns an `AgentNode` (node, bus,
agents) to stop with `await agent_node.stop()`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from dspex_cluster.agents import ClusterBus, HostVitalsSensor
from dspex_cluster.cluster.failure_predictor import FailureConfig, FailurePredictor
from dspex_cluster.cluster.health_monitor import HealthMonitor, HealthPolicy
from dspex_cluster.cluster.load_balancer import LoadBalancer, LoadBalancerConfig
from dspex_cluster.cluster.performance import PerformanceAgent, PerformanceConfig
from dspex_cluster.cluster.warm import WarmAgent, default_store
from dspex_cluster.etf import Atom
from dspex_cluster.names import (
    EXPOSED_MODULE,
    FAILURE_PREDICTOR,
    HEALTH_MONITOR,
    LOAD_BALANCER,
    PERFORMANCE,
    PYTHON_AGENT_NAMES,
)
from dspex_cluster.runtime import ChildSpec, Node, Supervisor
from dspex_cluster.runtime.tls import TlsOptions

AGENTS_SUPERVISOR = "dspex_agents_sup"

if TYPE_CHECKING:
    from dspex_cluster.ops import OpsServer

log = logging.getLogger("dspex_cluster.cluster")
WarmAgentT = TypeVar("WarmAgentT", bound=WarmAgent)


@dataclass
class AgentSettings:
    """Tunables of the four agents (defaults suit a development cluster)."""

    load_balancer: LoadBalancerConfig = field(default_factory=LoadBalancerConfig)
    health: HealthPolicy = field(default_factory=HealthPolicy)
    failure: FailureConfig = field(default_factory=FailureConfig)
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)
    host_vitals_interval_s: float | None = 2.0  # None: do not report this host's vitals
    # warm restarts (cluster/warm.py): learned state kept under <state_dir>/<node name>/;
    # None: $DSPEX_STATE_DIR, and when that is unset too the agents start cold, saving nothing
    state_dir: str | None = None
    checkpoint_interval_s: float = 5.0
    max_restarts: int = 5  # the agents' supervisor: at most this many restarts ...
    max_seconds: float = 30.0  # ... within this many seconds


@dataclass
class AgentNode:
    """A running agent node: the node, its cluster bus and the supervisor of its four agents.
    The agent properties return the agent running now (a restarted agent is a new object)."""

    node: Node
    bus: ClusterBus
    supervisor: Supervisor
    ops: OpsServer | None = None  # /metrics and the dashboard, when ports were given
    # the load balancer's decision observers (the /metrics histogram), kept across its restarts
    decision_observers: list[Callable[[float], None]] = field(default_factory=list)

    def _agent(self, name: str) -> Any:
        agent = self.supervisor.child(name)
        if agent is None:
            raise LookupError(f"agent {name} is not running (being restarted, or stopped)")
        return agent

    @property
    def load_balancer(self) -> LoadBalancer:
        """The `dspex_load_balancer` agent."""
        return self._agent(LOAD_BALANCER)  # type: ignore[no-any-return]

    @property
    def health_monitor(self) -> HealthMonitor:
        """The `dspex_health_monitor` agent."""
        return self._agent(HEALTH_MONITOR)  # type: ignore[no-any-return]

    @property
    def failure_predictor(self) -> FailurePredictor:
        """The `dspex_failure_predictor` agent."""
        return self._agent(FAILURE_PREDICTOR)  # type: ignore[no-any-return]

    @property
    def performance(self) -> PerformanceAgent:
        """The `dspex_performance` agent."""
        return self._agent(PERFORMANCE)  # type: ignore[no-any-return]

    async def serve_ops(
        self,
        metrics_port: int | None = None,
        dashboard_port: int | None = None,
        host: str = "127.0.0.1",
    ) -> OpsServer:
        """Start `/metrics` and/or the live dashboard on these ports (0: any free port)."""
        from dspex_cluster.ops import OpsServer  # aiohttp and prometheus_client only when used

        ops = OpsServer(
            self.node, self, metrics_port=metrics_port, dashboard_port=dashboard_port, host=host
        )
        await ops.start()
        self.ops = ops
        return ops

    def running_agents(self) -> list[str]:
        """The names of the agents registered and running now, in start order."""
        return [n for n in PYTHON_AGENT_NAMES if self.node.whereis(n) is not None]

    async def stop(self) -> None:
        """Stop the bus, the agents (last started first) and the node."""
        if self.ops is not None:
            await self.ops.stop()
        await self.bus.stop()
        await self.node.stop()


def agent_specs(
    settings: AgentSettings,
    bus: ClusterBus,
    current_load_balancer: Callable[[], LoadBalancer | None],
    warm: Callable[[Any], Any] = lambda agent: agent,
    decision_observers: list[Callable[[float], None]] | None = None,
) -> list[ChildSpec]:
    """The child specs of the four agents (each restart builds a fresh agent, which `warm`
    gives the node's checkpoint store, so a restarted agent resumes from its last checkpoint);
    the performance agent reads the load balancer running at the time through
    `current_load_balancer`."""
    s = settings

    def health() -> HealthMonitor:
        sensors = [HostVitalsSensor(s.host_vitals_interval_s)] if s.host_vitals_interval_s else []
        return warm(HealthMonitor(s.health, bus=bus, sensors=sensors))  # type: ignore[no-any-return]

    return [
        ChildSpec(
            LOAD_BALANCER,
            lambda: warm(LoadBalancer(s.load_balancer, decision_observers, bus=bus)),
            name=LOAD_BALANCER,
        ),
        ChildSpec(HEALTH_MONITOR, health, name=HEALTH_MONITOR),
        ChildSpec(
            FAILURE_PREDICTOR,
            lambda: warm(FailurePredictor(s.failure, bus=bus)),
            name=FAILURE_PREDICTOR,
        ),
        ChildSpec(
            PERFORMANCE,
            lambda: PerformanceAgent(s.performance, load_balancer=current_load_balancer, bus=bus),
            name=PERFORMANCE,
        ),
    ]


async def start_agent_node(
    name: str,
    cookie: str | None = None,
    join: list[str] | tuple[str, ...] = (),
    hidden: bool = True,
    *,
    cookie_file: str | os.PathLike[str] | None = None,
    epmd_port: int | None = None,
    settings: AgentSettings | None = None,
    net_ticktime: float = 60.0,
    dist_port: int = 0,
    tls: TlsOptions | None = None,
) -> AgentNode:
    """Start the node and its agents; returns at once (the relay is acquired in the background;
    `await agent_node.bus.wait_relay()` waits for it)."""
    s = settings or AgentSettings()
    node = Node(
        name,
        cookie,
        hidden,
        epmd_port,
        cookie_file=cookie_file,
        net_ticktime=net_ticktime,
        listen_port=dist_port,
        tls=tls,
    )
    await node.start()
    try:
        bus = ClusterBus(node, list(join))
        bus.start()
        store = default_store(str(node.name), s.state_dir)

        def warm(agent: WarmAgentT) -> WarmAgentT:
            agent.warm_store = store
            agent.checkpoint_interval_s = s.checkpoint_interval_s
            return agent

        supervisor: Supervisor | None = None
        observers: list[Callable[[float], None]] = []

        def current_load_balancer() -> LoadBalancer | None:
            found = supervisor.child(LOAD_BALANCER) if supervisor is not None else None
            return found if isinstance(found, LoadBalancer) else None

        supervisor = Supervisor(
            agent_specs(s, bus, current_load_balancer, warm, observers),
            strategy="one_for_one",
            max_restarts=s.max_restarts,
            max_seconds=s.max_seconds,
        )
        await node.spawn(supervisor, name=AGENTS_SUPERVISOR)
    except BaseException:
        await node.stop()
        raise
    agent_node = AgentNode(node, bus, supervisor, decision_observers=observers)
    _expose(agent_node)
    return agent_node


async def run_agent_node(
    name: str,
    cookie: str | None,
    join: list[str],
    hidden: bool = True,
    *,
    cookie_file: str | os.PathLike[str] | None = None,
    epmd_port: int | None = None,
    settings: AgentSettings | None = None,
    ready: asyncio.Event | None = None,
    net_ticktime: float = 60.0,
    metrics_port: int | None = None,
    dashboard_port: int | None = None,
    http_host: str = "127.0.0.1",
    on_ready: Callable[[AgentNode], None] | None = None,
    dist_port: int = 0,
    tls: TlsOptions | None = None,
) -> None:
    """Run a Python agent node until cancelled (see the module docstring). `cookie` None reads
    `cookie_file`, else $DSPEX_COOKIE_FILE, $DSPEX_COOKIE, $ERLANG_COOKIE, ~/.erlang.cookie. `ready`
    is set (and `on_ready` called) once the agents are registered and the metrics/dashboard
    ports, if any, listen. `tls`: distribution over mutual TLS (`dspex_cluster.runtime.tls`)."""
    agent_node = await start_agent_node(
        name,
        cookie,
        join,
        hidden,
        cookie_file=cookie_file,
        epmd_port=epmd_port,
        settings=settings,
        net_ticktime=net_ticktime,
        dist_port=dist_port,
        tls=tls,
    )
    try:
        if metrics_port is not None or dashboard_port is not None:
            await agent_node.serve_ops(metrics_port, dashboard_port, http_host)
    except BaseException:
        await agent_node.stop()
        raise
    log.info("agent node %s up: %s; joining %s", name, ", ".join(PYTHON_AGENT_NAMES), join or "-")
    if on_ready is not None:
        on_ready(agent_node)
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()  # until cancelled
    finally:
        await agent_node.stop()


def _expose(a: AgentNode) -> None:
    # each call reads the agent running now: a restarted agent is a new object
    def names() -> list[Atom]:
        return [Atom(n) for n in a.running_agents()]

    a.node.expose(
        EXPOSED_MODULE,
        {
            "names": names,
            "stats": lambda: a.load_balancer.stats(),
            "predictions": lambda: a.failure_predictor.predictions(),
            "scores": lambda: a.health_monitor.anomaly.scores(),
            "report": lambda: a.performance.report(),
        },
    )


__all__ = [
    "AGENTS_SUPERVISOR",
    "AgentNode",
    "AgentSettings",
    "agent_specs",
    "run_agent_node",
    "start_agent_node",
]
