"""Hostile bytes close only the connection that sent them; the node keeps serving others.

The attacker is our own test client: it does a real handshake (dist.handshake state machine over a
plain socket), then sends one bad frame. A real OTP node works alongside throughout.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator

import pytest
from otp import Epmd, ErlNode, beval, unique

from dspex_cluster import Atom, Node
from dspex_cluster.dist import flags as F
from dspex_cluster.dist.handshake import Established, InitiatorHandshake
from dspex_cluster.etf import encode

COOKIE = "dspex-test-cookie"
MAX_FRAME = 1 << 20


@pytest.fixture
async def target(epmd: Epmd) -> AsyncIterator[Node]:
    node = Node(
        f"{unique('pyb')}@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port, max_frame=MAX_FRAME
    )
    await node.start()
    node.expose("svc", {"echo": lambda x: x})
    try:
        yield node
    finally:
        await node.stop()


async def raw_client(node: Node) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A hand-driven peer that completes a real handshake with `node`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    hs = InitiatorHandshake(
        f"{unique('raw')}@127.0.0.1", F.node_flags(True), 1, COOKIE, peer_name=node.name
    )
    writer.write(hs.data_to_send())
    while True:
        data = await asyncio.wait_for(reader.read(4096), 5)
        assert data, "handshake refused"
        events = hs.receive_data(data)
        writer.write(hs.data_to_send())
        if any(isinstance(e, Established) for e in events):
            return reader, writer


def nested_list(depth: int) -> bytes:
    # [[[...]]] built by hand: LIST_EXT len 1, ..., NIL
    return b"\x83" + b"\x6c\x00\x00\x00\x01" * depth + b"\x6a" + b"\x6a" * depth


BAD_FRAMES = {
    "truncated term": b"p" + encode((2, Atom(""), Atom("x")))[:-3],
    "garbage": b"p\x83\xff\xfe\xfd\xfc\xfb",
    "not pass-through": b"\x01\x02\x03",
    "too deep": b"p" + encode((2, Atom(""), Atom("x"))) + nested_list(5000),
    "unknown opcode": b"p" + encode((99, Atom("x"))),
    "control not a tuple": b"p" + encode([1, 2, 3]),
    "bad link arity": b"p" + encode((1,)),
    "stray bytes": b"p" + encode((2, Atom(""), Atom("x"))) + encode(1) + b"\x00",
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
async def test_bad_frame_closes_that_connection_only(
    case: str, target: Node, beam: ErlNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dspex_cluster")
    good_reader, good_writer = await raw_client(target)
    reader, writer = await raw_client(target)
    body = BAD_FRAMES[case]
    writer.write(struct.pack(">I", len(body)) + body)
    assert await _closed(reader), f"{case}: connection was not closed"
    assert any("closing the connection" in r.getMessage() for r in caplog.records)
    await _still_serving(target, beam, good_reader, good_writer)
    good_writer.close()


async def test_oversized_frame(target: Node, beam: ErlNode) -> None:
    reader, writer = await raw_client(target)
    writer.write(struct.pack(">I", MAX_FRAME + 1) + b"p")  # refused from the header alone
    assert await _closed(reader)
    await _still_serving(target, beam)


async def test_garbage_instead_of_a_handshake(target: Node, beam: ErlNode) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    writer.write(b"\xff\xff" + b"GET / HTTP/1.1\r\n" * 10)
    assert await _closed(reader)
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    writer.write(b"\x00\x05N\x00\x00\x00\x00")  # a name that is cut short
    assert await _closed(reader)
    await _still_serving(target, beam)


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), 10)
            if not data:
                return True
    except ConnectionError:
        return True


async def _still_serving(
    node: Node,
    beam: ErlNode,
    reader: asyncio.StreamReader | None = None,
    writer: asyncio.StreamWriter | None = None,
) -> None:
    assert await beval(beam, f"erpc:call('{node.name}', svc, echo, [still_here])") == "still_here"
    if writer is not None and reader is not None:
        # the other raw connection is untouched: a tick still gets a tick back
        writer.write(b"\x00\x00\x00\x00")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"\x00\x00\x00\x00"
