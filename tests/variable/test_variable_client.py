"""The Python client `dspex_cluster.variable.Variable` against real BEAM app nodes: calls, clear
errors, and a subscription delivered to a Python process in order, without gaps, also across
the loss of the BEAM node it was subscribed through."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from beam_app import COOKIE, start_app_node
from otp import unique

from dspex_cluster import Atom, Node
from dspex_cluster.variable import (
    Change,
    InvalidValue,
    Reading,
    Variable,
    VariableError,
    VariableNotFound,
)

pytestmark = pytest.mark.otp


async def _collect(sub, upto: int, timeout: float = 20.0) -> list[Change]:  # type: ignore[no-untyped-def]
    got: list[Change] = []
    while not got or got[-1].version < upto:
        change = await sub.next(timeout=timeout)
        assert change is not None
        got.append(change)
    return got


@pytest.mark.asyncio
async def test_get_set_subscribe_and_resume_after_the_subscribed_beam_node_dies(epmd) -> None:  # type: ignore[no-untyped-def]
    b1 = start_app_node(epmd.port, COOKIE, "vb")
    b2 = start_app_node(epmd.port, COOKIE, "vb")
    py = Node(f"{unique('pyvar')}@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port)
    await py.start()
    try:
        assert b1.eval(f"net_kernel:connect_node('{b2.name}')") is True
        b1.eval("global:sync()")  # names registered on b2 are seen from b1 from now on
        name = f"lb.exploration.{unique('v')}"
        var = Variable(py, name, beams=[b1.name, b2.name])
        with pytest.raises(VariableNotFound):
            await Variable(py, "no.such.variable", beams=[b1.name]).get()
        pid = await var.start(type="float", range=(0.0, 1.0), value=0.1, node=b2.name)
        assert pid.node == Atom(b2.name)
        assert await var.where() == Atom(b2.name)
        assert await var.get() == Reading(0.1, 1)
        with pytest.raises(InvalidValue, match="out of range"):
            await var.set(2.0)
        with pytest.raises(VariableError):
            await var.start(type="float", value=0.3)  # already running

        sub = await var.subscribe(from_version=0)
        assert sub.beam == Atom(b1.name)
        for i in range(1, 21):
            assert await var.set(i / 100) == 2 * i
            # a BEAM-side writer too
            b2.eval(f"'Elixir.DSPEx.Clustering.Variable':set(<<\"{name}\">>, {i / 200})")
        first = await _collect(sub, 41)
        assert [c.version for c in first] == list(range(1, 42))
        assert first[0] == Change(0.1, 1, False) and first[-1].value == 20 / 200

        # the BEAM node the subscription went through dies: it re-subscribes through b2
        os.kill(b1.proc.pid, signal.SIGKILL)
        for i in range(10):
            await var.set(0.5 + i / 100)
        rest = await _collect(sub, 51)
        assert [c.version for c in rest] == list(range(42, 52))
        assert sub.beam == Atom(b2.name)
        assert rest[-1] == Change(0.59, 51, False)
        await sub.close()
        assert await var.feedback(1.0) == (await var.get())
    finally:
        await py.stop()
        b1.stop()
        b2.stop()


@pytest.mark.asyncio
async def test_resume_from_an_old_version_gives_the_missed_ones_or_a_resync(epmd) -> None:  # type: ignore[no-untyped-def]
    beam = start_app_node(epmd.port, COOKIE, "vb")
    py = Node(f"{unique('pyvar')}@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port)
    await py.start()
    try:
        var = Variable(py, "health.alert_threshold", beams=[beam.name])
        await var.start(type="integer", value=0, history=5)
        for i in range(1, 11):
            await var.set(i)
        async with await var.subscribe(from_version=8) as sub:
            assert [c.version for c in await _collect(sub, 11)] == [9, 10, 11]
        async with await var.subscribe(from_version=2) as sub:
            [change] = await _collect(sub, 11)
            assert change == Change(10, 11, True)
            await var.set(99)
            assert await sub.next(timeout=10) == Change(99, 12, False)
        await asyncio.sleep(0)
    finally:
        await py.stop()
        beam.stop()
