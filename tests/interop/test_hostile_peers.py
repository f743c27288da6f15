"""A peer that completes a real handshake and then lies: control messages in another node's name,
malformed spawn requests, and terms built to make log lines huge.

The peer is a hand-driven client (the dist.handshake state machine over a plain socket), so it
can send what no OTP node would. Checked: the node refuses as OTP's dist.c does (the connection
closes), keeps no state for the refused message, never dials a node a peer names, and no log
record grows with what the peer sent.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from otp import Epmd, unique

from dspex_cluster import Atom, Node
from dspex_cluster.dist import control as C
from dspex_cluster.dist import flags as F
from dspex_cluster.dist.handshake import Established, InitiatorHandshake
from dspex_cluster.etf import Pid, Reference, decode_dist_frame, encode
from dspex_cluster.runtime.process import Process

COOKIE = "dspex-test-cookie"
MAX_FRAME = 4 << 20
CREATION = 7


class Sleeper(Process):
    """A live local process to link to and monitor."""

    async def run(self) -> None:
        await self.receive()


@dataclass
class Peer:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    name: Atom

    def pid(self, n: int = 1) -> Pid:
        return Pid(self.name, n, 0, CREATION)

    def send(self, control: tuple, message: object = None, *, raw: bytes | None = None) -> None:
        body = b"p" + (raw if raw is not None else encode(control))
        if message is not None:
            body += encode(message)
        self.writer.write(struct.pack(">I", len(body)) + body)

    async def closed(self, within: float = 10) -> bool:
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), within)
                if not data:
                    return True
        except ConnectionError:
            return True
        except TimeoutError:
            return False

    async def read_frame(self, within: float = 5) -> bytes:
        while True:
            (n,) = struct.unpack(">I", await asyncio.wait_for(self.reader.readexactly(4), within))
            if n:
                return await asyncio.wait_for(self.reader.readexactly(n), within)


async def connect_peer(node: Node) -> Peer:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    name = Atom(f"{unique('liar')}@127.0.0.1")
    hs = InitiatorHandshake(name, F.node_flags(True), CREATION, COOKIE, peer_name=node.name)
    writer.write(hs.data_to_send())
    while True:
        data = await asyncio.wait_for(reader.read(4096), 5)
        assert data, "handshake refused"
        events = hs.receive_data(data)
        writer.write(hs.data_to_send())
        if any(isinstance(e, Established) for e in events):
            break
    for _ in range(100):  # the node registers the connection on its side too
        if node.connection(name) is not None:
            break
        await asyncio.sleep(0.01)
    return Peer(reader, writer, name)


@pytest.fixture
async def target(epmd: Epmd) -> AsyncIterator[Node]:
    node = Node(
        f"{unique('pyh')}@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port, max_frame=MAX_FRAME
    )
    await node.start()
    node.expose("svc", {"echo": lambda x: x})
    try:
        yield node
    finally:
        await node.stop()


FOREIGN = Atom("elsewhere@127.0.0.1")


def foreign_pid() -> Pid:
    return Pid(FOREIGN, 42, 0, 1)


def ref(node: Atom) -> Reference:
    return Reference(node, CREATION, (1, 2, 3))


async def test_valid_link_from_the_peer_is_kept(target: Node) -> None:
    """The control case for the refusals below: a link from the peer's own pid is accepted."""
    live = await target.spawn(Sleeper())
    peer = await connect_peer(target)
    peer.send(C.link(peer.pid(), live))
    for _ in range(100):
        if peer.pid() in target._procs[live]._links:
            break
        await asyncio.sleep(0.01)
    assert peer.pid() in target._procs[live]._links
    assert not await peer.closed(within=0.3)
    peer.writer.close()


@pytest.mark.parametrize(
    "kind",
    [
        "link_live",
        "link_dead",
        "monitor_live",
        "monitor_dead",
        "unlink_id",
        "exit2",
        "pid_creation",
    ],
)
async def test_control_messages_in_another_nodes_name_are_refused(kind: str, target: Node) -> None:
    live = await target.spawn(Sleeper())
    dead = Pid(target.name, 30000, 0, target.creation)
    peer = await connect_peer(target)
    sender = foreign_pid()
    if kind == "link_live":
        peer.send(C.link(sender, live))
    elif kind == "link_dead":  # today's noproc EXIT went to the node named in the pid
        peer.send(C.link(sender, dead))
    elif kind == "monitor_live":
        peer.send(C.monitor_p(sender, live, ref(peer.name)))
    elif kind == "monitor_dead":
        peer.send(C.monitor_p(sender, dead, ref(peer.name)))
    elif kind == "unlink_id":  # the UNLINK_ID_ACK went to the node named in the pid
        peer.send(C.unlink_id(5, sender, live))
    elif kind == "exit2":
        peer.send(C.exit2(sender, live, Atom("kill")))
    else:  # our name but the wrong creation: an earlier incarnation of the peer, not this one
        peer.send(C.link(Pid(peer.name, 1, 0, CREATION + 1), live))
    assert await peer.closed(), "an invalid control message must close the connection"
    assert FOREIGN not in target._pending and target.connection(FOREIGN) is None, "dialled"
    ep = target._procs.get(live)
    assert ep is not None, "the linked process was killed by a foreign exit signal"
    assert not ep._links and not ep._monitored_by


SPAWN_MFA = (Atom("erpc"), Atom("execute_call"), 4)


@pytest.mark.parametrize("bad", ["caller_atom", "caller_foreign", "req_id", "mfa", "args"])
async def test_bad_spawn_request_leaves_no_process(bad: str, target: Node) -> None:
    peer = await connect_peer(target)
    caller, req_id, mfa = peer.pid(), ref(peer.name), SPAWN_MFA
    # a function that is not exposed: the refusal path, where the endpoint used to stay behind
    args: object = [ref(peer.name), Atom("svc"), Atom("nosuch"), [1]]
    if bad == "caller_atom":
        caller = Atom("not_a_pid")
    elif bad == "caller_foreign":
        caller = foreign_pid()
    elif bad == "req_id":
        req_id = 12  # type: ignore[assignment]
    elif bad == "mfa":
        mfa = (b"erpc", Atom("execute_call"), 4)  # type: ignore[assignment]
    else:
        args = Atom("not_a_list")
    before = set(target._procs)
    for _ in range(20):
        peer.send(C.spawn_request(req_id, caller, peer.pid(), mfa, [Atom("monitor")]), args)
    assert await peer.closed()
    assert set(target._procs) == before, "a refused SPAWN_REQUEST left a process behind"
    assert FOREIGN not in target._pending


async def test_good_spawn_request_is_served(target: Node) -> None:
    """The control case: the same request, well formed, gets its reply on the connection."""
    peer = await connect_peer(target)
    req = ref(peer.name)
    peer.send(
        C.spawn_request(req, peer.pid(), peer.pid(), SPAWN_MFA, [Atom("monitor")]),
        [ref(peer.name), Atom("svc"), Atom("echo"), [1]],
    )
    control, _ = decode_dist_frame(await peer.read_frame())
    assert control[0] == C.SPAWN_REPLY and control[1] == req and isinstance(control[4], Pid)
    peer.writer.close()


LOG_BOUND = 4096


def _hostile_frames(peer: Peer, live: Pid) -> list[tuple[str, tuple, object]]:
    big = b"x" * (2 << 20)
    return [
        ("binary opcode", (big, 1, 2), None),
        ("huge int opcode", (10**5000, 1), None),
        ("huge int in a link", (C.LINK, peer.pid(), 10**5000), None),
        ("binary sender", (C.LINK, big, live), None),
        ("binary in a monitor", (C.MONITOR_P, peer.pid(), big, ref(peer.name)), None),
        ("binary spawn module", (C.SPAWN_REQUEST, ref(peer.name), peer.pid(), peer.pid(),
                                 (big, Atom("f"), 0), []), []),
    ]  # fmt: skip


async def test_no_log_record_grows_with_peer_data(
    target: Node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="dspex_cluster")
    live = await target.spawn(Sleeper())
    formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    probe = await connect_peer(target)
    for what, control, message in _hostile_frames(probe, live):
        peer = await connect_peer(target)
        caplog.clear()
        peer.send(control, message)
        assert await peer.closed(), what
        for _ in range(100):
            if any("closing the connection" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.01)
        assert any("closing the connection" in r.getMessage() for r in caplog.records), what
        for record in caplog.records:
            size = len(formatter.format(record))
            assert size <= LOG_BOUND, f"{what}: a {size}-character log record"
    # an exposed function that raises with the peer's argument in its message
    target.expose("svc", {"fail": _raise_with})
    req = ref(probe.name)
    caplog.clear()
    probe.send(
        C.spawn_request(req, probe.pid(), probe.pid(), SPAWN_MFA, [Atom("monitor")]),
        [ref(probe.name), Atom("svc"), Atom("fail"), [b"y" * (1 << 20)]],
    )
    await probe.read_frame()
    await asyncio.sleep(0.05)
    assert caplog.records, "the failing call was not logged at all"
    for record in caplog.records:
        assert len(formatter.format(record)) <= LOG_BOUND
    probe.writer.close()


def _raise_with(value: object) -> None:
    raise ValueError(f"cannot use {value!r}")


# -- a broken or fake epmd ----------------------------------------------------------------------


async def _fake_epmd(reply: bytes, stream: bool = False) -> tuple[asyncio.Server, int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        try:
            writer.write(reply)
            while stream:  # an endless reply: bytes for as long as anyone reads
                writer.write(b"\x00" * 65536)
                await writer.drain()
            await writer.drain()
            await asyncio.sleep(30)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_epmd_lookup_reads_one_bounded_reply() -> None:
    from dspex_cluster.dist.epmd import EPMDError
    from dspex_cluster.runtime import epmd_client

    # a well-formed PORT2_RESP, then garbage that must not be read
    good = struct.pack(">BBHBBHHH", 119, 0, 4321, 77, 0, 6, 6, 3) + b"abc" + b"\x00\x00"
    server, port = await _fake_epmd(good, stream=True)
    try:
        info = await epmd_client.port_please("127.0.0.1", "abc", port, timeout=2)
        assert (info.port, info.name) == (4321, "abc")
    finally:
        server.close()
    # a reply that claims a 65,535-byte name: refused before reading it
    huge = struct.pack(">BBHBBHHH", 119, 0, 4321, 77, 0, 6, 6, 65535)
    server, port = await _fake_epmd(huge, stream=True)
    try:
        with pytest.raises(EPMDError):
            await epmd_client.port_please("127.0.0.1", "abc", port, timeout=2)
    finally:
        server.close()
    # a NAMES reply that never ends
    server, port = await _fake_epmd(b"\x00\x00\x11\x11", stream=True)
    try:
        with pytest.raises(EPMDError):
            await epmd_client.names("127.0.0.1", port, timeout=5)
    finally:
        server.close()


async def test_epmd_creation_zero_is_refused() -> None:
    from dspex_cluster.dist.epmd import EPMDError
    from dspex_cluster.runtime import epmd_client

    server, port = await _fake_epmd(struct.pack(">BBI", 118, 0, 0))
    try:
        with pytest.raises(EPMDError, match="creation 0"):
            await epmd_client.register("x", 5555, True, port, timeout=2)
    finally:
        server.close()


# -- large frames are decoded away from the event loop -----------------------------------------


class Sink(Process):
    def __init__(self) -> None:
        self.got: list[object] = []

    async def run(self) -> None:
        while True:
            self.got.append(await self.receive())


async def test_large_frames_are_decoded_off_the_loop_in_order(
    target: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from dspex_cluster.runtime import connection

    threads: list[int] = []
    original = connection.decode_frame_body

    def recording(body: bytes) -> tuple:
        threads.append(threading.get_ident())
        return original(body)

    monkeypatch.setattr(connection, "decode_frame_body", recording)
    target.decode_in_thread_above = 10_000
    sink = Sink()
    await target.spawn(sink, name="sink")
    peer = await connect_peer(target)
    big = list(range(300, 20_300))  # about 100 KB on the wire
    for i in range(1, 7):
        peer.send(C.reg_send(peer.pid(), Atom("sink")), (i, big if i % 2 == 0 else []))
    for _ in range(500):
        if len(sink.got) == 6:
            break
        await asyncio.sleep(0.01)
    assert [m[0] for m in sink.got] == [1, 2, 3, 4, 5, 6]  # type: ignore[index]
    assert sink.got[1] == (2, big)
    assert len(threads) == 3 and threading.get_ident() not in threads
    assert not await peer.closed(within=0.2)
    peer.writer.close()
