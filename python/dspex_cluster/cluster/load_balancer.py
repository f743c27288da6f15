"""`dspex_load_balancer`: learned workload placement for the cluster.

Requests (GenServer calls; `Node` is an atom, maps may have atom or binary keys):

    {place, AgentSpec, Constraints}
        -> {ok, Node} | {error, no_suitable_nodes}
        Candidates: the BEAM nodes (Python nodes only when `kinds` includes `python`) whose
        status (from `cluster.node.*`) is `up` and which are not drained, with their latest
        `cluster.load.report` when it is fresh (5 report intervals) — a late report counts as
        unknown load, as on the BEAM; reports stopped for `stale_limit_s` drop the node. When
        only drained nodes would do, they are used rather than refusing the work.
        Constraints (keyword
        list or map) filter exactly as `DSPEx.Clustering.PlacementScore.filter/2`:
        exclude_nodes, nodes, kinds, min_memory_mb, capabilities, max_cpu, max_agents;
        `prefer_capabilities` is scored. A map AgentSpec may carry `constraints` (merged under
        Constraints, as the BEAM front does) and `work` (estimated seconds; default 1.0).

    {advise, AgentSpec, Constraints, Candidates}
        -> {ok, Node} | no_advice
        For the BEAM `PlacementAdvisor`: `Candidates` is the list of candidate maps
        `LoadBalancer.place/2` passes to `advise/4` (node, kind, status, cpu, memory,
        free_memory_mb, agents, capabilities, rtt_ms, ...), already filtered by the constraints.
        The answer is always one of those nodes; drained nodes are never chosen (`no_advice`
        when only drained nodes are left: the BEAM falls back, and should exclude drained nodes
        itself — `{drained}` lists them). A BEAM-side advisor:

            def advise(spec, constraints, candidates, budget_ms) do
              GenServer.call({:dspex_load_balancer, py_node},
                             {:advise, spec, constraints, candidates}, budget_ms)
            catch :exit, _ -> :no_advice
            end

    {placement_outcome, Node, TaskFeatures, DurationMs}   (call -> ok, or cast)
        A task placed on Node finished after DurationMs (start to finish); TaskFeatures is a
        map with an optional `work` (estimated seconds at speed 1, default 1.0). The model
        learns the node's speed from work / duration.

    {drain, Node} | {undrain, Node} -> ok         drained   -> [Node]
    stats -> map (per node: status, fresh, drained, speed estimate, runs, placements,
             in_flight, cpu, forecast; totals; decision latency)
    {forecast, Steps} -> #{Node => [cpu forecast 1..Steps]}

Model: `PlacementModel` (per-node speed learned from outcomes, choice by predicted completion)
over the candidates; a node's queue is our placements without an outcome yet plus its busy
share (`scheduler_utilization` when reported, else `cpu`) times its `capacity` (the report's
`capacity`, else its scheduler count from `cluster.health.data`, else 1). When every candidate
is suspected (`cluster.node.suspect`), suspected nodes are considered rather than none.

Cost: candidates are numpy columns (`candidates.py`). `place` reads a per-node table that load
reports and membership signals update one row at a time; `advise` reads the BEAM's candidate
maps one field at a time; filtering and scoring are array operations, never a Python loop per
node (bench/bench_load_balancer.py measures a decision at 10, 100 and 1,000 nodes).

Signals consumed: `cluster.load.report`, `cluster.health.data` (scheduler count),
`cluster.node.*`, `cluster.failure.predicted`
(probability >= drain_probability drains the node, < undrain_probability undrains it), with the
BEAM `Drain`'s guard: at most `max_drained_share` of the BEAM members (not down; at least one
node) are drained at a time — an overloaded host makes every node look sick, and draining them
all would leave nowhere to place. At the limit, a prediction above the least likely drained
node's probability takes its place (that node is undrained); otherwise it is ignored. Drains by
hand (`{drain, Node}`) are not limited and never displaced, as on the BEAM.
Published: `cluster.rebalance.request` with data `%{nodes: [Node], reason: overload |
predicted_failure, plan: [%{from: Node, to: Node, agents: N, reason: ...}]}` when a node's load
(or its forecast) stays above `overload_cpu` for `overload_ticks` forecast ticks while cooler
nodes exist, and when a drained node still hosts agents (at most once per cooldown per node).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dspex_cluster import signals
from dspex_cluster.agents import Action, Agent, BadRequest, FunctionSensor, Param, Sensor
from dspex_cluster.agents.skill import Route
from dspex_cluster.cluster.candidates import (
    Columns,
    NodeTable,
    capability_share,
    columns_of,
    eligible_mask,
    node_mask,
)
from dspex_cluster.cluster.constraints import Filter, merged_constraints
from dspex_cluster.cluster.knobs import Knob, KnobSensor
from dspex_cluster.cluster.terms import as_mapping, number
from dspex_cluster.cluster.view import ClusterView, NodeState
from dspex_cluster.cluster.warm import WarmAgent
from dspex_cluster.etf import Atom
from dspex_cluster.names import CLUSTERING_MODULE, LOAD_BALANCER
from dspex_cluster.runtime import Caller
from dspex_cluster.signals import Signal
from dspex_cluster.skills.forecast import LoadForecaster
from dspex_cluster.skills.placement import PlacementModel

OK = Atom("ok")
ERROR = Atom("error")
NO_SUITABLE = (ERROR, Atom("no_suitable_nodes"))
NO_ADVICE = Atom("no_advice")

log = logging.getLogger(__name__)


@dataclass
class LoadBalancerConfig:
    report_ttl_factor: float = 5.0  # a report is fresh for this many report intervals
    stale_limit_s: float = 30.0  # after this a member whose reports stopped is not a candidate
    forecast_interval_s: float = 1.0
    forecast_steps: int = 5
    overload_cpu: float = 0.85
    overload_ticks: int = 3
    rebalance_cooldown_s: float = 10.0
    drain_probability: float = 0.5
    undrain_probability: float = 0.3
    max_drained_share: float = 0.34  # the BEAM Config default
    in_flight_ttl_s: float = 120.0  # a placement with no outcome stops counting after this
    optimism: float = 0.5  # the default of the knob `exploration_variable`
    drift: float = 0.05
    # a Cognitive Variable (cluster/knobs.py) that, when it exists, sets `optimism` for every
    # load balancer and adapts from placement outcomes (reward: minus seconds per unit of work)
    exploration_variable: str | None = "lb.exploration"
    knob_retry_s: float = 2.0
    knob_feedback_interval_s: float = 5.0


class LoadBalancer(WarmAgent, Agent):
    """The `dspex_load_balancer` agent: learned placement, draining and rebalancing (see the
    module docstring)."""

    def __init__(
        self,
        config: LoadBalancerConfig | None = None,
        decision_observers: list[Callable[[float], None]] | None = None,
        **kwargs: Any,
    ) -> None:
        """`decision_observers`: called with each decision's duration in seconds; a list the
        caller keeps (the agent node's) survives a supervisor restart of this agent."""
        super().__init__(LOAD_BALANCER, **kwargs)
        self.config = config or LoadBalancerConfig()
        self.decision_observers: list[Callable[[float], None]] = (
            decision_observers if decision_observers is not None else []
        )

    def setup(self) -> None:
        """Fresh state for this agent (run at init, and again after a supervisor restart)."""
        c = self.config
        self.view = ClusterView()
        self.model = PlacementModel(1, optimism=c.optimism, drift=c.drift)
        self.exploration = Knob(c.exploration_variable or "", c.optimism, self.model.set_optimism)
        self.index: dict[Atom, int] = {}  # node -> row in the model and the forecaster
        self.drained: dict[Atom, float] = {}  # node -> the probability that drained it
        self.in_flight: dict[Atom, deque[float]] = {}
        self._placed: deque[tuple[float, Atom]] = deque()  # every in-flight entry, oldest first
        self.table = NodeTable()  # per-row columns kept from signals: `place` reads them
        self._pending = np.zeros(0)  # in-flight placements per row (kept with `in_flight`)
        self._row_node: list[Atom] = []
        self.placements: dict[Atom, int] = {}
        self.outcomes: deque[tuple[float, Atom, float]] = deque(maxlen=5000)  # (t, node, ms)
        self.decision_ms: deque[float] = deque(maxlen=5000)
        self.history: dict[Atom, deque[float]] = {}
        self.schedulers: dict[Atom, float] = {}  # parallel slots per node (health data)
        self._forecaster = LoadForecaster(8)
        self._fresh_cpu: dict[Atom, float] = {}
        self._hot: dict[Atom, int] = {}
        self._last_rebalance: dict[Atom, float] = {}
        self.rebalances: list[Signal] = []
        self._warm_start()

    # -- warm restarts (cluster/warm.py): the learned node speeds ---------------------------------

    def warm_version(self) -> Any:
        """Changes whenever the learned state does (a checkpoint is due when it moved)."""
        return (self.model._obs, len(self.index))  # what outcomes taught, not decisions since

    def warm_state(self) -> dict[str, Any]:
        """The learned state to checkpoint (plain data)."""
        return {
            "nodes": [str(n) for n in self._row_node],
            "schedulers": {str(n): v for n, v in self.schedulers.items()},
            "model": self.model.state(),
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        """Resume from a checkpoint made by warm_state."""
        nodes = [Atom(n) for n in state["nodes"]]
        model = state["model"]
        if not isinstance(model, dict) or len(set(nodes)) != len(nodes):
            raise ValueError("malformed load balancer state")
        self.schedulers.update({Atom(n): float(v) for n, v in state["schedulers"].items()})
        for node in nodes:
            self._row(node)
        self.model.restore(model)

    # -- agent wiring --------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        """The cluster signals this agent consumes, with their handlers."""
        return [
            ("cluster.load.report", self.on_load_report),
            ("cluster.node.*", self.on_membership),
            ("cluster.failure.predicted", self.on_prediction),
            ("cluster.health.data", self.on_health),
        ]

    def sensors(self) -> list[Sensor]:
        """This agent's periodic sensors (and the exploration knob, when configured)."""
        c = self.config
        sensors: list[Sensor] = [
            FunctionSensor("forecast", c.forecast_interval_s, self.forecast_tick)
        ]
        if c.exploration_variable:
            knobs = KnobSensor([self.exploration], c.knob_retry_s, c.knob_feedback_interval_s)
            sensors.append(knobs)
        return sensors + self._checkpoint_sensor()

    def actions(self) -> list[Action]:
        """This agent's actions ({cmd, Action, Params})."""
        return [
            Action(
                "place",
                lambda a, spec, constraints: a.place(spec, constraints),
                {"spec": Param("any", default=None), "constraints": Param("any", default=[])},
            ),
            Action("stats", lambda a: a.stats()),
            Action("drain", lambda a, node: a.drain(node), {"node": Param("node", True)}),
            Action("undrain", lambda a, node: a.undrain(node), {"node": Param("node", True)}),
        ]

    async def handle_request(self, request: Any, caller: Caller) -> Any:
        """The calls this agent serves (see the module docstring); a malformed one raises
        BadRequest."""
        if isinstance(request, tuple) and request:
            tag, args = request[0], request[1:]
            if tag == "place" and len(args) == 2:
                return self.place(*args)
            if tag == "advise" and len(args) == 3:
                return self.advise(*args)
            if tag == "placement_outcome" and len(args) == 3:
                return self.outcome(*args)
            if tag == "drain" and len(args) == 1:
                return self.drain(args[0])
            if tag == "undrain" and len(args) == 1:
                return self.undrain(args[0])
            if tag == "forecast" and len(args) == 1:
                steps = args[0]
                if type(steps) is not int or steps < 1:
                    raise BadRequest(
                        f"{{forecast, Steps}}: Steps must be an integer >= 1, got {steps!r:.80}"
                    )
                return self.forecast(steps)
        if request == "stats":
            return self.stats()
        if request == "drained":
            return sorted(self.drained)
        return await super().handle_request(request, caller)

    async def on_relay_up(self, beam: Atom) -> None:
        """Membership signals may have been missed while no relay held our subscriptions."""
        if self.bus is None:
            return
        try:
            members = await self.bus.call_beam(CLUSTERING_MODULE, "members", [])
        except ConnectionError:
            return
        self.view.apply_members(members)
        for state in self.view.nodes.values():
            self._sync(state)

    # -- placement -----------------------------------------------------------------------------

    # Candidates are numpy columns (`candidates`): `place` reads the per-node table kept from
    # load reports and membership signals, `advise` converts the BEAM's candidate maps field by
    # field; filtering and scoring are array operations, never a Python loop per node.

    def place(self, agent_spec: Any, constraints: Any) -> Any:
        """{place, Spec, Constraints}: the node to run an agent on ({ok, Node} or {error,
        no_suitable_nodes})."""
        started = time.perf_counter()
        c = merged_constraints(agent_spec, constraints)
        now = time.monotonic()
        f = Filter.of(c)
        # a late report means unknown load (as on the BEAM), not an absent node
        cols = self.table.columns(now, self.config.report_ttl_factor, self.config.stale_limit_s)
        drained = self._drained_mask(cols)
        result = self._decide(agent_spec, c, f, cols, ~drained, now)
        if result == NO_SUITABLE and drained.any():
            # draining never makes the cluster refuse work: when only drained nodes are left
            result = self._decide(agent_spec, c, f, cols, drained, now)
        self._decided(started)
        return result

    def advise(self, agent_spec: Any, constraints: Any, candidates: Any) -> Any:
        """{advise, Spec, Constraints, Candidates}: the BEAM front's question; {ok, Node} or
        no_advice."""
        started = time.perf_counter()
        c = merged_constraints(agent_spec, constraints)
        f = Filter.of(c)
        cands = candidates if isinstance(candidates, list) else []
        cols = columns_of(cands, self._rows, f.needs_caps)
        result = self._decide(agent_spec, c, f, cols, ~self._drained_mask(cols), time.monotonic())
        self._decided(started)
        return result if result[0] == OK else NO_ADVICE

    def _decided(self, started: float) -> None:
        seconds = time.perf_counter() - started
        self.decision_ms.append(seconds * 1000.0)
        for observe in self.decision_observers:
            observe(seconds)

    def _drained_mask(self, cols: Columns) -> np.ndarray:
        return node_mask(cols, list(self.drained), self.index, len(self.index))

    def _decide(
        self,
        agent_spec: Any,
        c: dict[str, Any],
        f: Filter,
        cols: Columns,
        subset: np.ndarray,
        now: float,
    ) -> Any:
        """The model's choice among the candidates in `subset` that pass the constraints."""
        n = len(self.index)
        # Python nodes host no BEAM agents: only when `kinds` asks for them
        kind_ok = subset if "python" in (f.kinds or ()) else subset & (cols.kind != "python")
        up = cols.status == "up"
        if (kind_ok & up).any():
            eligible = kind_ok & eligible_mask(cols, f, self.index, n, up)
        else:
            # every node is suspected (phi flaps on an overloaded host): better a suspected
            # node than none; the BEAM front, judging by its own view, would place too
            suspect = cols.status == "suspect"
            eligible = kind_ok & eligible_mask(cols, f, self.index, n, suspect)
        sel = np.flatnonzero(eligible)
        if sel.size == 0:
            return NO_SUITABLE
        work = number(as_mapping(agent_spec).get("work")) or number(c.get("work")) or 1.0
        rows = cols.rows[sel]
        used = ("capacity", "cpu", "scheduler_utilization", "memory", "rtt_ms")
        num = {k: cols.num[k][sel] for k in used}
        capacity = num["capacity"]  # the report's, else the scheduler count (health data)
        capacity = np.where(
            np.isnan(capacity) | (capacity == 0), self.table.schedulers[rows], capacity
        )
        cpu = np.clip(_nan_as(num["cpu"], 0.0), 0.0, 1.0)
        # the node's own schedulers when reported: nodes on one host share its CPU figure
        busy = num["scheduler_utilization"]
        busy = np.where(np.isnan(busy), cpu, np.clip(busy, 0.0, 1.0))
        rtt = num["rtt_ms"]
        share = capability_share(cols, f.prefer)
        self._expire(now)
        block = np.zeros((sel.size, 7))
        block[:, 0] = cpu
        block[:, 1] = _nan_as(num["memory"], 0.0)
        block[:, 2] = capacity
        block[:, 4] = self._pending[rows] + busy * capacity  # busy slots + our pending
        block[:, 5] = share[sel] if isinstance(share, np.ndarray) else share
        block[:, 6] = np.where(np.isnan(rtt), 0.5, 1.0 - 1.0 / (1.0 + rtt / 10.0))
        features = np.zeros((n, 7))
        features[:, 2] = 1.0  # capacity of rows that are not candidates (masked out)
        features[rows] = block
        mask = np.zeros(n, dtype=bool)
        mask[rows] = True
        best = self.model.choose(features, {"work": work}, mask)
        if best < 0:
            return NO_SUITABLE
        node = self._row_node[best]
        self.in_flight.setdefault(node, deque()).append(now)
        self._placed.append((now, node))
        self._pending[best] += 1
        self.placements[node] = self.placements.get(node, 0) + 1
        return (OK, node)

    def _row(self, node: Atom) -> int:
        row = self.index.get(node)
        if row is None:
            row = self.index[node] = len(self.index)
            self._row_node.append(node)
            self.table.ensure(row + 1)
            self.table.set_schedulers(row, self.schedulers.get(node, 1.0))
            if row >= self._pending.size:
                grown = np.zeros(max(2 * self._pending.size, 16))
                grown[: self._pending.size] = self._pending
                self._pending = grown
        return row

    def _rows(self, nodes: list[Atom]) -> list[int]:
        rows = list(map(self.index.get, nodes))
        if None in rows:
            rows = [self._row(x) for x in nodes]
        return rows  # type: ignore[return-value]

    def _sync(self, state: NodeState) -> None:
        self.table.sync(self._row(state.node), state)

    def _expire(self, now: float) -> None:
        """Placements older than `in_flight_ttl_s` without an outcome stop counting (each
        entry is looked at once: amortised O(1) per placement)."""
        ttl = self.config.in_flight_ttl_s
        while self._placed and now - self._placed[0][0] > ttl:
            _, node = self._placed.popleft()
            self._in_flight(node, now)

    def _in_flight(self, node: Atom, now: float) -> int:
        q = self.in_flight.get(node)
        if not q:
            return 0
        ttl = self.config.in_flight_ttl_s
        if now - q[0] > ttl:
            while q and now - q[0] > ttl:
                q.popleft()
            self._pending[self.index[node]] = len(q)
        return len(q)

    # -- learning ------------------------------------------------------------------------------

    def outcome(self, node: Any, task_features: Any, duration_ms: Any) -> Any:
        """{placement_outcome, Node, Task, DurationMs}: learn a node speed from one task."""
        ms = number(duration_ms)
        if not isinstance(node, Atom) or ms is None or ms <= 0:
            return (ERROR, Atom("badarg"))
        work = number(as_mapping(task_features).get("work"), 1.0) or 1.0
        row = self._row(node)
        self.model.observe_run(row, work, ms / 1000.0)
        q = self.in_flight.get(node)
        if q:
            q.popleft()
            self._pending[row] = len(q)
        self.outcomes.append((time.monotonic(), node, ms))
        self.exploration.reward(-(ms / 1000.0) / work)
        return OK

    # -- draining ------------------------------------------------------------------------------

    def drain(self, node: Any, probability: float = math.inf) -> Any:
        """By hand: not limited by the guard and never displaced (as the BEAM's `drain/2`)."""
        self.drained[Atom(node)] = probability
        return OK

    def beam_members(self, now: float | None = None) -> int:
        """BEAM members not down, as the BEAM `Drain` counts them (nodes whose reports
        stopped beyond `stale_limit_s` are gone for us, as they are no candidates)."""
        now = time.monotonic() if now is None else now
        limit = self.config.stale_limit_s
        return sum(
            1
            for s in self.view.nodes.values()
            if s.kind == "beam"
            and s.status != "down"
            and (s.reported_at is None or now - s.reported_at <= limit)
        )

    def drain_limit(self) -> int:
        """How many nodes may be drained at once (never the whole cluster)."""
        return max(1, math.floor(self.beam_members() * self.config.max_drained_share))

    def guarded_drain(self, node: Atom, p: float) -> bool:
        """Drains `node` for a predicted failure of probability `p` within the guard; whether
        it is drained now."""
        if node in self.drained or len(self.drained) < self.drain_limit():
            self.drained[node] = p  # a new prediction replaces the old one, as on the BEAM
            return True
        # at the limit: the least likely to fail among the drained makes room, if below p
        weakest = min(self.drained, key=self.drained.__getitem__)
        if self.drained[weakest] < p:
            del self.drained[weakest]
            self.drained[node] = p
            return True
        log.info("drain of %s (p=%.3f) held: %d node(s) drained", node, p, len(self.drained))
        return False

    def undrain(self, node: Any) -> Any:
        """{undrain, Node}: place work on the node again."""
        self.drained.pop(Atom(node), None)
        return OK

    # -- signals -------------------------------------------------------------------------------

    def on_load_report(self, signal: Signal) -> None:
        """A cluster.load.report signal: the node's current load."""
        state = self.view.on_load_report(signal)
        if state is not None:
            self._sync(state)
            cpu = number(state.load.get("cpu"))
            if cpu is not None:
                self._fresh_cpu[state.node] = cpu

    def on_health(self, signal: Signal) -> None:
        """A BEAM node's scheduler count (its parallel slots) from its health data."""
        node = signal.get("node")
        per = as_mapping(signal.get("scheduler_utilization")).get("per_scheduler")
        if isinstance(node, Atom) and isinstance(per, list) and per:
            self.schedulers[node] = float(len(per))
            row = self.index.get(node)
            if row is not None:
                self.table.set_schedulers(row, float(len(per)))

    def on_membership(self, signal: Signal) -> None:
        """cluster.node.* signals: nodes joining, suspected and leaving."""
        changed = self.view.on_membership(signal)
        if changed is not None:
            state, before = changed
            self._sync(state)
            if before == "down" and state.status == "up":
                self.drained.pop(state.node, None)  # a node back from the dead starts afresh

    def on_prediction(self, signal: Signal) -> None:
        """cluster.failure.predicted: drain a node likely to fail."""
        data = as_mapping(signal.data)
        node, p = data.get("node"), number(data.get("probability"))
        if not isinstance(node, Atom) or p is None:
            return
        if p >= self.config.drain_probability:
            self.guarded_drain(node, p)
        elif p < self.config.undrain_probability:
            self.drained.pop(node, None)

    # -- load history, forecasts, rebalancing --------------------------------------------------

    def forecast_tick(self, _agent: Agent) -> list[Signal]:
        """The forecast sensor: feed the latest CPU loads, plan a rebalance if nodes stay
        overloaded."""
        n = len(self.index)
        if n == 0:
            return []
        if n > self._forecaster.n_nodes:
            self._forecaster = LoadForecaster(max(2 * n, 8))  # history restarts: rare event
        loads = np.full(self._forecaster.n_nodes, np.nan)
        for node, cpu in self._fresh_cpu.items():
            loads[self.index[node]] = cpu
            self.history.setdefault(node, deque(maxlen=600)).append(cpu)
        self._fresh_cpu.clear()
        self._forecaster.update(loads)
        return self._rebalance_plan()

    def forecast(self, steps: int) -> dict[Atom, list[float]]:
        """{forecast, Steps}: each node's CPU forecast for the next `steps` ticks (1..60)."""
        steps = max(1, min(steps, 60))
        path = self._forecaster.forecast_path(steps)  # (steps, nodes)
        return {
            node: [round(float(v), 4) for v in path[:, row]]
            for node, row in self.index.items()
            if node in self.history
        }

    def _rebalance_plan(self) -> list[Signal]:
        c = self.config
        now = time.monotonic()
        fresh = {
            s.node: s
            for s in self.view.nodes.values()
            if s.fresh(now, c.report_ttl_factor) and s.status == "up"
        }
        if not fresh:
            return []
        next_cpu = self._forecaster.forecast(1)
        hot: list[Atom] = []
        for node, s in fresh.items():
            cpu = number(s.load.get("cpu"), 0.0) or 0.0
            ahead = float(next_cpu[self.index[node]]) if node in self.index else cpu
            level = max(cpu, ahead if math.isfinite(ahead) else cpu)
            self._hot[node] = self._hot.get(node, 0) + 1 if level >= c.overload_cpu else 0
            if self._hot[node] >= c.overload_ticks:
                hot.append(node)
        drained = [n for n in fresh if n in self.drained]

        def cpu_of(n: Atom) -> float:
            return number(fresh[n].load.get("cpu"), 1.0) or 0.0

        spare = sorted((n for n in fresh if n not in self.drained), key=cpu_of)
        cool = c.overload_cpu - 0.2
        cool_targets = [n for n in spare if n not in hot and cpu_of(n) < cool]
        plan: list[dict[str, Any]] = []
        moved: list[Atom] = []
        for node, reason in [(n, "predicted_failure") for n in drained] + [
            (n, "overload") for n in hot if n not in drained
        ]:
            if now - self._last_rebalance.get(node, -math.inf) < c.rebalance_cooldown_s:
                continue
            # a drained node's work may go to any node not drained (least busy first), a hot
            # node's only to cool ones
            to = spare if reason == "predicted_failure" else cool_targets
            if not to:
                continue
            agents = int(number(fresh[node].load.get("agents"), 0.0) or 0)
            cpu = number(fresh[node].load.get("cpu"), 0.0) or 0.0
            # a drained node sheds everything; a hot one the share that brings it down to `cool`
            share = 1.0 if reason == "predicted_failure" else (cpu - cool) / max(cpu, 1e-9)
            count = max(1, math.ceil(agents * share)) if agents else 0
            if count <= 0:
                continue
            for i, k in enumerate(_split(count, len(to))):
                if k:
                    plan.append({"from": node, "to": to[i], "agents": k, "reason": Atom(reason)})
            moved.append(node)
            self._last_rebalance[node] = now
        if not plan:
            return []
        reason = Atom("predicted_failure") if set(moved) <= set(drained) else Atom("overload")
        signal = signals.rebalance_request(moved, reason, plan, origin=str(self.node.name))
        self.rebalances.append(signal)
        return [signal]

    # -- introspection -------------------------------------------------------------------------

    def stats(self) -> dict[Atom, Any]:
        """`stats`: learned node speeds, in-flight work, CPU and forecast per node; totals and
        decision latency."""
        now = time.monotonic()
        next_cpu = self._forecaster.forecast(1) if self.index else np.zeros(0)
        speeds = self.model.speed
        nodes = {}
        for node, row in self.index.items():
            s = self.view.nodes.get(node)
            nodes[node] = {
                Atom("status"): s.status if s else Atom("unknown"),
                Atom("fresh"): bool(s and s.fresh(now, self.config.report_ttl_factor)),
                Atom("drained"): node in self.drained,
                Atom("speed"): round(float(speeds[row]), 4) if row < len(speeds) else 1.0,
                Atom("placements"): self.placements.get(node, 0),
                Atom("in_flight"): self._in_flight(node, now),
                Atom("cpu"): number(s.load.get("cpu")) if s else None,
                Atom("cpu_forecast"): (
                    round(float(next_cpu[row]), 4) if node in self.history else None
                ),
            }
        ms = np.array(self.decision_ms) if self.decision_ms else np.zeros(1)
        return {
            Atom("nodes"): nodes,
            Atom("placements"): sum(self.placements.values()),
            Atom("outcomes"): len(self.outcomes),
            Atom("drained"): sorted(self.drained),
            Atom("rebalance_requests"): len(self.rebalances),
            Atom("decision_ms_p50"): round(float(np.percentile(ms, 50)), 4),
            Atom("decision_ms_p99"): round(float(np.percentile(ms, 99)), 4),
        }


def _split(total: int, parts: int) -> list[int]:
    """`total` as evenly as possible over `parts` (earlier parts get the remainder)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _nan_as(a: np.ndarray, value: float) -> np.ndarray:
    return np.where(np.isnan(a), value, a)
