"""EPMD registration, handshakes in both directions, cookies, hidden/visible, simultaneous
connects, connect on demand — against real OTP 25 and OTP 28 nodes."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest
from otp import Epmd, ErlNode, beval, unique

from dspex_cluster import Atom, Node
from dspex_cluster.dist import epmd as E
from dspex_cluster.runtime import epmd_client

COOKIE = "dspex-test-cookie"


async def test_epmd_registration_names_and_port_please(epmd: Epmd, py: Node) -> None:
    names = await epmd_client.names("127.0.0.1", epmd.port)
    assert names[py.alive] == py.port
    info = await epmd_client.port_please("127.0.0.1", py.alive, epmd.port)
    assert info.port == py.port and info.node_type == E.NODE_TYPE_HIDDEN
    assert info.highest_version == info.lowest_version == 6
    assert py.creation != 0
    with pytest.raises(E.EPMDError, match="not registered"):
        await epmd_client.port_please("127.0.0.1", "nobody_here", epmd.port)
    # the name stays registered while the socket is open and is freed by stop()
    twin = Node(py.name, cookie=COOKIE, epmd_port=epmd.port)
    with pytest.raises(E.EPMDError):
        await twin.start()


async def test_visible_node_type_in_epmd(epmd: Epmd) -> None:
    node = Node(f"{unique('pyv')}@127.0.0.1", cookie=COOKIE, hidden=False, epmd_port=epmd.port)
    await node.start()
    try:
        info = await epmd_client.port_please("127.0.0.1", node.alive, epmd.port)
        assert info.node_type == E.NODE_TYPE_VISIBLE
    finally:
        await node.stop()
    assert node.alive not in await epmd_client.names("127.0.0.1", epmd.port)


async def test_beam_dials_python_hidden(beam: ErlNode, py: Node) -> None:
    assert await beval(beam, f"net_adm:ping('{py.name}')") == "pong"
    assert Atom(py.name) in await beval(beam, "nodes(hidden)")
    assert Atom(py.name) not in await beval(beam, "nodes()")
    assert Atom(beam.name) in py.nodes()
    conn = py.connection(beam.name)
    assert conn is not None and not conn.initiator


async def test_python_dials_beam_visible(beam: ErlNode, epmd: Epmd) -> None:
    node = Node(f"{unique('pyv')}@127.0.0.1", cookie=COOKIE, hidden=False, epmd_port=epmd.port)
    await node.start()
    try:
        assert await node.connect(beam.name)
        assert Atom(node.name) in await beval(beam, "nodes()")
        conn = node.connection(beam.name)
        assert conn is not None and conn.initiator
        got = await beval(beam, f"net_kernel:node_info('{node.name}', type)")
        assert got == (Atom("ok"), Atom("normal"))
    finally:
        await node.stop()
    await asyncio.sleep(0.2)
    assert Atom(node.name) not in await beval(beam, "nodes()")


async def test_connect_on_demand_by_send(beam: ErlNode, py: Node) -> None:
    await beval(
        beam,
        "register(od, spawn(fun() -> receive M -> register(od_got, spawn(fun() -> "
        "receive {get, F} -> F ! M end end)) end end)), ok",
    )
    assert py.nodes() == []
    py.send((Atom("od"), Atom(beam.name)), Atom("hello_on_demand"))
    for _ in range(50):
        if await beval(beam, "whereis(od_got)") != "undefined":
            break
        await asyncio.sleep(0.05)
    assert await beval(beam, "od_got ! {get, self()}, receive M -> M after 2000 -> t end") == (
        "hello_on_demand"
    )


async def test_wrong_cookie_refused_and_logged_both_sides(
    beam: ErlNode, epmd: Epmd, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "a-wrong-cookie-nobody-should-see"
    node = Node(f"{unique('pybad')}@127.0.0.1", cookie=secret, epmd_port=epmd.port)
    await node.start()
    caplog.set_level(logging.INFO, logger="dspex_cluster")
    try:
        # Python dials with the wrong cookie: BEAM refuses and logs it
        assert not await node.connect(beam.name)
        for _ in range(40):
            if node.name in beam.log_text():
                break
            await asyncio.sleep(0.05)
        assert node.name in beam.log_text()  # BEAM logged the rejected attempt
        # BEAM dials us with the other cookie: we refuse and log it
        assert await beval(beam, f"net_adm:ping('{node.name}')") == "pang"
        assert any("cookie mismatch" in r.getMessage() for r in caplog.records)
        # the refused handshake leaves nothing pending: our next dial is tried (and refused)
        assert not await asyncio.wait_for(node.connect(beam.name), 10)
        assert all(secret not in r.getMessage() for r in caplog.records)
        assert COOKIE not in caplog.text and secret not in caplog.text
        assert node.nodes() == []
    finally:
        await node.stop()


async def test_simultaneous_connect_resolves_to_one_connection(beam: ErlNode, epmd: Epmd) -> None:
    # names on both sides of the comparison: one below and one above the BEAM node's name
    for prefix in ("aaa", "zzz"):
        node = Node(f"{unique(prefix)}@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port)
        await node.start()
        try:
            ours, theirs = await asyncio.gather(
                node.connect(beam.name), beval(beam, f"net_kernel:connect_node('{node.name}')")
            )
            assert ours is True and theirs is True
            await asyncio.sleep(0.3)
            assert node.nodes() == [Atom(beam.name)]
            assert Atom(node.name) in await beval(beam, "nodes(hidden)")
            assert await node.rpc(beam.name, "erlang", "node", []) == beam.name
        finally:
            await node.stop()
        await asyncio.sleep(0.2)


async def test_racing_connects_never_drop_a_connection_the_beam_saw_up(
    beam: ErlNode, epmd: Epmd
) -> None:
    """Both sides connect at nearly the same moment, over and over. A BEAM node must never see
    the connection go down except when we close it: a nodedown there makes `global` cut the
    node off cluster-wide. (Our dial overtaken by the BEAM's own connection used to answer
    "alive" with true, which made the BEAM kill the connection it already had up.)"""
    rng = random.Random(7)
    for prefix in ("aaa", "zzz"):  # below and above the BEAM node's name
        node = Node(f"{unique(prefix)}@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port)
        await node.start()
        counter = f"downs_{node.alive}"
        await beval(
            beam,
            f"register({counter}, spawn(fun() -> net_kernel:monitor_nodes(true, "
            f"[{{node_type, all}}]), (fun L(N) -> receive "
            f"{{nodedown, '{node.name}', _}} -> L(N + 1); "
            f"{{get, P}} -> P ! {{downs, N}}, L(N); _ -> L(N) end end)(0) end)), ok",
        )

        async def py_connect(delay: float, node: Node = node) -> bool:
            await asyncio.sleep(delay)
            return await node.connect(beam.name)

        try:
            for closed_by_us in range(25):
                ours, theirs = await asyncio.gather(
                    py_connect(rng.uniform(0, 0.008)),
                    beval(beam, f"net_kernel:connect_node('{node.name}')"),
                )
                assert ours is True and theirs is True
                await asyncio.sleep(0.05)
                downs = await beval(
                    beam, f"{counter} ! {{get, self()}}, receive {{downs, N}} -> N end"
                )
                assert downs == closed_by_us, f"the BEAM node lost us {downs - closed_by_us}x"
                assert node.nodes() == [Atom(beam.name)]
                await node.disconnect(beam.name)
                for _ in range(100):
                    if node.name not in await beval(beam, "nodes(hidden)"):
                        break
                    await asyncio.sleep(0.01)
        finally:
            await beval(beam, f"exit(whereis({counter}), kill)")
            await node.stop()


async def test_python_to_python_and_peer_restart(epmd: Epmd) -> None:
    a = Node(f"{unique('pa')}@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port)
    b_name = f"{unique('pb')}@127.0.0.1"
    b = Node(b_name, cookie=COOKIE, epmd_port=epmd.port)
    await a.start()
    await b.start()
    try:
        b.expose("m", {"f": lambda x: x * 2})
        assert await a.rpc(b_name, "m", "f", [21]) == 42
        await b.stop()
        await asyncio.sleep(0.1)
        b = Node(b_name, cookie=COOKIE, epmd_port=epmd.port)
        await b.start()
        b.expose("m", {"f": lambda x: x * 3})
        assert await a.rpc(b_name, "m", "f", [2]) == 6
    finally:
        await a.stop()
        await b.stop()


async def test_simultaneous_connect_between_two_python_nodes(
    epmd: Epmd, caplog: pytest.LogCaptureFixture
) -> None:
    """Both dial at once: the acceptor with the greater name answers nok (its own dial wins),
    the other answers ok_simultaneous and drops its dial; one connection survives."""
    caplog.set_level(logging.INFO, logger="dspex_cluster")
    for _ in range(3):
        a = Node(f"{unique('sa')}@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port)
        b = Node(f"{unique('sb')}@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port)
        await a.start()
        await b.start()
        try:
            b.expose("m", {"who": lambda: Atom("b")})
            a.expose("m", {"who": lambda: Atom("a")})
            assert await asyncio.gather(a.connect(b.name), b.connect(a.name)) == [True, True]
            await asyncio.sleep(0.2)
            assert a.nodes() == [b.name] and b.nodes() == [a.name]
            assert await a.rpc(b.name, "m", "who", []) == "b"
            assert await b.rpc(a.name, "m", "who", []) == "a"
            conn_a, conn_b = a.connection(b.name), b.connection(a.name)
            assert conn_a is not None and conn_b is not None
            assert conn_a.initiator != conn_b.initiator  # the two ends of one TCP connection
        finally:
            await a.stop()
            await b.stop()
    assert "theirs wins (ok_simultaneous)" in caplog.text or "ours wins (nok)" in caplog.text


async def test_racing_connects_between_two_python_nodes_keep_one_connection(epmd: Epmd) -> None:
    """Both ends are ours: jittered racing connects always settle on one connection, and
    neither side ever loses a connection it saw up (only our own disconnects count)."""
    rng = random.Random(11)
    a = Node(f"{unique('ra')}@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port)
    b = Node(f"{unique('rb')}@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port)
    await a.start()
    await b.start()
    downs = {a.name: 0, b.name: 0}
    a.on_nodedown(lambda _peer, _why: downs.__setitem__(a.name, downs[a.name] + 1))
    b.on_nodedown(lambda _peer, _why: downs.__setitem__(b.name, downs[b.name] + 1))

    async def dial(node: Node, peer: str, delay: float) -> bool:
        await asyncio.sleep(delay)
        return await node.connect(peer)

    try:
        for closed_by_us in range(20):
            assert await asyncio.gather(
                dial(a, b.name, rng.uniform(0, 0.004)), dial(b, a.name, rng.uniform(0, 0.004))
            ) == [True, True]
            await asyncio.sleep(0.05)
            assert downs == {a.name: closed_by_us, b.name: closed_by_us}
            conn_a, conn_b = a.connection(b.name), b.connection(a.name)
            assert conn_a is not None and conn_b is not None
            assert conn_a.initiator != conn_b.initiator
            await a.disconnect(b.name)
            for _ in range(100):
                if not b.nodes():
                    break
                await asyncio.sleep(0.01)
    finally:
        await a.stop()
        await b.stop()
