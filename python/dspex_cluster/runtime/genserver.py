"""GenServer: gen_server's call/cast/info protocol on top of Process.

`handle_call`'s return value is the reply. To answer later, return `NOREPLY` and call
`self.reply(caller, value)` when ready (from any task), just as gen_server's `{noreply, S}` plus
`gen_server:reply/2`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from dspex_cluster.etf import ImproperList, Pid
from dspex_cluster.runtime.atoms import GEN_CALL, GEN_CAST
from dspex_cluster.runtime.process import Exit, Process


class _NoReply:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOREPLY"


NOREPLY: Any = _NoReply()


class Caller(NamedTuple):
    """Who is waiting for a reply: the `From` of gen_server ({Pid, Tag})."""

    pid: Pid
    tag: Any


class GenServer(Process):
    """Override init / handle_call / handle_cast / handle_info; `self.pid`, `self.node` are set."""

    NOREPLY = NOREPLY

    async def init(self) -> None:
        """Runs in the process before the first message; spawn() waits for it."""

    async def handle_call(self, request: Any, caller: Caller) -> Any:
        """Answer a call: the return value is the reply (NOREPLY to answer later with `reply`). The
        default exits with {bad_call, Request}."""
        raise Exit(("bad_call", request))

    async def handle_cast(self, request: Any) -> None:
        """Casts are ignored unless overridden."""

    async def handle_info(self, message: Any) -> None:
        """Other messages are ignored unless overridden."""

    def reply(self, caller: Caller, value: Any) -> None:
        """Answer a call (for deferred replies)."""
        reply(self.node, self.pid, caller, value)

    async def _main(self) -> None:
        await self.init()
        started = getattr(self, "_started", None)
        if started is not None and not started.done():
            started.set_result(None)
        receive = self.receive
        while True:
            message = await receive()
            if type(message) is tuple and len(message) == 3 and message[0] == GEN_CALL:
                sender = message[1]
                if type(sender) is tuple and len(sender) == 2:
                    caller = Caller(sender[0], sender[1])
                    value = await self.handle_call(message[2], caller)
                    if value is not NOREPLY:
                        reply(self.node, self.pid, caller, value)
                    continue
            elif type(message) is tuple and len(message) == 2 and message[0] == GEN_CAST:
                await self.handle_cast(message[1])
                continue
            await self.handle_info(message)


def reply(node: Any, sender: Pid, caller: Caller, value: Any) -> None:
    """gen:reply/2: to the alias when the tag is [alias|Ref], else to the caller's pid."""
    tag = caller.tag
    if isinstance(tag, ImproperList) and tag.items == ["alias"]:
        node.send(tag.tail, (tag, value), sender=sender)
    else:
        node.send(caller.pid, (tag, value), sender=sender)
