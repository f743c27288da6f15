"""Ticks both ways with a short net_ticktime, and nodedown when a peer goes silent."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from otp import Epmd, ErlNode, beval, unique

from dspex_cluster import Atom, Node, Process

COOKIE = "dspex-test-cookie"
TICKTIME = 4


@pytest.fixture(scope="module", params=["otp25", "otp28"])
def beam(request: pytest.FixtureRequest, epmd: Epmd) -> Iterator[ErlNode]:
    node = ErlNode(
        epmd.port, request.param, cookie=COOKIE, extra=["-kernel", "net_ticktime", str(TICKTIME)]
    )
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
async def nodes(epmd: Epmd) -> AsyncIterator[list[Node]]:
    made = [
        Node(
            f"{unique('pyt')}@127.0.0.1",
            cookie=COOKIE,
            hidden=hidden,
            epmd_port=epmd.port,
            net_ticktime=TICKTIME,
        )
        for hidden in (True, False)
    ]
    for node in made:
        await node.start()
    try:
        yield made
    finally:
        for node in made:
            await node.stop()


async def test_idle_connections_survive_on_ticks(beam: ErlNode, nodes: list[Node]) -> None:
    hidden, visible = nodes
    assert await hidden.connect(beam.name)  # we dial
    assert await beval(beam, f"net_adm:ping('{visible.name}')") == "pong"  # BEAM dials
    await asyncio.sleep(TICKTIME * 1.75)  # well past one full tick period of silence
    assert hidden.nodes() == [Atom(beam.name)] and visible.nodes() == [Atom(beam.name)]
    assert set(await beval(beam, "nodes(connected)")) >= {Atom(hidden.name), Atom(visible.name)}
    assert "net_tick_timeout" not in beam.log_text()


class Trap(Process):
    trap_exit = True

    def __init__(self) -> None:
        self.got: asyncio.Queue[Any] = asyncio.Queue()

    async def run(self) -> None:
        while True:
            self.got.put_nowait(await self.receive())


async def test_silent_peer_is_dropped_with_noconnection(beam: ErlNode, nodes: list[Node]) -> None:
    node = nodes[0]
    assert await node.connect(beam.name)
    trap = Trap()
    await node.spawn(trap)
    victim = await node.rpc(
        beam.name, "erlang", "spawn", [Atom("timer"), Atom("sleep"), [Atom("infinity")]]
    )
    trap.link(victim)
    ref = trap.monitor(victim)
    await asyncio.sleep(0.2)
    os.kill(beam.proc.pid, signal.SIGSTOP)
    try:
        got = [await asyncio.wait_for(trap.got.get(), TICKTIME * 2.5) for _ in range(2)]
    finally:
        os.kill(beam.proc.pid, signal.SIGCONT)
    assert (Atom("EXIT"), victim, Atom("noconnection")) in got
    assert (Atom("DOWN"), ref, Atom("process"), victim, Atom("noconnection")) in got
    assert node.nodes() == []
    await asyncio.sleep(0.5)
    assert await node.connect(beam.name)  # and it comes back
