"""External Term Format codec: Erlang terms <-> Python values.

API (the same in the pure-Python reference `pure` and the C fast path `native`; the package-level
names are the C ones when the extension is built, unless the environment sets DSPEX_PURE_ETF=1):

    encode(term, *, compressed=False) -> bytes
        The full term with the 131 version byte. compressed=True (zlib level 6) or a level 0..9
        gives 131,80,Size:32,zlib..., only when smaller, exactly as term_to_binary(T, [compressed]).
    decode(data, *, limits=DEFAULT_LIMITS) -> term
        Exactly one 131-prefixed term (compressed accepted); trailing bytes raise ETFError.
    decode_from(data, offset=0, *, limits=DEFAULT_LIMITS) -> (term, end)
        One 131-prefixed term at `offset`; `end` is the offset just after it. No copy of `data`.
    decode_dist_frame(data, *, limits=DEFAULT_LIMITS) -> (control, message)
        A distribution frame body after its 4-byte length: 112, Control (131...), optional
        Message (131...). `message` is NO_MESSAGE (a falsy singleton) when the frame has none.
    data may be bytes, bytearray or memoryview. Every problem with the input (truncated, garbage,
    unknown or obsolete tag, limits exceeded) raises ETFError (a ValueError) naming the offset;
    never MemoryError, RecursionError or a hang. Values that cannot be encoded raise ETFError too.

Mapping (Erlang -> Python; encode takes the same Python values back):
    atom                 Atom (a str subclass, repr Atom('ok')); true/false -> True/False;
                         nil <-> None (Elixir's nil). Every other atom, `undefined` too, is an Atom.
                         Encoded as SMALL_ATOM_UTF8/ATOM_UTF8; old ATOM/SMALL_ATOM (latin-1) decode.
    integer              int (encoded with the smallest tag, as term_to_binary does)
    float                float (NEW_FLOAT; old FLOAT_EXT decodes); inf/nan cannot be encoded
    binary               bytes. A Python str encodes as its UTF-8 binary (an Elixir string) and
                         decodes back as bytes: the one intended asymmetry. bytearray encodes too.
    bitstring            BitString(data, bits): `bits` (1..8) of the last byte are used
    tuple                tuple
    list                 list. [] is NIL. A charlist (STRING_EXT) decodes to a list of ints, never
                         a str. A list of 1..65535 ints in 0..255 encodes as STRING_EXT, exactly as
                         term_to_binary does.
    improper list        ImproperList(items, tail)
    map                  dict in wire order (re-encoding is byte-exact). A key Python cannot hash
                         (list, map, ...) or one that Python's == would merge with another key of
                         the same map (1, 1.0 and true) is wrapped in FrozenTerm(key); encode
                         unwraps it.
    pid                  Pid(node, id, serial, creation)            NEW_PID_EXT
    reference            Reference(node, creation, ids)             NEWER_REFERENCE_EXT, 1..5 words
    port                 Port(node, id, creation, v4=False)         NEW_PORT_EXT, V4_PORT_EXT
    fun M:F/A            ExportFun(module, function, arity)         EXPORT_EXT
    local fun            Fun(raw, ...): opaque, echoed back byte-identical   NEW_FUN_EXT
Rejected: LOCAL_EXT 121, the pre-OTP-23 PID/PORT/REFERENCE/FUN tags, atom-cache refs, unknown tags.

Limits (DecodeLimits; defaults): max_depth=1000 nesting levels, max_elements=16 Mi container
elements per term, max_uncompressed_size=64 MiB for compressed terms, max_atom_chars=255,
max_huge_int_keys=4096 map keys holding integers >= 2**61 - 1 (which Python hashes alike, so a
peer could otherwise make dict insertion quadratic), max_expansion=16 and expansion_allowance=16 MiB
(the Python objects one input decodes to, estimated per object before it is built, at most 16 bytes
per input byte plus 16 MiB; one budget for a distribution frame's two terms). Maps of 128 keys or
more whose hashes would cost Python's dict over 32 probes per key are refused (the probes are
replayed before the dict is built). Declared lengths are checked against the bytes left before
anything is allocated. Inputs of 64 KiB or more are decoded with the cyclic GC paused.
max_depth is at most 2,000, so that the C decoder stays well inside a 1 MB thread stack. The pure
decoder may raise the interpreter's recursion limit to fit max_depth (safe on 3.11+).
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from . import pure
from .types import (
    DEFAULT_LIMITS,
    NO_MESSAGE,
    Atom,
    BitString,
    DecodeLimits,
    ETFError,
    ExportFun,
    FrozenTerm,
    Fun,
    ImproperList,
    Pid,
    Port,
    Reference,
    same_term,
)

native: ModuleType | None
try:
    from . import _cetf as native  # type: ignore[attr-defined, no-redef]
except ImportError:
    native = None

_impl: Any = native if native is not None and os.environ.get("DSPEX_PURE_ETF") != "1" else pure

encode = _impl.encode
decode = _impl.decode
decode_from = _impl.decode_from
decode_dist_frame = _impl.decode_dist_frame
IMPLEMENTATION: str = "native" if _impl is native else "pure"

__all__ = [
    "DEFAULT_LIMITS",
    "IMPLEMENTATION",
    "NO_MESSAGE",
    "Atom",
    "BitString",
    "DecodeLimits",
    "ETFError",
    "ExportFun",
    "FrozenTerm",
    "Fun",
    "ImproperList",
    "Pid",
    "Port",
    "Reference",
    "decode",
    "decode_dist_frame",
    "decode_from",
    "encode",
    "native",
    "pure",
    "same_term",
]
