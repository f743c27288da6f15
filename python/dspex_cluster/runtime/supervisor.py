"""Supervisor: OTP's supervisor for Python processes.

    sup = Supervisor(
        [
            ChildSpec("counter", Counter, name="counter"),
            ChildSpec("worker", lambda: Worker(config), restart="transient"),
        ],
        strategy="one_for_one",
        max_restarts=3,
        max_seconds=5.0,
    )
    await node.spawn(sup, name="my_sup")   # the children have started, in order

As in OTP:

- children start in the order given, each linked to the supervisor, which traps exits; a child
  that fails to start stops the ones already started and the supervisor itself;
- `strategy`: `one_for_one` restarts the child that ended; `one_for_all` stops the others (in
  reverse order) and restarts all; `rest_for_one` stops and restarts the children started after
  it too;
- `restart` per child: `permanent` (always restarted), `transient` (restarted unless it ended
  with `normal`, `shutdown` or `{shutdown, _}`), `temporary` (never; dropped from the children);
- restart intensity: more than `max_restarts` restarts within `max_seconds` makes the supervisor
  stop every child and exit with `shutdown` (logged as reaching its restart intensity);
- ordered shutdown: on exit, children are stopped in reverse start order, each sent
  `exit(Child, shutdown)` and given `shutdown` seconds to end before it is killed.

`start` is a factory that returns a new, unstarted `Process` (a class works): a restarted child
is a fresh object with fresh state, never the crashed one. `child(id)` returns the live process
object (or None), `which_children()` the ids and pids; from a BEAM node,
`GenServer.call({:my_sup, py}, :which_children)` and `:count_children`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from dspex_cluster.etf import Atom, Pid
from dspex_cluster.runtime.atoms import ERROR, EXIT, KILL, NORMAL, SHUTDOWN
from dspex_cluster.runtime.genserver import Caller, GenServer
from dspex_cluster.runtime.process import Exit, Process

log = logging.getLogger("dspex_cluster.runtime.supervisor")

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
RestartType = Literal["permanent", "transient", "temporary"]
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
RESTART_TYPES = ("permanent", "transient", "temporary")
UNDEFINED = Atom("undefined")


@dataclass(frozen=True)
class ChildSpec:
    """One child: `id` (unique in its supervisor), `start` (a factory returning a new unstarted
    Process), `restart` type, `shutdown` (seconds between `exit(shutdown)` and kill) and the
    `name` to register it under (registered again at every restart)."""

    id: str
    start: Callable[[], Process]
    restart: RestartType = "permanent"
    shutdown: float = 5.0
    name: str | None = None

    def __post_init__(self) -> None:
        if self.restart not in RESTART_TYPES:
            raise ValueError(f"restart must be one of {RESTART_TYPES}, got {self.restart!r}")
        if self.shutdown < 0:
            raise ValueError("shutdown must be >= 0 seconds")


class RestartIntensityReached(Exception):
    """More restarts than `max_restarts` within `max_seconds`."""


class Supervisor(GenServer):
    """A process that starts, watches and restarts its children (see the module docstring).

    It is a GenServer: `node.spawn(sup)` returns once every child has started (or raises
    `Exit` if one could not start), and a BEAM node may ask it `which_children` or
    `count_children` with `GenServer.call`."""

    trap_exit = True

    def __init__(
        self,
        children: list[ChildSpec],
        strategy: Strategy = "one_for_one",
        max_restarts: int = 3,
        max_seconds: float = 5.0,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if max_restarts < 0 or max_seconds <= 0:
            raise ValueError("max_restarts must be >= 0 and max_seconds > 0")
        ids = [c.id for c in children]
        if len(set(ids)) != len(ids):
            raise ValueError(f"child ids must be unique, got {ids}")
        self.specs: list[ChildSpec] = list(children)
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.restarts = 0  # restarts done so far (all children)
        self._live: dict[str, Process] = {}  # id -> running child
        self._restart_times: deque[float] = deque()

    # -- queries -------------------------------------------------------------------------------

    def child(self, child_id: str) -> Process | None:
        """The running process of child `child_id`, or None while it is not running."""
        proc = self._live.get(child_id)
        return proc if proc is not None and proc.alive else None

    def which_children(self) -> list[tuple[str, Pid | None]]:
        """(id, pid or None) of every child, in start order (supervisor:which_children/1)."""
        return [(s.id, p.pid if (p := self.child(s.id)) is not None else None) for s in self.specs]

    # -- GenServer -----------------------------------------------------------------------------

    async def init(self) -> None:
        """Start the children in order; if one fails, the started ones are stopped."""
        for spec in self.specs:
            try:
                await self._start(spec)
            except Exception as exc:
                log.error("supervisor %r: child %s failed to start: %s", self.pid, spec.id, exc)
                reason = (Atom("failed_to_start_child"), Atom(spec.id), str(exc)[:500])
                raise Exit((SHUTDOWN, reason)) from None

    async def handle_call(self, request: Any, caller: Caller) -> Any:
        """`which_children` -> [{Id, Pid | undefined}]; `count_children` -> #{specs, active}."""
        if request == "which_children":
            return [(Atom(i), p if p is not None else UNDEFINED) for i, p in self.which_children()]
        if request == "count_children":
            active = sum(1 for _, p in self.which_children() if p is not None)
            return {Atom("specs"): len(self.specs), Atom("active"): active}
        return (ERROR, (Atom("unknown_request"), request))

    async def handle_info(self, message: Any) -> None:
        """Exits of the children (the supervisor traps exits)."""
        if type(message) is tuple and len(message) == 3 and message[0] == EXIT:
            await self._child_exited(message[1], message[2])

    async def _main(self) -> None:
        try:
            await super()._main()
        except RestartIntensityReached:
            log.error(
                "supervisor %r reached its restart intensity (more than %d restarts in %.1f s):"
                " stopping",
                self.pid,
                self.max_restarts,
                self.max_seconds,
            )
            raise Exit(SHUTDOWN) from None
        finally:
            await self._stop_children(list(self.specs))

    async def _start(self, spec: ChildSpec) -> None:
        proc = spec.start()
        if not isinstance(proc, Process):
            raise TypeError(f"child {spec.id}: start() returned {proc!r}, not a Process")
        await self.node.spawn(proc, name=spec.name)
        self._live[spec.id] = proc
        self.link(proc.pid)  # already gone: the link delivers its EXIT (noproc) at once

    async def _child_exited(self, pid: Any, reason: Any) -> None:
        index = next((i for i, s in enumerate(self.specs) if self._pid_of(s.id) == pid), None)
        if index is None:
            return  # not (or no longer) our child
        spec = self.specs[index]
        del self._live[spec.id]
        if not _wants_restart(spec.restart, reason):
            if spec.restart == "temporary":
                self.specs.pop(index)
            return
        log.warning("supervisor %r: child %s ended (%.200r); restarting", self.pid, spec.id, reason)
        if self.strategy == "one_for_one":
            affected = [spec]
        elif self.strategy == "one_for_all":
            affected = list(self.specs)
        else:
            affected = self.specs[index:]
        await self._stop_children([s for s in affected if s is not spec])
        await self._restart(affected)

    def _pid_of(self, child_id: str) -> Pid | None:
        proc = self._live.get(child_id)
        return proc.pid if proc is not None else None

    async def _restart(self, specs: list[ChildSpec]) -> None:
        """Start `specs` again in order: one restart, as OTP counts it; a start that fails
        counts as another restart and is tried again."""
        self._count_restart()
        for spec in specs:
            if spec.restart == "temporary":
                if spec in self.specs:
                    self.specs.remove(spec)
                continue
            while True:
                try:
                    await self._start(spec)
                    break
                except Exception as exc:
                    log.error("supervisor %r: restarting %s failed: %s", self.pid, spec.id, exc)
                    self._count_restart()

    def _count_restart(self) -> None:
        now = time.monotonic()
        times = self._restart_times
        times.append(now)
        while times and times[0] < now - self.max_seconds:
            times.popleft()
        self.restarts += 1
        if len(times) > self.max_restarts:
            raise RestartIntensityReached()

    async def _stop_children(self, specs: list[ChildSpec]) -> None:
        """Stop the running ones among `specs`, last started first."""
        for spec in reversed(specs):
            proc = self._live.pop(spec.id, None)
            if proc is not None and proc.alive:
                await self._stop_child(spec, proc)

    async def _stop_child(self, spec: ChildSpec, proc: Process) -> None:
        pid = proc.pid
        self.node.exit(pid, SHUTDOWN, sender=self.pid)

        def its_exit(message: Any) -> bool:
            return (
                type(message) is tuple
                and len(message) == 3
                and message[0] == EXIT
                and (message[1] == pid)
            )

        try:
            await self.receive(timeout=spec.shutdown, match=its_exit)
            return
        except TimeoutError:
            log.warning(
                "supervisor %r: %s did not stop in %.1f s; killing",
                self.pid,
                spec.id,
                spec.shutdown,
            )
        self.node.exit(pid, KILL, sender=self.pid)
        try:
            await self.receive(timeout=1.0, match=its_exit)
        except TimeoutError:
            # a coroutine that ignores cancellation cannot be forced: take it out of the tables
            self.node._terminate(proc, Atom("killed"))


def _wants_restart(restart: RestartType, reason: Any) -> bool:
    if restart == "permanent":
        return True
    if restart == "temporary":
        return False
    return not (
        reason == NORMAL
        or reason == SHUTDOWN
        or (type(reason) is tuple and len(reason) == 2 and reason[0] == SHUTDOWN)
    )
