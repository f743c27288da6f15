"""What the live dashboard shows, gathered on an agent node.

`DashboardState` samples, twice a second, the members as a live BEAM node sees them
(`LoadBalancer.candidates/0`: membership joined with the latest load reports, `Drain.drained/0`,
and `DSPEx.Clustering.State.status/0` when the application has it), this node's placements and
decision latency, and once a second the anomaly scores and failure predictions into short time
series. `SignalFeed` is a process subscribed to `cluster.**` that keeps the latest signals.
Subscribers (the SSE streams) get each snapshot and each signal through a bounded queue; a slow
client loses old events rather than holding memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from dspex_cluster.etf import Atom, Pid
from dspex_cluster.runtime import GenServer, RpcError
from dspex_cluster.signals import InvalidSignal, Signal

if TYPE_CHECKING:
    from dspex_cluster.cluster.node import AgentNode

log = logging.getLogger("dspex_cluster.ops")

SIGNAL = Atom("signal")
SERIES_POINTS = 180  # per node and series: three minutes at one point a second
SIGNALS_KEPT = 200
MAX_TEXT = 300  # characters of a signal's data shown
CLIENT_QUEUE = 256
MAX_VARIABLES = 50


def jsonable(term: Any, depth: int = 0) -> Any:
    """An Erlang term as JSON data (atoms and binaries as strings, tuples as lists), bounded."""
    if depth > 6:
        return "…"
    if term is None or isinstance(term, bool | int | str):
        return term
    if isinstance(term, float):
        return term if term == term and abs(term) != float("inf") else None
    if isinstance(term, bytes):
        return term[:MAX_TEXT].decode("utf-8", "replace")
    if isinstance(term, dict):
        return {str(jsonable(k, depth + 1)): jsonable(v, depth + 1) for k, v in term.items()}
    if isinstance(term, list | tuple):
        return [jsonable(v, depth + 1) for v in term[:50]]
    if isinstance(term, Pid):
        return str(term)
    return repr(term)[:MAX_TEXT]


class SignalFeed(GenServer):
    """Subscribed to every `cluster.**` signal through the node's bus; hands each to `state`."""

    def __init__(self, state: DashboardState) -> None:
        super().__init__()
        self.state = state

    async def init(self) -> None:
        await self.state.agent_node.bus.subscribe(self.pid, "cluster.**")

    async def handle_info(self, message: Any) -> None:
        if isinstance(message, tuple) and len(message) == 2 and message[0] == SIGNAL:
            try:
                signal = Signal.from_term(message[1])
            except InvalidSignal:
                return
            self.state.add_signal(signal)


class DashboardState:
    """The dashboard's data and its live subscribers (see the module docstring)."""

    def __init__(
        self,
        agent_node: AgentNode,
        snapshot_interval_s: float = 0.5,
        series_interval_s: float = 1.0,
    ) -> None:
        self.agent_node = agent_node
        self.node = agent_node.node
        self.snapshot_interval_s = snapshot_interval_s
        self.series_interval_s = series_interval_s
        self.members: list[dict[str, Any]] = []
        self.source: str | None = None  # the BEAM node the members came from
        self.state_status: Any = None
        self.state_checked = 0.0
        self.advisor: dict[str, Any] = {}
        self.variables: list[dict[str, Any]] = []
        self._variable_names: dict[str, Any] = {}  # shown name -> the name term on the BEAM
        self._atom_valued: set[str] = set()  # variables whose value is an atom
        self.anomaly: dict[str, deque[tuple[float, float]]] = {}
        self.failure: dict[str, deque[tuple[float, float]]] = {}
        self.signals: deque[dict[str, Any]] = deque(maxlen=SIGNALS_KEPT)
        self.signals_seen = 0
        self.clients: set[asyncio.Queue[tuple[str, str]]] = set()
        self._task: asyncio.Task[None] | None = None
        self._feed_pid: Pid | None = None

    async def start(self) -> None:
        feed = SignalFeed(self)
        self._feed_pid = await self.node.spawn(feed, name="dspex_dashboard_feed")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="dashboard")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._feed_pid is not None:
            await self.agent_node.bus.unsubscribe_all(self._feed_pid)
            self.node.exit(self._feed_pid, Atom("shutdown"))

    # -- sampling ------------------------------------------------------------------------------

    async def _run(self) -> None:
        last_series = 0.0
        while True:
            try:
                await self.refresh_members()
                now = time.time()
                if now - last_series >= self.series_interval_s:
                    last_series = now
                    self.sample_series(now)
                self.broadcast("snapshot", json.dumps(self.snapshot()))
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad sample must not stop the page's updates
                log.warning("dashboard sample failed", exc_info=True)
            await asyncio.sleep(self.snapshot_interval_s)

    def _beam_nodes(self) -> Iterator[Atom]:
        bus = self.agent_node.bus
        seen = set()
        for n in [bus.relay, *bus.known, *self.node.nodes()]:
            if n is not None and n not in seen:
                seen.add(n)
                yield n

    async def refresh_members(self) -> None:
        """Members from the first BEAM node that answers (relay first)."""
        for beam in self._beam_nodes():
            try:
                cands = await self.node.rpc(
                    beam, "Elixir.DSPEx.Clustering.LoadBalancer", "candidates", [], timeout=1.0
                )
                drained = await self.node.rpc(
                    beam, "Elixir.DSPEx.Clustering.Drain", "drained", [], timeout=1.0
                )
                advisor = await self.node.rpc(
                    beam, "Elixir.DSPEx.Clustering.PythonAdvisor", "stats", [], timeout=1.0
                )
                await self._refresh_state(beam)
                await self._refresh_variables(beam)
            except Exception as err:  # down, slow or without the app: try the next one
                log.debug("dashboard: %s did not answer: %s", beam, err)
                continue
            drained_set = {str(d) for d in drained}
            self.members = [member_row(c, drained_set) for c in cands]
            self.source = str(beam)
            self.advisor = {
                k: v for k, v in jsonable(advisor).items() if isinstance(v, int | float)
            }
            return
        self.source = None

    async def _refresh_state(self, beam: Atom) -> None:
        """`DSPEx.Clustering.State.status/0` when it exists (rechecked every 10 s when not)."""
        if self.state_status is None and time.monotonic() - self.state_checked < 10.0:
            return
        self.state_checked = time.monotonic()
        try:
            status = await self.node.rpc(
                beam, "Elixir.DSPEx.Clustering.State", "status", [], timeout=1.0
            )
        except RpcError:  # undef: the application has no State (yet)
            self.state_status = None
            return
        self.state_status = jsonable(status)

    async def _refresh_variables(self, beam: Atom) -> None:
        """Cognitive Variables (ids `{variable, Name}` in the migration registry) and their
        info, when the application has them."""
        try:
            ids = await self.node.rpc(
                beam, "Elixir.DSPEx.Clustering.Migration.Registry", "ids", [], timeout=1.0
            )
        except RpcError:  # no Cognitive Variables in this application
            self.variables = []
            return
        names = [i[1] for i in ids if isinstance(i, tuple) and len(i) == 2 and i[0] == "variable"]
        rows, shown, atoms = [], {}, set()
        for name in names[:MAX_VARIABLES]:
            try:
                reply = await self.node.rpc(
                    beam, "Elixir.DSPEx.Clustering.Variable", "info", [name], timeout=1.0
                )
            except RpcError:
                continue
            if not (isinstance(reply, tuple) and reply[0] == "ok"):
                continue
            info = reply[1]
            label = str(jsonable(name))
            shown[label] = name
            if isinstance(info.get(Atom("value")), Atom):
                atoms.add(label)
            spec = info.get(Atom("spec"), {})
            rows.append(
                {
                    "name": label,
                    "value": jsonable(info.get(Atom("value"))),
                    "version": info.get(Atom("version")),
                    "type": str(spec.get(Atom("type"), "?")) if isinstance(spec, dict) else "?",
                    "node": str(info.get(Atom("node"))),
                }
            )
        self.variables = sorted(rows, key=lambda r: r["name"])
        self._variable_names = shown
        self._atom_valued = atoms

    async def set_variable(self, label: str, value: Any) -> dict[str, Any]:
        """`Variable.set/2` on a live BEAM node: the variable's own validation decides.
        `value` is JSON data; a string for a variable whose value is an atom is sent as one."""
        name = self._variable_names.get(label)
        if name is None:
            return {"ok": False, "error": f"no variable {label!r}"}
        term: Any = value
        if isinstance(value, str):
            term = Atom(value) if label in self._atom_valued else value.encode()
        elif isinstance(value, dict):
            term = {k.encode(): v for k, v in value.items()}
        for beam in self._beam_nodes():
            try:
                reply = await self.node.rpc(
                    beam, "Elixir.DSPEx.Clustering.Variable", "set", [name, term], timeout=3.0
                )
            except Exception as err:  # that node is gone: the next one
                log.debug("set_variable via %s: %s", beam, err)
                continue
            if isinstance(reply, tuple) and reply[0] == "ok":
                return {"ok": True, "version": reply[1]}
            reason = reply[1] if isinstance(reply, tuple) and len(reply) > 1 else reply
            return {"ok": False, "error": json.dumps(jsonable(reason), default=str)[:MAX_TEXT]}
        return {"ok": False, "error": "no BEAM node answered"}

    def sample_series(self, now: float) -> None:
        a = self.agent_node
        for node, h in a.health_monitor.anomaly.nodes.items():
            self.anomaly.setdefault(str(node), deque(maxlen=SERIES_POINTS)).append(
                (round(now, 1), round(float(h.score), 4))
            )
        for node, pred in a.failure_predictor.predictions().items():
            self.failure.setdefault(str(node), deque(maxlen=SERIES_POINTS)).append(
                (round(now, 1), round(float(pred.get(Atom("probability"), 0.0)), 4))
            )

    # -- signals and subscribers ---------------------------------------------------------------

    def add_signal(self, signal: Signal) -> None:
        self.signals_seen += 1
        row = {
            "type": signal.type,
            "source": signal.source,
            "subject": signal.subject,
            "time": signal.time,
            "priority": signal.priority,
            "data": json.dumps(jsonable(signal.data), default=str)[:MAX_TEXT],
        }
        self.signals.append(row)
        self.broadcast("signal", json.dumps(row))

    def subscribe(self) -> asyncio.Queue[tuple[str, str]]:
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(CLIENT_QUEUE)
        self.clients.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[tuple[str, str]]) -> None:
        self.clients.discard(queue)

    def broadcast(self, event: str, data: str) -> None:
        for queue in self.clients:
            if queue.full():  # a slow client: drop its oldest event
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait((event, data))

    def snapshot(self) -> dict[str, Any]:
        lb = self.agent_node.load_balancer
        ms = sorted(lb.decision_ms)
        return {
            "time": time.time(),
            "node": str(self.node.name),
            "source": self.source,
            "members": self.members,
            "placements": {str(n): c for n, c in sorted(lb.placements.items())},
            "decision_ms": {
                "count": len(ms),
                "p50": ms[len(ms) // 2] if ms else None,
                "p99": ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else None,
            },
            "advisor": self.advisor,
            "anomaly": {n: list(s) for n, s in self.anomaly.items()},
            "failure": {n: list(s) for n, s in self.failure.items()},
            "state": self.state_status,
            "variables": self.variables,
            "signals_seen": self.signals_seen,
        }


def member_row(candidate: Any, drained: set[str]) -> dict[str, Any]:
    """One member for the page: node, kind, status, phi, cpu, memory, drained."""
    c = {str(k): v for k, v in candidate.items()} if isinstance(candidate, dict) else {}
    node = str(c.get("node", "?"))

    def num(key: str) -> float | None:
        v = c.get(key)
        return (
            round(float(v), 4) if isinstance(v, int | float) and not isinstance(v, bool) else None
        )

    return {
        "node": node,
        "kind": str(c.get("kind", "?")),
        "status": str(c.get("status", "?")),
        "phi": num("phi"),
        "cpu": num("cpu"),
        "memory": num("memory"),
        "vm_memory_mb": num("vm_memory_mb"),
        "agents": num("agents"),
        "drained": node in drained,
        "local": bool(c.get("local", False)),
    }
