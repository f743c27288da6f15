"""Framing after the handshake: `Len:32` packets, 0-length = tick, 112 pass-through data.

`FrameReader.feed` parses every complete frame in the buffer in one loop and returns the decoded
(control, message) pairs; terms are decoded straight out of the receive buffer (no per-frame copy),
each frame with its own decoding budget (etf.DecodeLimits). A frame larger than `offload_above`
is not decoded there: parsing stops after it and `take_large()` hands over its bytes, for the
owner to decode away from its event loop (`decode_frame_body`) before it parses what follows.
"""

from __future__ import annotations

import struct
from typing import Any

from dspex_cluster.etf import (
    IMPLEMENTATION,
    NO_MESSAGE,
    ETFError,
    decode_dist_frame,
    decode_from,
    encode,
)
from dspex_cluster.etf.brief import brief

PASS_THROUGH = 112
TICK_FRAME = b"\x00\x00\x00\x00"
DEFAULT_MAX_FRAME = 64 * 1024 * 1024
OFFLOAD_FRAME_BYTES = 256 * 1024  # frames above this are decoded in a worker thread
_LEN = struct.Struct(">I")


class FrameError(Exception):
    """The peer sent a frame we refuse; the connection must close."""


class FrameReader:
    """Accumulates bytes; `feed` returns (frames, ticks) for all complete frames.

    A bad frame stops parsing: the frames before it are returned and `error` says what was wrong
    (the connection must then close; nothing after the bad frame can be trusted).
    """

    def __init__(
        self, max_frame: int = DEFAULT_MAX_FRAME, offload_above: int = OFFLOAD_FRAME_BYTES
    ) -> None:
        self.max_frame = max_frame
        self.offload_above = offload_above
        self._buf = bytearray()
        self._large: bytes | None = None
        self.error: str | None = None
        # With the pure-Python codec, re-decoding a repeated control message costs more than
        # comparing its bytes with the last few seen; with the C codec it does not.
        self._recent_controls: dict[bytes, Any] | None = {} if IMPLEMENTATION == "pure" else None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def append(self, data: bytes) -> None:
        """Buffer bytes without parsing them (while a large frame is being decoded)."""
        if self.error is None:
            self._buf += data

    def take_large(self) -> bytes | None:
        """The body of the large frame that stopped the last `feed`, once."""
        large, self._large = self._large, None
        return large

    def feed(self, data: bytes) -> tuple[list[tuple[Any, Any]], int]:
        if self.error is not None or self._large is not None:
            self.append(data)
            return [], 0
        buf = self._buf
        buf += data
        frames: list[tuple[Any, Any]] = []
        ticks = 0
        pos = 0
        end = len(buf)
        unpack = _LEN.unpack_from
        max_frame = self.max_frame
        recent = self._recent_controls
        view = memoryview(buf)
        try:
            while end - pos >= 4:
                (n,) = unpack(buf, pos)
                if n == 0:
                    ticks += 1
                    pos += 4
                    continue
                if n > max_frame:
                    raise FrameError(f"frame of {n} bytes exceeds the limit of {max_frame}")
                stop = pos + 4 + n
                if stop > end:
                    break
                if buf[pos + 4] != PASS_THROUGH:
                    raise FrameError(f"unsupported frame type {buf[pos + 4]} (no atom cache)")
                if n > self.offload_above:
                    self._large = bytes(view[pos + 4 : stop])
                    pos = stop
                    break
                frame = view[pos + 4 : stop]  # the frame's own bytes: its decoding budget
                try:
                    if recent is None:
                        try:  # the common case inline
                            control, message = decode_dist_frame(frame)
                        except ETFError as err:
                            raise FrameError(f"undecodable term: {err}") from None
                        if type(control) is not tuple or not control:
                            _check_control(control)
                        frames.append((control, message))
                    else:
                        frames.append(_decode_frame(frame, 1, n, recent))
                finally:
                    frame.release()
                pos = stop
        except FrameError as err:
            self.error = str(err)
            view.release()
            buf.clear()
            pos = 0
        finally:
            view.release()
            if pos:
                del buf[:pos]
        return frames, ticks


def decode_frame_body(body: bytes) -> tuple[Any, Any]:
    """(control, message) of one frame body (112, Control, [Message]); FrameError if it is not
    one. For large frames, called in a worker thread."""
    try:
        control, message = decode_dist_frame(body)
    except ETFError as err:
        raise FrameError(f"undecodable term: {err}") from None
    except RecursionError:
        raise FrameError("term nested too deeply") from None
    _check_control(control)
    return control, message


def _check_control(control: Any) -> None:
    if type(control) is not tuple or not control or type(control[0]) is not int:
        raise FrameError(f"control message is not a tuple with an opcode: {brief(control, 100)}")


def _decode_frame(
    buf: Any, start: int, stop: int, recent: dict[bytes, Any] | None = None
) -> tuple[Any, Any]:
    try:
        control = _NOT_CACHED
        if recent:
            # Streams repeat control messages byte for byte (same sender, same destination).
            # An ETF term is self-delimiting, so equal bytes at `start` mean an equal term.
            for raw, cached in recent.items():
                end = start + len(raw)
                if end <= stop and buf[start:end] == raw:
                    control, pos = cached, end
                    break
        if control is _NOT_CACHED:
            control, pos = decode_from(buf, start)
            if recent is not None and pos - start <= _MAX_CACHED_CONTROL:
                if len(recent) >= _CONTROL_CACHE_SIZE:
                    recent.pop(next(iter(recent)))
                recent[bytes(buf[start:pos])] = control
        if pos > stop:
            raise FrameError("control term runs past the end of its frame")
        message = NO_MESSAGE
        if pos < stop:
            message, pos = decode_from(buf, pos)
    except ETFError as err:
        raise FrameError(f"undecodable term: {err}") from None
    except RecursionError:
        raise FrameError("term nested too deeply") from None
    if pos != stop:
        raise FrameError(f"the terms do not end where the frame does ({pos} != {stop})")
    _check_control(control)
    return control, message


_NOT_CACHED: Any = object()
_CONTROL_CACHE_SIZE = 4
_MAX_CACHED_CONTROL = 256


def encode_frame(
    control: tuple, message: Any = NO_MESSAGE, cache: dict[tuple, bytes] | None = None
) -> bytes:
    """One pass-through frame: Len:32, 112, control term, optional message term.

    With `cache`, the encoding of hashable control tuples is remembered (a sender streaming to
    one destination repeats the same control message); the caller bounds the cache.
    """
    if cache is None:
        body = encode(control)
    else:
        try:
            body = cache.get(control)  # type: ignore[assignment]
        except TypeError:  # an unhashable control (lists inside): encode every time
            body = None
            cache = None
        if body is None:
            body = encode(control)
            if cache is not None:
                if len(cache) >= _CONTROL_CACHE_BOUND:
                    cache.clear()
                cache[control] = body
    if message is not NO_MESSAGE:
        body += encode(message)
    return _LEN.pack(len(body) + 1) + b"p" + body


_CONTROL_CACHE_BOUND = 4096
