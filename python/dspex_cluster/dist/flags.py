"""Distribution capability flags (erts dist.h) and the set this node advertises.

The negotiated set of a connection is the bitwise AND of both sides' flags.
"""

from __future__ import annotations

PUBLISHED = 0x1
ATOM_CACHE = 0x2
EXTENDED_REFERENCES = 0x4
DIST_MONITOR = 0x8
FUN_TAGS = 0x10
DIST_MONITOR_NAME = 0x20
HIDDEN_ATOM_CACHE = 0x40
NEW_FUN_TAGS = 0x80
EXTENDED_PIDS_PORTS = 0x100
EXPORT_PTR_TAG = 0x200
BIT_BINARIES = 0x400
NEW_FLOATS = 0x800
UNICODE_IO = 0x1000
DIST_HDR_ATOM_CACHE = 0x2000
SMALL_ATOM_TAGS = 0x4000
UTF8_ATOMS = 0x10000
MAP_TAG = 0x20000
BIG_CREATION = 0x40000
SEND_SENDER = 0x80000
BIG_SEQTRACE_LABELS = 0x100000
EXIT_PAYLOAD = 0x400000
FRAGMENTS = 0x800000
HANDSHAKE_23 = 0x1000000
UNLINK_ID = 0x2000000
MANDATORY_25_DIGEST = 0x4000000  # bit 26 in the code; the protocol doc's "1 bsl 36" is wrong
SPAWN = 1 << 32
NAME_ME = 1 << 33
V4_NC = 1 << 34
ALIAS = 1 << 35

# What an OTP 25 node insists on (dist.hrl MANDATORY_DFLAGS_25 == 0x1070F94).
MANDATORY_25 = (
    EXTENDED_REFERENCES
    | FUN_TAGS
    | NEW_FUN_TAGS
    | EXTENDED_PIDS_PORTS
    | EXPORT_PTR_TAG
    | BIT_BINARIES
    | NEW_FLOATS
    | UTF8_ATOMS
    | MAP_TAG
    | BIG_CREATION
    | HANDSHAKE_23
)
# OTP 26+ additionally insists on these.
MANDATORY_26 = MANDATORY_25 | V4_NC | UNLINK_ID

# What we require from a peer: the OTP 25 set (we talk to OTP 25 nodes too).
REQUIRED = MANDATORY_25

# Everything we implement. No atom cache and no fragments: frames stay pass-through (112).
OUR_FLAGS = (
    MANDATORY_26
    | MANDATORY_25_DIGEST
    | DIST_MONITOR
    | DIST_MONITOR_NAME
    | SMALL_ATOM_TAGS
    | UNICODE_IO
    | SEND_SENDER
    | BIG_SEQTRACE_LABELS
    | EXIT_PAYLOAD
    | SPAWN
    | ALIAS
)


def node_flags(hidden: bool) -> int:
    """The flags we advertise: PUBLISHED only for a visible node."""
    return OUR_FLAGS if hidden else OUR_FLAGS | PUBLISHED


def expand(flags: int) -> int:
    """Apply the MANDATORY_25_DIGEST shorthand (dist_util expand_mandatory_25_flag)."""
    if flags & MANDATORY_25_DIGEST:
        flags |= MANDATORY_25
    return flags


def missing_required(peer_flags: int) -> int:
    """Required flags the peer lacks (0 when it is acceptable)."""
    return REQUIRED & ~expand(peer_flags)


def negotiate(ours: int, theirs: int) -> int:
    """The flags in force on a connection."""
    return expand(ours) & expand(theirs)
