"""Agent: a GenServer with state, actions, sensors, skills and signal routes (the Python twin of
`DSPEx.Clustering.Agent`).

Requests it answers (from BEAM or Python):

    {cmd, Name, Params}   -> {ok, Result} | {error, {invalid_params, Field, Why}}
                             | {error, {unknown_action, Name}} | {error, {action_failed, Why}}
    state                 -> a map describing the agent (`describe()`)
    anything else         -> `handle_request(request, caller)` (subclasses)

`{cmd, Name, Params}` as a cast runs the action and drops the result. Messages:
`{signal, Map}` runs every route whose pattern matches the type (routes of the agent and of its
skills), periodic sensors run in the agent's own loop, anything else goes to the event-driven
sensors and `handle_event`. Signals returned by sensors are published on the cluster bus.

Subclasses override `setup`, `actions`, `routes`, `sensors`, `handle_request`, `handle_event`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

from dspex_cluster.agents.action import Action, ActionError
from dspex_cluster.agents.bus import RELAY_UP, ClusterBus
from dspex_cluster.agents.sensor import Sensor
from dspex_cluster.agents.skill import Route, Skill
from dspex_cluster.etf import Atom
from dspex_cluster.runtime import Caller, GenServer
from dspex_cluster.signals import InvalidSignal, Signal, pattern_matches

log = logging.getLogger("dspex_cluster.agents")

OK = Atom("ok")
ERROR = Atom("error")
CMD = Atom("cmd")
SIGNAL = Atom("signal")
_SENSE = Atom("$agent_sense")


BAD_REQUEST = Atom("bad_request")


class BadRequest(ValueError):
    """Raise in `handle_request` for a request that is malformed: the caller gets
    `{error, {bad_request, <<"message">>}}` and the agent runs on."""


def brief(term: Any, limit: int = 200) -> str:
    """A log-safe repr of a peer's term (bounded)."""
    text = repr(term)
    return text if len(text) <= limit else text[:limit] + "..."


class Agent(GenServer):
    """See the module docstring."""

    def __init__(
        self,
        name: str,
        *,
        bus: ClusterBus | None = None,
        skills: Iterable[Skill] = (),
        actions: Iterable[Action] = (),
        sensors: Iterable[Sensor] = (),
        routes: Iterable[Route] = (),
    ) -> None:
        self.name = name
        self.bus = bus
        self.skills = list(skills)
        self._extra_actions = list(actions)
        self._extra_sensors = list(sensors)
        self._extra_routes = list(routes)
        self.signals_in = 0
        self.signals_out = 0
        self.route_errors = 0

    # -- to override ---------------------------------------------------------------------------

    def setup(self) -> None:
        """Set up state (runs in init, before sensors start and routes are subscribed)."""

    def actions(self) -> list[Action]:
        """The agent's own actions (override; skills add theirs)."""
        return []

    def routes(self) -> list[Route]:
        """The agent's signal routes: (pattern, handler) pairs (override)."""
        return []

    def sensors(self) -> list[Sensor]:
        """The agent's own sensors (override; skills add theirs)."""
        return []

    async def handle_request(self, request: Any, caller: Caller) -> Any:
        """Calls and casts other than {cmd, ...} and state (override). Raise BadRequest for a
        malformed one; the default answers {error, {unknown_request, Request}}."""
        return (ERROR, (Atom("unknown_request"), request))

    async def handle_event(self, message: Any) -> None:
        """Messages nobody routed (after the event-driven sensors saw them)."""

    async def on_relay_up(self, beam: Atom) -> None:
        """A BEAM relay (re)took our subscriptions; signals may have been missed before."""

    def describe(self) -> dict[Atom, Any]:
        """The answer to `state`."""
        return {
            Atom("name"): Atom(self.name),
            Atom("actions"): [Atom(a) for a in self._actions],
            Atom("routes"): sorted({p for p, _ in self._routes}),
            Atom("sensors"): [Atom(s.name) for s in self._sensors],
            Atom("skills"): {Atom(s.name): s.describe() for s in self.skills},
            Atom("signals_in"): self.signals_in,
            Atom("signals_out"): self.signals_out,
        }

    # -- API inside the agent ------------------------------------------------------------------

    def publish(self, signal: Signal) -> None:
        """Put a signal on the cluster bus (no-op without a bus)."""
        self.signals_out += 1
        if self.bus is not None:
            self.bus.publish(signal)

    async def run_action(self, name: str, params: Any = None) -> Any:
        """Run action `name` with `params` (validated by the action's schema); ActionError if
        unknown or invalid."""
        found = self._actions.get(str(name))
        if found is None:
            raise ActionError(str(name), "is not an action of this agent", "unknown_action")
        return await found.execute(self, params)

    # -- GenServer -----------------------------------------------------------------------------

    async def init(self) -> None:
        """Mount the skills, collect actions, routes and sensors, start the sensors and subscribe
        the routes on the bus."""
        for skill in self.skills:
            skill.mount(self)
        self.setup()
        self._actions: dict[str, Action] = {}
        for a in [*self.actions(), *self._extra_actions, *_flat(s.actions() for s in self.skills)]:
            self._actions[a.name] = a
        self._routes: list[Route] = [
            *self.routes(),
            *self._extra_routes,
            *_flat(s.routes() for s in self.skills),
        ]
        self._sensors: list[Sensor] = [
            *self.sensors(),
            *self._extra_sensors,
            *_flat(s.sensors() for s in self.skills),
        ]
        self._timers: list[asyncio.Task[None]] = []
        for sensor in self._sensors:
            sensor.start(self)
            if sensor.interval_s is not None:
                self._timers.append(asyncio.create_task(self._tick(sensor)))
        if self.bus is not None:
            for pattern in sorted({p for p, _ in self._routes}):
                await self.bus.subscribe(self.pid, pattern)

    async def _main(self) -> None:
        try:
            await super()._main()
        finally:
            for timer in getattr(self, "_timers", []):
                timer.cancel()
            for sensor in getattr(self, "_sensors", []):
                sensor.stop(self)

    async def _tick(self, sensor: Sensor) -> None:
        """Posts a sense request into our own mailbox, so sensing runs in the agent's loop."""
        assert sensor.interval_s is not None
        while self.alive:
            await asyncio.sleep(sensor.interval_s)
            if self.alive:
                self.node.send(self.pid, (_SENSE, sensor.name))

    async def handle_call(self, request: Any, caller: Caller) -> Any:
        """`{cmd, Action, Params}`, `state`, else `handle_request`. A request the agent cannot
        serve is answered `{error, {bad_request, Why}}`: a peer's malformed call never crashes
        the agent."""
        if isinstance(request, tuple) and len(request) == 3 and request[0] == CMD:
            return await self._cmd(request[1], request[2])
        if request == "state":
            return self.describe()
        return await self._guarded_request(request, caller)

    async def handle_cast(self, request: Any) -> None:
        """As handle_call, without a reply (a bad cast is logged and dropped)."""
        if isinstance(request, tuple) and len(request) == 3 and request[0] == CMD:
            await self._cmd(request[1], request[2])
        else:
            await self._guarded_request(request, None)

    async def _guarded_request(self, request: Any, caller: Caller | None) -> Any:
        try:
            return await self.handle_request(request, caller)  # type: ignore[arg-type]
        except BadRequest as err:
            log.info("%s: bad request %s: %s", self.name, brief(request), err)
            return (ERROR, (BAD_REQUEST, str(err)))
        except Exception as err:
            log.warning("%s: request %s failed", self.name, brief(request), exc_info=True)
            return (ERROR, (BAD_REQUEST, f"{type(err).__name__}: {err}"[:500]))

    async def _cmd(self, name: Any, params: Any) -> Any:
        try:
            return (OK, await self.run_action(str(name), params))
        except ActionError as err:
            return (ERROR, err.term() if err.kind == "invalid_params" else (Atom(err.kind), name))
        except Exception as err:
            log.warning("%s: action %s failed", self.name, name, exc_info=True)
            return (ERROR, (Atom("action_failed"), f"{type(err).__name__}: {err}"))

    async def handle_info(self, message: Any) -> None:
        """Signals, sensor ticks and relay changes; other messages go to the event sensors and
        handle_event."""
        if isinstance(message, tuple) and len(message) == 2:
            if message[0] == SIGNAL:
                await self._on_signal(message[1])
                return
            if message[0] == _SENSE:
                await self._sense(message[1])
                return
            if message[0] == RELAY_UP:
                await self.on_relay_up(message[1])
                return
        for sensor in self._sensors:
            if sensor.interval_s is None:
                self._emit(sensor.on_event(self, message))
        await self.handle_event(message)

    async def _on_signal(self, term: Any) -> None:
        try:
            signal = Signal.from_term(term)
        except InvalidSignal as err:
            log.info("%s: dropped a malformed signal: %s", self.name, err)
            return
        self.signals_in += 1
        for pattern, handler in self._routes:
            if pattern_matches(pattern, signal.type):
                try:
                    await _maybe_await(handler(signal))
                except Exception:
                    self.route_errors += 1
                    log.warning(
                        "%s: route %s failed on %s", self.name, pattern, signal.type, exc_info=True
                    )

    async def _sense(self, name: Any) -> None:
        for sensor in self._sensors:
            if sensor.name == name:
                try:
                    self._emit(await sensor.sense(self))
                except Exception:
                    log.warning("%s: sensor %s failed", self.name, name, exc_info=True)

    def _emit(self, out: list[Signal] | None) -> None:
        for signal in out or []:
            self.publish(signal)


def _flat(lists: Iterable[list[Any]]) -> list[Any]:
    return [x for xs in lists for x in xs]


async def _maybe_await(value: Awaitable[None] | None) -> None:
    if inspect.isawaitable(value):
        await value
