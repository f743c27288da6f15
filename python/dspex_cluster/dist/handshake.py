"""The distribution handshake as two state machines fed bytes (no I/O).

Usage (either side): feed received bytes with `receive_data`, send what `data_to_send` returns,
act on the returned events. The acceptor pauses after `PeerNamed` until the owner calls
`send_status`, the initiator after `AliveAsked` until it calls `answer_alive` (the owner knows
about simultaneous connects and existing connections).
Messages are framed with a 2-byte length until the handshake is done (a 4-byte one over TLS,
as inet_tls_dist runs the handshake with {packet, 4}).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass
from enum import Enum, auto

from dspex_cluster.dist import flags as F

MAX_HANDSHAKE_MESSAGE = 4096  # a name is at most 255 bytes; anything bigger is hostile
MAX_NODE_NAME_CHARS = 255  # a node name is an atom


def valid_node_name(name: str) -> bool:
    """What dist_util accepts as a peer's name: an atom (at most 255 characters) of the form
    alive@host, both parts non-empty, one '@', and no control characters or white space."""
    if not 3 <= len(name) <= MAX_NODE_NAME_CHARS or name.count("@") != 1:
        return False
    alive, host = name.split("@")
    return bool(alive and host) and name.isprintable() and not any(c.isspace() for c in name)


def _shown(text: str) -> str:
    """Peer-supplied text in an error message, cut short."""
    return repr(text[:80]) + ("..." if len(text) > 80 else "")


class HandshakeError(Exception):
    """The handshake failed; the message says why (never contains the cookie)."""


def gen_digest(challenge: int, cookie: str) -> bytes:
    """md5(cookie ++ decimal(challenge)) as dist_util gen_digest/2 computes it."""
    return hashlib.md5(cookie.encode("latin-1") + str(challenge & 0xFFFFFFFF).encode()).digest()


def new_challenge() -> int:
    return secrets.randbits(32)


@dataclass(frozen=True)
class PeerNamed:
    """Acceptor: the initiator told us who it is; call send_status next."""

    name: str
    flags: int
    creation: int


@dataclass(frozen=True)
class Established:
    """The handshake succeeded. `leftover` bytes already belong to the framed stream."""

    peer_name: str
    peer_flags: int
    peer_creation: int
    flags: int  # negotiated
    leftover: bytes


@dataclass(frozen=True)
class AliveAsked:
    """Initiator: the peer holds a connection to us that it believes is up; call answer_alive
    next (True only if this attempt is still the one we want, as net_kernel's is_pending)."""

    peer_name: str


Event = PeerNamed | AliveAsked | Established


class _State(Enum):
    AWAIT_NAME = auto()
    AWAIT_STATUS_DECISION = auto()
    AWAIT_ALIVE_ANSWER = auto()
    AWAIT_STATUS = auto()
    AWAIT_ALIVE_DECISION = auto()
    AWAIT_CHALLENGE = auto()
    AWAIT_COMPLEMENT = auto()
    AWAIT_REPLY = auto()
    AWAIT_ACK = auto()
    DONE = auto()
    FAILED = auto()


class _Machine:
    def __init__(
        self, name: str, flags: int, creation: int, cookie: str, length_size: int = 2
    ) -> None:
        if length_size not in (2, 4):
            raise ValueError("handshake messages have a 2- or 4-byte length")
        # 2 over TCP; 4 over TLS, where inet_tls_dist runs the handshake with {packet, 4}
        self._length = ">H" if length_size == 2 else ">I"
        self._length_size = length_size
        self.name = name
        self.flags = flags
        self.creation = creation
        self._cookie = cookie
        self._buf = bytearray()
        self._out = bytearray()
        self.state: _State
        self.peer_name = ""
        self.peer_flags = 0
        self.peer_creation = 0

    def __repr__(self) -> str:  # never show the cookie
        return f"<{type(self).__name__} {self.name} peer={self.peer_name!r} {self.state.name}>"

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def _send(self, body: bytes) -> None:
        self._out += struct.pack(self._length, len(body)) + body

    def _fail(self, why: str) -> HandshakeError:
        self.state = _State.FAILED
        return HandshakeError(why)

    def receive_data(self, data: bytes) -> list[Event]:
        if self.state in (_State.DONE, _State.FAILED):
            raise HandshakeError(f"data after the handshake ended ({self.state.name})")
        self._buf += data
        events: list[Event] = []
        size = self._length_size
        while len(self._buf) >= size and self.state is not _State.DONE:
            if self.state in (_State.AWAIT_STATUS_DECISION, _State.AWAIT_ALIVE_DECISION):
                break  # the owner must decide first; keep the bytes
            (n,) = struct.unpack_from(self._length, self._buf, 0)
            if n == 0 or n > MAX_HANDSHAKE_MESSAGE:
                raise self._fail(f"bad handshake message length {n}")
            if len(self._buf) < size + n:
                break
            msg = bytes(self._buf[size : size + n])
            del self._buf[: size + n]
            event = self._handle(msg)
            if event is not None:
                events.append(event)
        return events

    def _handle(self, msg: bytes) -> Event | None:
        raise NotImplementedError

    def _established(self) -> Established:
        self.state = _State.DONE
        leftover = bytes(self._buf)
        self._buf.clear()
        return Established(
            self.peer_name,
            self.peer_flags,
            self.peer_creation,
            F.negotiate(self.flags, self.peer_flags),
            leftover,
        )

    def _check_peer_flags(self) -> None:
        missing = F.missing_required(self.peer_flags)
        if missing:
            raise self._fail(f"peer {self.peer_name} lacks required flags {missing:#x}")


class InitiatorHandshake(_Machine):
    """We dial `peer_name`: send_name, status, challenge, reply, ack."""

    def __init__(
        self,
        name: str,
        flags: int,
        creation: int,
        cookie: str,
        peer_name: str,
        length_size: int = 2,
    ) -> None:
        super().__init__(name, flags, creation, cookie, length_size)
        self.expected_peer = peer_name
        self.my_challenge = new_challenge()
        self.status = ""
        raw = name.encode("utf-8")
        self._send(b"N" + struct.pack(">QIH", flags, creation, len(raw)) + raw)
        self.state = _State.AWAIT_STATUS

    def _handle(self, msg: bytes) -> Event | None:
        tag = msg[:1]
        if self.state is _State.AWAIT_STATUS:
            if tag != b"s":
                raise self._fail(f"expected status, got tag {tag!r}")
            self.status = msg[1:].decode("latin-1")[:64]
            if self.status in ("ok", "ok_simultaneous"):
                self.state = _State.AWAIT_CHALLENGE
            elif self.status == "alive":
                self.state = _State.AWAIT_ALIVE_DECISION
                return AliveAsked(self.expected_peer)
            else:  # nok, not_allowed, or anything unknown
                raise self._fail(
                    f"peer {self.expected_peer} refused the connection: {_shown(self.status)}"
                )
            return None
        if self.state is _State.AWAIT_CHALLENGE:
            if tag != b"N" or len(msg) < 19:
                raise self._fail(f"expected challenge N, got tag {tag!r} ({len(msg)} bytes)")
            peer_flags, challenge, creation, nlen = struct.unpack_from(">QIIH", msg, 1)
            name = msg[19 : 19 + nlen].decode("utf-8", "replace")
            if name != self.expected_peer:
                raise self._fail(f"dialled {self.expected_peer} but {_shown(name)} answered")
            self.peer_name, self.peer_flags, self.peer_creation = name, peer_flags, creation
            self._check_peer_flags()
            digest = gen_digest(challenge, self._cookie)
            self._send(b"r" + struct.pack(">I", self.my_challenge) + digest)
            self.state = _State.AWAIT_ACK
            return None
        if self.state is _State.AWAIT_ACK:
            if tag != b"a" or len(msg) != 17:
                raise self._fail(f"expected challenge ack, got tag {tag!r}")
            if not hmac.compare_digest(msg[1:], gen_digest(self.my_challenge, self._cookie)):
                raise self._fail(f"{self.peer_name} failed our challenge (cookie mismatch)")
            return self._established()
        raise self._fail(f"unexpected message in state {self.state.name}")

    def answer_alive(self, still_pending: bool) -> list[Event]:
        """Answer `alive`: true makes the peer drop its old connection and carry on with this
        one; false ends this attempt (a connection of ours came up meanwhile)."""
        if self.state is not _State.AWAIT_ALIVE_DECISION:
            raise HandshakeError(f"answer_alive in state {self.state.name}")
        if not still_pending:
            self._send(b"sfalse")
            raise self._fail(f"{self.expected_peer} is already connected to us")
        self._send(b"strue")
        self.state = _State.AWAIT_CHALLENGE
        return self.receive_data(b"")


class AcceptorHandshake(_Machine):
    """A peer dialled us: name, our status, our challenge, its reply, our ack."""

    def __init__(
        self, name: str, flags: int, creation: int, cookie: str, length_size: int = 2
    ) -> None:
        super().__init__(name, flags, creation, cookie, length_size)
        self.my_challenge = new_challenge()
        self.old_name = False
        self.state = _State.AWAIT_NAME

    def _handle(self, msg: bytes) -> Event | None:
        tag = msg[:1]
        if self.state is _State.AWAIT_NAME:
            if tag == b"N" and len(msg) >= 15:
                peer_flags, creation, nlen = struct.unpack_from(">QIH", msg, 1)
                name_bytes = msg[15 : 15 + nlen]
            elif tag == b"n" and len(msg) >= 7:
                # Old (version 5) name: flags are 32 bits; the complement brings the rest.
                _version, peer_flags = struct.unpack_from(">HI", msg, 1)
                creation, name_bytes = 0, msg[7:]
                self.old_name = True
                if not peer_flags & F.HANDSHAKE_23:
                    raise self._fail("peer speaks only the pre-OTP-23 handshake")
            else:
                raise self._fail(f"expected send_name, got tag {tag!r} ({len(msg)} bytes)")
            try:
                self.peer_name = name_bytes.decode("utf-8")
            except UnicodeDecodeError:
                raise self._fail("peer name is not UTF-8") from None
            if not valid_node_name(self.peer_name):
                raise self._fail(f"invalid peer name {_shown(self.peer_name)}")
            self.peer_flags, self.peer_creation = peer_flags, creation
            self.state = _State.AWAIT_STATUS_DECISION
            return PeerNamed(self.peer_name, peer_flags, creation)
        if self.state is _State.AWAIT_ALIVE_ANSWER:
            if msg == b"strue":
                self._send_challenge()
                return None
            raise self._fail(f"peer {self.peer_name} gave up (answer {msg!r} to alive)")
        if self.state is _State.AWAIT_COMPLEMENT:
            if tag != b"c" or len(msg) < 9:
                raise self._fail(f"expected complement, got tag {tag!r}")
            flags_high, creation = struct.unpack_from(">II", msg, 1)
            self.peer_flags |= flags_high << 32
            self.peer_creation = creation
            self.state = _State.AWAIT_REPLY
            return None
        if self.state is _State.AWAIT_REPLY:
            if tag != b"r" or len(msg) != 21:
                raise self._fail(f"expected challenge reply, got tag {tag!r}")
            (peer_challenge,) = struct.unpack_from(">I", msg, 1)
            if not hmac.compare_digest(msg[5:21], gen_digest(self.my_challenge, self._cookie)):
                raise self._fail(f"invalid challenge reply from {self.peer_name} (cookie mismatch)")
            self._check_peer_flags()
            self._send(b"a" + gen_digest(peer_challenge, self._cookie))
            return self._established()
        raise self._fail(f"unexpected message in state {self.state.name}")

    def send_status(self, status: str) -> list[Event]:
        """Answer the name: ok, ok_simultaneous, alive, nok or not_allowed.

        After nok/not_allowed the owner sends what data_to_send returns and closes the socket.
        """
        if self.state is not _State.AWAIT_STATUS_DECISION:
            raise HandshakeError(f"send_status in state {self.state.name}")
        if status in ("ok", "ok_simultaneous") and F.missing_required(self.peer_flags):
            status = "not_allowed"
        self._send(b"s" + status.encode())
        if status in ("ok", "ok_simultaneous"):
            self._send_challenge()
        elif status == "alive":
            self.state = _State.AWAIT_ALIVE_ANSWER
        else:
            self.state = _State.FAILED
            return []
        return self.receive_data(b"")  # bytes that arrived while we were deciding

    def _send_challenge(self) -> None:
        raw = self.name.encode("utf-8")
        body = b"N" + struct.pack(">QIIH", self.flags, self.my_challenge, self.creation, len(raw))
        self._send(body + raw)
        self.state = _State.AWAIT_COMPLEMENT if self.old_name else _State.AWAIT_REPLY
