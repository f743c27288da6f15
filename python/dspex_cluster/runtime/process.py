"""Processes: a pid, an O(1) mailbox with selective receive, links, monitors, exits.

The mailbox is a deque. `receive()` without a predicate pops the head in O(1); with a predicate it
scans in place (no copy) once, then parks a single waiter that later messages are tested against as
they arrive, so no message is examined twice while the process waits. Delivery never creates a task.
"""

from __future__ import annotations

import asyncio
import os
import traceback
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dspex_cluster.etf import Atom, Pid, Reference
from dspex_cluster.runtime.atoms import NORMAL, PYTHON_EXCEPTION

if TYPE_CHECKING:
    from dspex_cluster.runtime.node import Node


class Exit(Exception):
    """Raise to end a process with `reason`; also raised by calls that fail with an exit reason."""

    def __init__(self, reason: Any = NORMAL) -> None:
        super().__init__(reason)
        self.reason = reason


MAX_TRACEBACK_CHARS = 4000  # the text a peer gets; the tail (where it failed) is kept


def exception_reason(exc: BaseException) -> tuple:
    """The Erlang reason for a Python exception:
    {python_exception, 'Class', <<"message">>, <<"Traceback (most recent call last): ...">>}.

    The traceback text is the user's frames only (the runtime's own frames are left out) and is
    cut to its last MAX_TRACEBACK_CHARS characters."""
    cls = type(exc)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    return (PYTHON_EXCEPTION, Atom(name), str(exc), traceback_text(exc))


def traceback_text(exc: BaseException) -> str:
    """`traceback.format_exception` of `exc` without the runtime's frames, bounded."""
    tb = exc.__traceback__
    while tb is not None and _is_runtime_frame(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    if len(text) > MAX_TRACEBACK_CHARS:
        text = "...\n" + text[-MAX_TRACEBACK_CHARS:]
    return text


def exception_stack(exc: BaseException, limit: int = 8) -> list:
    """The Python traceback as an Erlang-shaped stack, innermost first, without the runtime's own
    frames: [{Module, Fun, 0, [{file, F}, {line, L}]}]."""
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if not _is_runtime_frame(f.filename)
    ][-limit:]
    return [
        (
            Atom(f.filename.rsplit("/", 1)[-1].removesuffix(".py")),
            Atom(f.name),
            0,
            [(Atom("file"), list(f.filename.encode())), (Atom("line"), f.lineno or 0)],
        )
        for f in reversed(frames)
    ]


_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _is_runtime_frame(filename: str) -> bool:
    """A frame of dspex_cluster.runtime itself (the code that called the user's function)."""
    return filename.startswith(_RUNTIME_DIR)


class Endpoint:
    """Whatever a local pid names. The node owns the tables; an endpoint keeps its own links and
    monitors so that its death can notify exactly the parties involved."""

    node: Node
    pid: Pid

    def _attach(self, node: Node, pid: Pid) -> None:
        self.node = node
        self.pid = pid
        self._alive = True
        self._links: set[Pid] = set()
        self._monitors: dict[
            Reference, Any
        ] = {}  # monitors I hold: ref -> target (pid/(name,node))
        self._monitored_by: dict[
            Reference, tuple[Pid, Any]
        ] = {}  # ref -> (watcher, how I was named)
        self._alias_refs: list[Reference] = []

    @property
    def alive(self) -> bool:
        return self._alive

    def _deliver(self, message: Any) -> None:
        raise NotImplementedError

    def _exit_signal(self, sender: Any, reason: Any, link: bool) -> None:
        """An exit signal reached us. The default (internal endpoints) treats it as trapped."""

    def _down(self, ref: Reference, target: Any, reason: Any) -> None:
        """A monitor we hold fired (the node already removed it from our table)."""

    def _spawn_reply(self, req_id: Reference, flags: int, result: Any) -> None:
        """A SPAWN_REPLY for a request we made."""

    def _kill(self, reason: Any) -> None:
        """End this endpoint with `reason` (the node then notifies links and monitors)."""
        self.node._terminate(self, reason)


class Process(Endpoint):
    """Subclass with `async def run(self)`: returning exits `normal`, `raise Exit(r)` exits r."""

    trap_exit: bool = False

    def _attach(self, node: Node, pid: Pid) -> None:
        super()._attach(node, pid)
        self._mailbox: deque[Any] = deque()
        self._waiter: asyncio.Future[Any] | None = None
        self._match: Callable[[Any], bool] | None = None
        self._task: asyncio.Task[None] | None = None
        self._kill_reason: Any = None

    async def run(self) -> None:
        """The process body: returning exits `normal`, raising Exit(reason) exits `reason`, any
        other exception exits {python_exception, ...}."""
        raise NotImplementedError(f"{type(self).__name__} must define async def run(self)")

    async def _main(self) -> None:
        await self.run()

    # -- mailbox -------------------------------------------------------------------------------

    def _deliver(self, message: Any) -> None:
        waiter = self._waiter
        if waiter is not None and (self._match is None or self._match(message)):
            self._waiter = None
            if not waiter.done():
                waiter.set_result(message)
                return
        self._mailbox.append(message)

    async def receive(
        self, timeout: float | None = None, match: Callable[[Any], bool] | None = None
    ) -> Any:
        """The oldest message (matching `match`, if given). TimeoutError after `timeout` seconds."""
        mailbox = self._mailbox
        if match is None:
            if mailbox:
                return mailbox.popleft()
        else:
            for i, message in enumerate(mailbox):
                if match(message):
                    del mailbox[i]
                    return message
        if timeout is not None and timeout <= 0:
            raise TimeoutError("receive timed out")
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiter, self._match = waiter, match
        timer = None
        if timeout is not None:
            timer = loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if self._waiter is waiter:
                self._waiter = self._match = None

    @property
    def mailbox_size(self) -> int:
        """How many messages wait in the mailbox."""
        return len(self._mailbox)

    # -- signals -------------------------------------------------------------------------------

    def _down(self, ref: Reference, target: Any, reason: Any) -> None:
        self._deliver((Atom("DOWN"), ref, Atom("process"), target, reason))

    def _exit_signal(self, sender: Any, reason: Any, link: bool) -> None:
        if not link and reason == "kill":
            self._kill(Atom("killed"))
        elif self.trap_exit:
            self._deliver((Atom("EXIT"), sender, reason))
        elif reason == "normal":
            if not link and sender == self.pid:
                self._kill(NORMAL)
        else:
            self._kill(reason)

    def _kill(self, reason: Any) -> None:
        task = self._task
        if task is None or task.done():
            self.node._terminate(self, reason)
            return
        if self._kill_reason is None:
            self._kill_reason = reason
        task.cancel()

    # -- conveniences: the node's API with this process as the sender ---------------------------

    def send(self, dest: Any, message: Any) -> None:
        """Send `message` to `dest` (pid, alias, local name or (name, node)) with this process as
        the sender."""
        self.node.send(dest, message, sender=self.pid)

    def link(self, pid: Pid) -> None:
        """Link this process to `pid` (erlang:link/1)."""
        self.node.link(self.pid, pid)

    def unlink(self, pid: Pid) -> None:
        """Remove the link to `pid` (erlang:unlink/1)."""
        self.node.unlink(self.pid, pid)

    def monitor(self, target: Any) -> Reference:
        """Monitor a pid, a local name or a (name, node) pair; DOWN arrives as a message."""
        return self.node.monitor(self.pid, target)

    def demonitor(self, ref: Reference, flush: bool = False) -> None:
        """Remove monitor `ref`; with flush, drop its DOWN message if it already arrived."""
        self.node.demonitor(self.pid, ref)
        if flush:
            self._mailbox = deque(m for m in self._mailbox if not (_is_down(m) and m[1] == ref))

    def exit(self, pid: Pid, reason: Any) -> None:
        """Send an exit signal (erlang:exit/2)."""
        self.node.exit(pid, reason, sender=self.pid)

    async def call(self, dest: Any, request: Any, timeout: float = 5.0) -> Any:
        """gen_server:call from this process (see Node.call)."""
        return await self.node.call(dest, request, timeout=timeout)


def _is_down(message: Any) -> bool:
    return isinstance(message, tuple) and len(message) == 5 and message[0] == "DOWN"


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("receive timed out"))
