"""Agent, Action, Sensor, Skill and the bus bridge, against a real BEAM node running the app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from beam_app import COOKIE, collected, start_app_node, start_collector
from otp import ErlNode, beval, unique

from dspex_cluster import Atom, Node
from dspex_cluster.agents import (
    Action,
    Agent,
    ClusterBus,
    FunctionSensor,
    HostVitalsSensor,
    NodeEventSensor,
    Skill,
)
from dspex_cluster.agents.skill import Route
from dspex_cluster.signals import Signal

pytestmark = [pytest.mark.otp, pytest.mark.asyncio(loop_scope="module")]


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s (last: {result!r})")
        await asyncio.sleep(0.05)


from test_action import ADD  # noqa: E402


class PingSkill(Skill):
    """Answers `test.ping.*` with `test.pong.reply` and counts pings."""

    name = "ping"

    def __init__(self) -> None:
        self.pings = 0

    def routes(self) -> list[Route]:
        return [("test.ping.*", self.on_ping)]

    def actions(self) -> list[Action]:
        return [Action("pings", lambda agent: self.pings)]

    async def on_ping(self, signal: Signal) -> None:
        self.pings += 1
        self.agent.publish(
            Signal.new(
                "test.pong.reply",
                {Atom("to"): signal.id},
                source="ping_skill",
                node=str(self.agent.node.name),
            )
        )


class Echo(Agent):
    def actions(self) -> list[Action]:
        return [ADD]

    async def handle_request(self, request: Any, caller: Any) -> Any:
        if isinstance(request, tuple) and request[0] == "echo":
            return request[1]
        return await super().handle_request(request, caller)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def py(epmd) -> AsyncIterator[Node]:  # type: ignore[no-untyped-def]
    node = Node(f"{unique('pya')}@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def test_cmd_and_requests_from_beam(beam_app: ErlNode, py: Node) -> None:
    await py.spawn(Echo("echo_agent"), name="echo_agent")
    target = f"{{echo_agent, '{py.name}'}}"
    assert await beval(beam_app, f"gen_server:call({target}, {{cmd, add, #{{a => 2}}}})") == (
        Atom("ok"),
        3,
    )
    kw = await beval(beam_app, f"gen_server:call({target}, {{cmd, add, [{{a, 5}}, {{b, 5}}]}})")
    assert kw == (Atom("ok"), 10)
    bad = await beval(beam_app, f'gen_server:call({target}, {{cmd, add, #{{a => <<"x">>}}}})')
    assert bad[0] == "error" and bad[1][:2] == (Atom("invalid_params"), Atom("a"))
    assert b"must be of type integer" in bad[1][2]
    unknown = await beval(beam_app, f"gen_server:call({target}, {{cmd, nope, #{{}}}})")
    assert unknown == (Atom("error"), (Atom("unknown_action"), Atom("nope")))
    assert await beval(beam_app, f"gen_server:call({target}, {{echo, [1, 2]}})") == [1, 2]
    other = await beval(beam_app, f"gen_server:call({target}, what)")
    assert other == (Atom("error"), (Atom("unknown_request"), Atom("what")))
    state = await beval(beam_app, f"gen_server:call({target}, state)")
    assert state[Atom("actions")] == [Atom("add")]


async def test_routes_sensors_and_publishing(beam_app: ErlNode, py: Node) -> None:
    bus = ClusterBus(py, [beam_app.name])
    bus.start()
    try:
        skill = PingSkill()
        tick = FunctionSensor(
            "tick",
            0.1,
            lambda agent: [Signal.new("test.tick.beat", None, source="t", node=str(py.name))],
        )
        vitals = HostVitalsSensor(0.2)
        agent = Agent("pinger", bus=bus, skills=[skill], sensors=[tick, vitals])
        await py.spawn(agent, name="pinger")
        await bus.wait_relay()
        col = unique("col")
        start_collector(beam_app, col, "test.**")
        start_collector(beam_app, col + "h", "cluster.health.data")
        relay_subs = await beval(beam_app, "gen_server:call(dspex_signal_relay, subscriptions)")
        assert any(b"test.ping.*" in s[Atom("map")] for s in relay_subs.values())  # MapSets
        await beval(
            beam_app,
            "{ok, _} = 'Elixir.DSPEx.Clustering':publish("
            "'Elixir.DSPEx.Clustering.Signal':'new!'(<<\"test.ping.one\">>, #{}, []))",
        )

        async def got(name: str, type_: str) -> list[Signal]:
            signals = [Signal.from_term(s) for s in collected(beam_app, name)]
            return [
                s for s in signals if s.type == type_ and s.source.startswith(f"dspex://{py.name}")
            ]

        assert await eventually(lambda: got(col, "test.pong.reply"))
        assert await eventually(lambda: got(col, "test.tick.beat"))
        health = (await eventually(lambda: got(col + "h", "cluster.health.data")))[0]
        assert health.get("node") == py.name and health.get("kind") == Atom("python")
        assert 0.0 <= health.get("cpu") <= 1.0 and 0.0 < health.get("memory") < 1.0
        assert health.get("process_rss_mb") > 0
        assert skill.pings == 1
        assert await py.call("pinger", (Atom("cmd"), Atom("pings"), {})) == (Atom("ok"), 1)
    finally:
        await bus.stop()


async def test_resubscribes_when_the_beam_node_comes_back(epmd) -> None:  # type: ignore[no-untyped-def]
    """The only BEAM node restarts (same name): the bus dials it again and re-subscribes."""
    name = unique("phoenix")
    first = start_app_node(epmd.port, COOKIE, name=name)
    second: ErlNode | None = None
    py = Node(f"{unique('pyb')}@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port)
    await py.start()
    bus = ClusterBus(py, [first.name], retry_interval=0.2)
    bus.start()
    try:
        skill = PingSkill()
        watcher = Watcher("reborn", bus=bus, skills=[skill], sensors=[NodeEventSensor()])
        await py.spawn(watcher, name="reborn")
        assert await bus.wait_relay() == first.name
        first.stop()
        await eventually(lambda: _no_relay(bus))
        await eventually(lambda: _saw(watcher, "nodedown", first.name))  # event-driven sensor
        second = start_app_node(epmd.port, COOKIE, name=name)
        assert await bus.wait_relay(15) == second.name  # same name, a new node
        await eventually(lambda: _saw(watcher, "nodeup", second.name))
        await beval(
            second,
            "{ok, _} = 'Elixir.DSPEx.Clustering':publish("
            "'Elixir.DSPEx.Clustering.Signal':'new!'(<<\"test.ping.again\">>, #{}, []))",
        )
        await eventually(lambda: _pinged(skill))
    finally:
        await bus.stop()
        await py.stop()
        first.stop()
        if second is not None:
            second.stop()


class Watcher(Agent):
    """Keeps the events nobody routed (nodeup/nodedown from NodeEventSensor)."""

    def setup(self) -> None:
        self.events: list[Any] = []

    async def handle_event(self, message: Any) -> None:
        self.events.append(message)


async def _saw(agent: Watcher, tag: str, node: str) -> bool:
    return any(e[0] == tag and e[1] == node for e in agent.events if isinstance(e, tuple))


async def _no_relay(bus: ClusterBus) -> bool:
    return bus.relay is None


async def _pinged(skill: PingSkill) -> bool:
    return skill.pings >= 1
