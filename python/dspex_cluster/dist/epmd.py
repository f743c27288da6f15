"""EPMD requests and replies as bytes (no I/O).

Every request is framed with a 2-byte big-endian length. Replies are parsed from whatever has been
received so far: a parser returns None while the reply is incomplete.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ALIVE2_REQ = 120
ALIVE2_RESP = 121
ALIVE2_X_RESP = 118
PORT_PLEASE2_REQ = 122
PORT2_RESP = 119
NAMES_REQ = 110

# Bounds on what we read from an epmd (or something pretending to be one): a registered name is
# at most 255 characters (epmd's MAXSYMLEN, 255 * 4 bytes of UTF-8); the extra field is ours to
# bound; a NAMES listing of thousands of nodes is still far below MAX_NAMES_REPLY.
MAX_NAME_BYTES = 255 * 4
MAX_EXTRA_BYTES = 1024
MAX_NAMES_REPLY = 1 << 20

NODE_TYPE_VISIBLE = 77
NODE_TYPE_HIDDEN = 72
PROTOCOL_TCP = 0
DIST_VERSION = 6


class EPMDError(Exception):
    """EPMD refused a request or sent something we cannot parse."""


@dataclass(frozen=True)
class NodeInfo:
    """A PORT_PLEASE2 answer: where and how a node listens."""

    name: str
    port: int
    node_type: int
    protocol: int
    highest_version: int
    lowest_version: int
    extra: bytes = b""

    @property
    def hidden(self) -> bool:
        return self.node_type == NODE_TYPE_HIDDEN


def _frame(body: bytes) -> bytes:
    return struct.pack(">H", len(body)) + body


def alive2_request(port: int, name: str, hidden: bool, extra: bytes = b"") -> bytes:
    """Register `name` (the part before '@') listening on `port`."""
    raw = name.encode("utf-8")
    node_type = NODE_TYPE_HIDDEN if hidden else NODE_TYPE_VISIBLE
    body = struct.pack(
        ">BHBBHHH", ALIVE2_REQ, port, node_type, PROTOCOL_TCP, DIST_VERSION, DIST_VERSION, len(raw)
    )
    return _frame(body + raw + struct.pack(">H", len(extra)) + extra)


def parse_alive2_response(buf: bytes) -> tuple[int, int] | None:
    """(result, creation) from an ALIVE2_X_RESP (32-bit creation) or old ALIVE2_RESP (16-bit)."""
    if not buf:
        return None
    tag = buf[0]
    if tag == ALIVE2_X_RESP:
        if len(buf) < 6:
            return None
        result, creation = struct.unpack_from(">BI", buf, 1)
        return result, creation
    if tag == ALIVE2_RESP:
        if len(buf) < 4:
            return None
        result, creation = struct.unpack_from(">BH", buf, 1)
        return result, creation
    raise EPMDError(f"unexpected ALIVE2 reply tag {tag}")


def port_please2_request(name: str) -> bytes:
    return _frame(bytes([PORT_PLEASE2_REQ]) + name.encode("utf-8"))


def parse_port_please2_response(buf: bytes, closed: bool = False) -> NodeInfo | None:
    """The node's address, or raises EPMDError when the name is not registered.

    Returns None while more bytes are needed (`closed` says no more will come).
    """
    if len(buf) < 2:
        if closed:
            raise EPMDError("epmd closed the connection before answering PORT_PLEASE2")
        return None
    if buf[0] != PORT2_RESP:
        raise EPMDError(f"unexpected PORT_PLEASE2 reply tag {buf[0]}")
    if buf[1] != 0:
        raise EPMDError(f"name not registered with epmd (result {buf[1]})")
    try:
        port, node_type, proto, high, low, nlen = struct.unpack_from(">HBBHHH", buf, 2)
        name_end = 12 + nlen
        name = bytes(buf[12:name_end]).decode("utf-8")
        (elen,) = struct.unpack_from(">H", buf, name_end)
        extra = bytes(buf[name_end + 2 : name_end + 2 + elen])
        if len(extra) != elen:
            raise struct.error("short extra")
    except (struct.error, UnicodeDecodeError):
        if closed:
            raise EPMDError("truncated PORT_PLEASE2 reply") from None
        return None
    return NodeInfo(name, port, node_type, proto, high, low, extra)


def names_request() -> bytes:
    return _frame(bytes([NAMES_REQ]))


def parse_names_response(buf: bytes) -> tuple[int, dict[str, int]]:
    """(epmd port, {name: port}) from the complete reply (epmd closes after sending it)."""
    if len(buf) < 4:
        raise EPMDError("truncated NAMES reply")
    (epmd_port,) = struct.unpack_from(">I", buf, 0)
    names: dict[str, int] = {}
    for line in bytes(buf[4:]).decode("utf-8", "replace").splitlines():
        parts = line.split()
        # "name <N> at port <P>"
        if len(parts) == 5 and parts[0] == "name" and parts[2] == "at" and parts[3] == "port":
            names[parts[1]] = int(parts[4])
    return epmd_port, names
