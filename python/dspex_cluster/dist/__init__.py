"""The Erlang distribution protocol without I/O: EPMD, handshake, framing, control messages, flags.

Everything here is a pure function or a state machine fed bytes; `dspex_cluster.runtime` does the
sockets.
"""

from dspex_cluster.dist import control, epmd, flags
from dspex_cluster.dist.handshake import (
    AcceptorHandshake,
    Established,
    HandshakeError,
    InitiatorHandshake,
    PeerNamed,
    gen_digest,
)

__all__ = [
    "AcceptorHandshake",
    "Established",
    "HandshakeError",
    "InitiatorHandshake",
    "PeerNamed",
    "control",
    "epmd",
    "flags",
    "gen_digest",
]
