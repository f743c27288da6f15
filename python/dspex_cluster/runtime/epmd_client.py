"""Talking to epmd over asyncio: register (and stay registered), look up a node, list names."""

from __future__ import annotations

import asyncio
import os

from dspex_cluster.dist import epmd as E

DEFAULT_EPMD_PORT = 4369


def default_epmd_port() -> int:
    return int(os.environ.get("ERL_EPMD_PORT", DEFAULT_EPMD_PORT))


class Registration:
    """An ALIVE2 registration; epmd forgets the name when this socket closes."""

    def __init__(self, writer: asyncio.StreamWriter, creation: int) -> None:
        self._writer = writer
        self.creation = creation

    def close(self) -> None:
        self._writer.close()


async def register(
    name: str, port: int, hidden: bool, epmd_port: int, host: str = "127.0.0.1", timeout: float = 5
) -> Registration:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, epmd_port), timeout)
    try:
        writer.write(E.alive2_request(port, name, hidden))
        buf = b""
        while (reply := E.parse_alive2_response(buf)) is None:
            chunk = await asyncio.wait_for(reader.read(64), timeout)
            if not chunk:
                raise E.EPMDError("epmd closed the connection during ALIVE2")
            buf += chunk
        result, creation = reply
        if result != 0:
            raise E.EPMDError(f"epmd refused to register {name!r} (result {result}; name taken?)")
        return Registration(writer, creation)
    except BaseException:
        writer.close()
        raise


async def _request(host: str, epmd_port: int, request: bytes, timeout: float) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, epmd_port), timeout)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.read(), timeout)  # epmd closes after answering
    finally:
        writer.close()


async def port_please(host: str, name: str, epmd_port: int, timeout: float = 5) -> E.NodeInfo:
    raw = await _request(host, epmd_port, E.port_please2_request(name), timeout)
    info = E.parse_port_please2_response(raw, closed=True)
    assert info is not None  # closed=True never returns None
    return info


async def names(host: str, epmd_port: int, timeout: float = 5) -> dict[str, int]:
    raw = await _request(host, epmd_port, E.names_request(), timeout)
    return E.parse_names_response(raw)[1]
