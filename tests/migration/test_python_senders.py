"""A BEAM agent migrated back and forth while a Python sender and a BEAM sender address it by
id (`dspex_cluster.agent_ref.AgentRef`, `Agent.send/call`): every message delivered once, in each
sender's order (the agent records what it got; the history is checked)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from beam_app import COOKIE, start_app_node
from otp import unique

from dspex_cluster import Atom, Node
from dspex_cluster.agent_ref import AgentRef

pytestmark = pytest.mark.otp

MIG = "'Elixir.DSPEx.Clustering.Migration'"
AGENT = "'Elixir.DSPEx.Clustering.Agent'"


@pytest.mark.asyncio
async def test_python_and_beam_senders_through_repeated_migrations(  # type: ignore[no-untyped-def]
    epmd, recording_agent_ebin
) -> None:
    extra = ("-pa", recording_agent_ebin)
    b1 = start_app_node(epmd.port, COOKIE, "mb", erl_args=extra)
    b2 = start_app_node(epmd.port, COOKIE, "mb", erl_args=extra)
    py = Node(f"{unique('pymig')}@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port)
    await py.start()
    try:
        assert b1.eval(f"net_kernel:connect_node('{b2.name}')") is True
        b1.eval("global:sync()")
        name = unique("rec")
        agent_id = f'{{agent, <<"{name}">>}}'
        started = b1.eval(
            f"{MIG}:start_agent('Elixir.DSPEx.Test.RecordingAgent', [{{id, {agent_id}}}])"
        )
        assert started[0] == "ok"
        ref = AgentRef(py, (Atom("agent"), name.encode()), beams=[b1.name, b2.name])
        assert await ref.call(Atom("node")) == Atom(b1.name)

        n = 400
        # a BEAM sender on b2 (numbered by Agent.send/call there)
        b2.eval(
            f"Me = self(), spawn(fun() -> 'Elixir.DSPEx.Test.Sender':run({agent_id}, beam, {n}, Me)"
            " end), ok"
        )

        async def python_sender() -> None:
            for i in range(1, n + 1):
                if i % 10 == 0:
                    assert await ref.call((Atom("msg"), Atom("python"), i), timeout=10) == Atom(
                        "ok"
                    )
                else:
                    await ref.send((Atom("msg"), Atom("python"), i))
                if i % 4 == 0:
                    await asyncio.sleep(0.001)

        moves: list[object] = []

        def migrate_repeatedly() -> None:
            for k in range(12):
                target = b2.name if k % 2 == 0 else b1.name
                moves.append(b1.eval(f"{MIG}:migrate({agent_id}, '{target}', [{{grace_ms, 300}}])"))

        mover = threading.Thread(target=migrate_repeatedly)
        mover.start()
        await python_sender()
        await asyncio.to_thread(mover.join)
        assert sum(1 for m in moves if isinstance(m, tuple) and m[0] == "ok") >= 10, moves

        seen = await ref.call(Atom("seen"), timeout=10)
        for tag in (Atom("python"), Atom("beam")):
            await _until_complete(ref, tag, n)
        seen = await ref.call(Atom("seen"), timeout=10)
        for tag in (Atom("python"), Atom("beam")):
            got = list(reversed(seen[tag]))
            assert got == list(range(1, n + 1)), (tag, sorted(set(range(1, n + 1)) - set(got)))
        await ref.close()
    finally:
        await py.stop()
        b1.stop()
        b2.stop()


async def _until_complete(ref: AgentRef, tag: Atom, n: int, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len((await ref.call(Atom("seen"), timeout=10)).get(tag, [])) < n:
        assert loop.time() < deadline, f"{tag}: not all {n} messages arrived"
        await asyncio.sleep(0.1)
