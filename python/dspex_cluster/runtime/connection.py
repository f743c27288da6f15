"""One distribution connection: handshake, then framed traffic, as an asyncio Protocol.

Reads: every chunk the kernel hands us is parsed in one loop (all complete frames) and dispatched
synchronously. Writes: frames are collected and written once per event-loop iteration; the
transport's flow control (pause_writing) is exposed to senders through `drain()`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import traceback
from typing import TYPE_CHECKING, Any

from dspex_cluster.dist.framing import TICK_FRAME, FrameError, FrameReader, decode_frame_body
from dspex_cluster.dist.handshake import (
    AcceptorHandshake,
    AliveAsked,
    Established,
    HandshakeError,
    InitiatorHandshake,
    PeerNamed,
)
from dspex_cluster.etf import Atom
from dspex_cluster.etf.brief import LOG_LIMIT, brief, brief_exception, clip

if TYPE_CHECKING:
    from dspex_cluster.runtime.node import Node

log = logging.getLogger("dspex_cluster.runtime.connection")


class DistConnection(asyncio.Protocol):
    """`peer_name` given: we dial it (initiator). Otherwise we were dialled (acceptor)."""

    def __init__(self, node: Node, peer_name: str | None = None) -> None:
        self.node = node
        self.initiator = peer_name is not None
        self.peer_name: Atom | None = Atom(peer_name) if peer_name else None
        self.peer_flags = 0
        self.peer_creation = 0
        self.flags = 0
        self.transport: asyncio.Transport | None = None
        self.handshake: InitiatorHandshake | AcceptorHandshake | None = None
        self.reader: FrameReader | None = None
        self.established: asyncio.Future[DistConnection] = node.loop.create_future()
        self.closed = False
        self.close_reason: str | None = None
        self.superseded = False  # an attempt dropped for another connection to the same peer
        self.refused_nok = False  # the peer answered nok: its own attempt towards us wins
        self._wbuf: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._setup_timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.sent_since_tick = False
        self.received_since_tick = False
        self.missed_ticks = 0
        self._dispatching = False
        self._offloaded: asyncio.Future[Any] | None = None  # a large frame being decoded

    def __repr__(self) -> str:
        side = "out" if self.initiator else "in"
        return f"<DistConnection {side} {self.peer_name or '?'}>"

    @property
    def is_up(self) -> bool:
        return self.reader is not None and not self.closed

    # -- asyncio callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        node = self.node
        if self.initiator:
            assert self.peer_name is not None
            self.handshake = InitiatorHandshake(
                node.name,
                node.flags,
                node.creation,
                node._cookie,
                peer_name=self.peer_name,
                length_size=self._handshake_length(transport),
            )
            transport.write(self.handshake.data_to_send())
        else:
            self.handshake = AcceptorHandshake(
                node.name,
                node.flags,
                node.creation,
                node._cookie,
                length_size=self._handshake_length(transport),
            )
        self._setup_timer = node.loop.call_later(node.setup_time, self._setup_timeout)

    @staticmethod
    def _handshake_length(transport: asyncio.BaseTransport) -> int:
        """4-byte handshake lengths over TLS (inet_tls_dist's {packet, 4}), else 2."""
        return 4 if transport.get_extra_info("ssl_object") is not None else 2

    def data_received(self, data: bytes) -> None:
        if self.reader is not None:
            self._frames_received(data)
            return
        if self.closed or self.handshake is None:
            return
        try:
            self._handshake_events(self.handshake.receive_data(data))
        except HandshakeError as err:
            self._handshake_failed(str(err))

    def connection_lost(self, exc: Exception | None) -> None:
        was_up = self.reader is not None
        self.closed = True
        self._cancel_timers()
        if self.close_reason is None:
            self.close_reason = f"connection closed ({exc})" if exc else "connection closed by peer"
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        if was_up:
            self.node._connection_down(self, self.close_reason)
        else:
            if not self.established.done():
                self.established.set_exception(ConnectionError(self.close_reason))
                self.established.exception()  # retrieved: a failed dial is reported elsewhere
            self.node._handshake_ended(self, self.close_reason)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # -- handshake -----------------------------------------------------------------------------

    def _handshake_events(self, events: list[Any]) -> None:
        hs = self.handshake
        assert hs is not None
        for event in events:
            if isinstance(event, PeerNamed):
                assert isinstance(hs, AcceptorHandshake)
                self.peer_name = Atom(event.name)
                status = self.node._accept_status(self, self.peer_name)
                more = hs.send_status(status)
                self._write_raw(hs.data_to_send())
                if status not in ("ok", "ok_simultaneous", "alive"):
                    self._handshake_failed(f"refused {event.name}: {status}", quiet=True)
                    return
                self._handshake_events(more)
                return
            if isinstance(event, AliveAsked):
                assert isinstance(hs, InitiatorHandshake)
                try:
                    more = hs.answer_alive(self.node._still_pending(self))
                except HandshakeError as err:  # sfalse: a connection of ours is already up
                    self._write_raw(hs.data_to_send())
                    self._handshake_failed(str(err), quiet=True)
                    return
                self._write_raw(hs.data_to_send())
                self._handshake_events(more)
                return
            if isinstance(event, Established):
                self._write_raw(hs.data_to_send())
                self._established(event)
                return
        self._write_raw(hs.data_to_send())

    def _established(self, event: Established) -> None:
        self._cancel_timers()
        self.peer_name = Atom(event.peer_name)
        self.peer_flags = event.peer_flags
        self.peer_creation = event.peer_creation
        self.flags = event.flags
        self.reader = FrameReader(self.node.max_frame, self.node.decode_in_thread_above)
        self.handshake = None
        self.node._connection_up(self)
        if not self.established.done():
            self.established.set_result(self)
        if event.leftover:
            self._frames_received(event.leftover)

    def _handshake_failed(self, why: str, quiet: bool = False) -> None:
        if self.handshake is not None and getattr(self.handshake, "status", "") == "nok":
            self.refused_nok = True
        if not quiet and not self.superseded:
            peer = self.peer_name or self._peer_address()
            log.warning("distribution handshake with %s failed: %s", clip(str(peer), 80), clip(why))
        self.close_reason = why
        self.close(abort=False)

    def _setup_timeout(self) -> None:
        self._setup_timer = None
        if self.reader is None and not self.closed:
            self._handshake_failed(f"handshake not finished within {self.node.setup_time} s")

    def _peer_address(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return f"{peer[0]}:{peer[1]}" if peer else "unknown peer"

    # -- traffic -------------------------------------------------------------------------------

    def _frames_received(self, data: bytes) -> None:
        reader = self.reader
        assert reader is not None
        self.received_since_tick = True
        if self._offloaded is not None:  # behind a large frame: in order, after it
            reader.append(data)
            return
        frames, ticks = reader.feed(data)
        if ticks:
            self.send_frame(TICK_FRAME)
        self._dispatch(frames)
        if self.closed:
            return
        if reader.error is not None:
            self.abort(reader.error)
            return
        large = reader.take_large()
        if large is not None:
            self._offload(large)

    def _dispatch(self, frames: list[tuple[Any, Any]]) -> None:
        handlers = self.node._dispatcher.handlers
        self._dispatching = True
        try:
            for control, message in frames:
                if self.closed:
                    return
                try:
                    handlers[control[0]](self, control, message)
                except Exception as err:  # a malformed control message: drop this connection
                    # never the exception's own text or repr: it may hold a 50 MB key
                    if log.isEnabledFor(logging.DEBUG):
                        where = "".join(traceback.format_tb(err.__traceback__, limit=-6))
                        log.debug("dispatch failure %s in\n%s", brief_exception(err), where)
                    self.abort(
                        f"malformed control message {brief(control, 160)}: "
                        f"{brief_exception(err, 200)}"
                    )
                    return
        finally:
            self._dispatching = False
            if self._wbuf and self._flush_handle is None:
                self._flush()

    def _offload(self, body: bytes) -> None:
        """Decode a large frame in the node's decoder thread, so that the event loop (every
        other connection and process) carries on meanwhile; reading from this connection
        pauses until it is done, which keeps the order of its frames."""
        assert self.transport is not None
        self.transport.pause_reading()
        future = self.node.loop.run_in_executor(self.node._decoder(), decode_frame_body, body)
        self._offloaded = future
        future.add_done_callback(self._offload_done)

    def _offload_done(self, future: asyncio.Future[Any]) -> None:
        self._offloaded = None
        if self.closed or future.cancelled():
            return
        try:
            frame = future.result()
        except FrameError as err:
            self.abort(str(err))
            return
        except Exception as err:  # MemoryError and the like: this connection, not the node
            self.abort(f"cannot decode a large frame: {brief_exception(err)}")
            return
        self._dispatch([frame])
        if self.closed or self.transport is None:
            return
        self.transport.resume_reading()
        self._frames_received(b"")  # what arrived behind it

    def send_frame(self, frame: bytes) -> None:
        """The first frame of an event-loop iteration goes out at once (latency); later ones are
        collected and written together at the end of the iteration (throughput)."""
        if self.closed:
            return
        if self._dispatching:
            self._wbuf.append(frame)  # written in one go when this read's frames are handled
        elif self._flush_handle is None:
            if self.transport is not None:
                self.transport.write(frame)
                self.sent_since_tick = True
            self._flush_handle = self.node.loop.call_soon(self._flush)
        else:
            self._wbuf.append(frame)

    def _flush(self) -> None:
        self._flush_handle = None
        if self._wbuf and not self.closed and self.transport is not None:
            data = b"".join(self._wbuf) if len(self._wbuf) > 1 else self._wbuf[0]
            self._wbuf.clear()
            self.transport.write(data)
            self.sent_since_tick = True

    def _write_raw(self, data: bytes) -> None:
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait until the transport accepts more data (flow control)."""
        self._flush()
        while self._paused and not self.closed:
            waiter = self.node.loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def close(self, abort: bool = False) -> None:
        if self.closed or self.transport is None:
            return
        if not abort:
            self._flush()
        if self.close_reason is None:
            self.close_reason = "closed by this node"
        self.closed = True
        if abort:
            self.transport.abort()
        else:
            self.transport.close()

    def abort(self, reason: str) -> None:
        """Drop the connection because of what the peer sent; logged, never silent."""
        if self.closed:
            return
        if len(reason) > 2 * LOG_LIMIT:  # peer data is already bounded where it is formatted
            reason = reason[: 2 * LOG_LIMIT] + "..."
        log.warning("closing the connection to %s: %s", self.peer_name, reason)
        self.close_reason = reason
        self.close(abort=True)

    def _cancel_timers(self) -> None:
        if self._setup_timer is not None:
            self._setup_timer.cancel()
            self._setup_timer = None
        if self._flush_handle is not None and self.closed:
            self._flush_handle.cancel()
            self._flush_handle = None
