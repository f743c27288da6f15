"""The agent node's agents from a real BEAM node: a malformed call is answered {error, ...} and
never kills an agent; an agent that dies anyway is restarted by the node's supervisor, and
`:dspex_agents.names()` lists only the agents running."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from beam_app import COOKIE
from otp import ErlNode, beval, unique

from dspex_cluster import Atom
from dspex_cluster.cluster import AgentNode, AgentSettings, start_agent_node
from dspex_cluster.names import PYTHON_AGENT_NAMES

pytestmark = [pytest.mark.otp, pytest.mark.asyncio(loop_scope="module")]

ALL = [Atom(n) for n in PYTHON_AGENT_NAMES]


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s (last: {result!r})")
        await asyncio.sleep(0.1)


def call(py: AgentNode, server: str, request: str) -> str:
    return f"catch gen_server:call({{{server}, '{py.node.name}'}}, {request}, 5000)"


def names(py: AgentNode) -> str:
    return f"erpc:call('{py.node.name}', dspex_agents, names, [])"


async def kill_from_beam(beam: ErlNode, py: AgentNode, agent: str) -> None:
    """exit(Pid, kill) from the BEAM node to the agent's pid (sent there by Python)."""
    await beval(beam, "catch unregister(pidbox), register(pidbox, self())")
    pid = py.node.whereis(agent)
    assert pid is not None
    py.node.send((Atom("pidbox"), Atom(beam.name)), pid)
    got = await beval(
        beam, "receive P when is_pid(P) -> exit(P, kill), P after 5000 -> timeout end"
    )
    assert got == pid


async def test_malformed_calls_get_an_error_and_the_agents_live_on(
    beams: list[ErlNode], agents: AgentNode
) -> None:
    beam = beams[0]
    before = {n: agents.node.whereis(n) for n in PYTHON_AGENT_NAMES}
    got = await beval(beam, call(agents, "dspex_load_balancer", '{forecast, "x"}'))
    assert got[0] == "error" and got[1][0] == "bad_request", got
    assert b"Steps must be an integer" in got[1][1]
    for server, request in [
        ("dspex_load_balancer", "{place, 1, 2}"),
        ("dspex_load_balancer", "{placement_outcome, 1, 2, 3}"),
        ("dspex_health_monitor", "{explain, 42}"),
        ("dspex_failure_predictor", "{predict, [1]}"),
        ("dspex_performance", "{report, extra}"),
        ("dspex_load_balancer", "{cmd, no_such_action, #{}}"),
    ]:
        got = await beval(beam, call(agents, server, request))
        assert not (isinstance(got, tuple) and got[0] == "EXIT"), (server, request, got)
    # every agent still the same process, and still answering
    assert {n: agents.node.whereis(n) for n in PYTHON_AGENT_NAMES} == before
    forecast = await beval(beam, call(agents, "dspex_load_balancer", "{forecast, 3}"))
    assert isinstance(forecast, dict)
    assert await beval(beam, names(agents)) == ALL


async def test_a_killed_agent_is_restarted_and_names_stay_truthful(
    beams: list[ErlNode], agents: AgentNode
) -> None:
    beam = beams[0]
    old = agents.node.whereis("dspex_load_balancer")
    timed: list[float] = []
    agents.decision_observers.append(timed.append)  # as /metrics' histogram does
    await kill_from_beam(beam, agents, "dspex_load_balancer")

    async def back() -> bool:
        pid = agents.node.whereis("dspex_load_balancer")
        return pid is not None and pid != old and await beval(beam, names(agents)) == ALL

    await eventually(back)
    stats = await beval(beam, call(agents, "dspex_load_balancer", "stats"))
    assert isinstance(stats, dict)  # the new one serves calls from the BEAM
    placed = await beval(beam, call(agents, "dspex_load_balancer", "{place, #{}, []}"))
    assert placed[0] in ("ok", "error") and timed  # the new one reports its decisions too
    # the performance agent reads the new load balancer
    assert agents.performance.load_balancer is agents.load_balancer
    assert agents.supervisor.restarts >= 1


async def test_an_agent_node_past_its_restart_intensity_lists_no_agents(
    beams: list[ErlNode], epmd
) -> None:  # type: ignore[no-untyped-def]
    beam = beams[0]
    settings = AgentSettings(host_vitals_interval_s=None, max_restarts=1, max_seconds=60.0)
    py = await start_agent_node(
        f"{unique('pysup')}@127.0.0.1",
        COOKIE,
        join=[beam.name],
        epmd_port=epmd.port,
        settings=settings,
    )
    try:
        assert await beval(beam, names(py)) == ALL
        await kill_from_beam(beam, py, "dspex_health_monitor")
        await eventually(lambda: _running(py, "dspex_health_monitor"))
        await kill_from_beam(beam, py, "dspex_health_monitor")  # a second restart: too many

        async def none_left() -> bool:
            return await beval(beam, names(py)) == []

        await eventually(none_left)
        got = await beval(beam, call(py, "dspex_load_balancer", "stats"))
        assert got[0] == "EXIT" and got[1][0] == "noproc"
    finally:
        await py.stop()


async def _running(py: AgentNode, name: str) -> bool:
    return py.node.whereis(name) is not None
