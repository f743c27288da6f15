"""Talking to epmd over asyncio: register (and stay registered), look up a node, list names.

Every reply is read with a deadline and a bound on its size: a broken or fake epmd can make a
request fail, never make us read without end.
"""

from __future__ import annotations

import asyncio
import os
import struct

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
    """Register `name` with the local epmd. Every failure is an EPMDError whose message says in
    one line what to do (start epmd, free the port, pick another name)."""
    where = f"{host}:{epmd_port}"
    not_epmd = (
        f"is another program using port {epmd_port}? Give a free port in ERL_EPMD_PORT or "
        "--epmd-port"
    )
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, epmd_port), timeout)
    except ConnectionRefusedError:
        start = (
            "epmd -daemon" if epmd_port == DEFAULT_EPMD_PORT else f"epmd -port {epmd_port} -daemon"
        )
        raise E.EPMDError(f"epmd is not running on {where}: start it with `{start}`") from None
    except (OSError, TimeoutError) as err:
        raise E.EPMDError(f"cannot reach epmd on {where}: {err or 'timed out'}") from None
    try:
        writer.write(E.alive2_request(port, name, hidden))
        buf = b""
        while (reply := E.parse_alive2_response(buf)) is None:
            chunk = await asyncio.wait_for(reader.read(64), timeout)
            if not chunk:
                raise E.EPMDError(f"the program on {where} closed the connection; {not_epmd}")
            buf += chunk
        result, creation = reply
        if result != 0:
            raise E.EPMDError(
                f"the name {name!r} is in use: epmd on {where} already has a node of that name"
            )
        if creation == 0:  # reserved (erl_ext_dist): no node may use it
            raise E.EPMDError("epmd answered creation 0, which is reserved")
        return Registration(writer, creation)
    except E.EPMDError as err:
        writer.close()
        if "unexpected ALIVE2 reply" in str(err):
            raise E.EPMDError(
                f"the program on {where} does not answer as epmd; {not_epmd}"
            ) from None
        raise
    except TimeoutError:
        writer.close()
        raise E.EPMDError(f"no answer from {where} within {timeout} s; {not_epmd}") from None
    except BaseException:
        writer.close()
        raise


async def port_please(host: str, name: str, epmd_port: int, timeout: float = 5) -> E.NodeInfo:
    """Where `name` listens on `host`: exactly one PORT2_RESP is read, field by field."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, epmd_port)
        try:
            writer.write(E.port_please2_request(name))
            raw = await reader.readexactly(2)
            if raw[0] == E.PORT2_RESP and raw[1] == 0:
                raw += await reader.readexactly(10)  # port, type, protocol, versions, Nlen
                (nlen,) = struct.unpack_from(">H", raw, 10)
                if nlen > E.MAX_NAME_BYTES:
                    raise E.EPMDError(f"epmd reply names a node of {nlen} bytes")
                raw += await reader.readexactly(nlen + 2)
                (elen,) = struct.unpack_from(">H", raw, 12 + nlen)
                if elen > E.MAX_EXTRA_BYTES:
                    raise E.EPMDError(f"epmd reply carries {elen} bytes of extra data")
                raw += await reader.readexactly(elen)
        except asyncio.IncompleteReadError:
            raise E.EPMDError("epmd closed the connection in the middle of its reply") from None
        finally:
            writer.close()
    info = E.parse_port_please2_response(raw, closed=True)
    assert info is not None  # closed=True never returns None
    return info


async def names(host: str, epmd_port: int, timeout: float = 5) -> dict[str, int]:
    """The names registered with the epmd on `host` (the reply ends when epmd closes)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, epmd_port)
        try:
            writer.write(E.names_request())
            raw = bytearray()
            while chunk := await reader.read(65536):
                raw += chunk
                if len(raw) > E.MAX_NAMES_REPLY:
                    raise E.EPMDError(f"epmd NAMES reply over {E.MAX_NAMES_REPLY} bytes")
        finally:
            writer.close()
    return E.parse_names_response(bytes(raw))[1]
