"""Tag bytes of the External Term Format (erl_ext_dist), named as OTP names them."""

from __future__ import annotations

VERSION = 131
COMPRESSED = 80
DIST_HEADER = (
    68  # not decoded here: the dist layer handles atom-cache headers (we never ask for them)
)
PASS_THROUGH = 112  # first byte of a distribution frame when no dist header is used

NEW_FLOAT = 70
BIT_BINARY = 77
NEW_PID = 88
NEW_PORT = 89
NEWER_REFERENCE = 90
SMALL_INTEGER = 97
INTEGER = 98
FLOAT = 99
ATOM = 100
SMALL_TUPLE = 104
LARGE_TUPLE = 105
NIL = 106
STRING = 107
LIST = 108
BINARY = 109
SMALL_BIG = 110
LARGE_BIG = 111
NEW_FUN = 112
EXPORT = 113
SMALL_ATOM = 115
MAP = 116
ATOM_UTF8 = 118
SMALL_ATOM_UTF8 = 119
V4_PORT = 120
LOCAL = 121

# Tags OTP 23+ never sends; named so that errors can say what they were.
OBSOLETE = {
    101: "REFERENCE_EXT",
    102: "PORT_EXT",
    103: "PID_EXT",
    114: "NEW_REFERENCE_EXT",
    117: "FUN_EXT",
    121: "LOCAL_EXT",
    68: "DIST_HEADER",
    82: "ATOM_CACHE_REF",
}
