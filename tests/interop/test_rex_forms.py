"""The `{Pid, Request}` forms rex serves besides erl_interface's call, from OTP 25 and 28:
rpc:sbcast (a registered name that exists and one that does not), and the features probe."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from otp import ErlNode, beval

from dspex_cluster import Atom, Node, Process

pytestmark = pytest.mark.otp


class Inbox(Process):
    def __init__(self) -> None:
        self.got: asyncio.Queue[Any] = asyncio.Queue()

    async def run(self) -> None:
        while True:
            self.got.put_nowait(await self.receive())


async def test_sbcast_reaches_a_registered_process(beam: ErlNode, py: Node) -> None:
    inbox = Inbox()
    await py.spawn(inbox, name="inbox")
    got = await beval(beam, f"rpc:sbcast(['{py.name}'], inbox, {{hello, 1}})")
    assert got == ([Atom(py.name)], [])
    assert await asyncio.wait_for(inbox.got.get(), 5) == (Atom("hello"), 1)
    # a name nobody has: the node is listed as bad, nothing hangs
    got = await beval(beam, f"rpc:sbcast(['{py.name}'], nobody_here, hi)")
    assert got == ([], [Atom(py.name)])


async def test_features_request_is_answered(beam: ErlNode, py: Node) -> None:
    got = await beval(
        beam,
        f"{{rex, '{py.name}'}} ! {{self(), features_request}}, "
        "receive {features_reply, N, F} -> {N, F} after 5000 -> timeout end",
    )
    assert got == (Atom(py.name), [Atom("erpc")])
