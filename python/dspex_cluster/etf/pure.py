"""The reference External Term Format codec, in pure Python.

The C extension `_cetf` must give the same results; both are run against the same vectors and
properties. See the package docstring for the mapping between Erlang terms and Python values.
"""

from __future__ import annotations

import contextlib
import gc
import math
import operator
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from . import tags as T
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

__all__ = ["encode", "decode", "decode_from", "decode_dist_frame"]

_u16 = struct.Struct(">H").unpack_from
_u32 = struct.Struct(">I").unpack_from
_i32 = struct.Struct(">i").unpack_from
_u64 = struct.Struct(">Q").unpack_from
_u32x3 = struct.Struct(">III").unpack_from
_f64 = struct.Struct(">d").unpack_from
_pack_u16 = struct.Struct(">H").pack
_pack_u32 = struct.Struct(">I").pack
_pack_i32 = struct.Struct(">i").pack
_pack_f64 = struct.Struct(">d").pack

# Atoms are few and repeat constantly: map their encoded bytes to the decoded value. Bounded, so
# that a stream of distinct atoms from a hostile peer cannot grow it without limit.
_ATOM_CACHE_MAX = 8192
_atom_cache: dict[tuple[int, bytes], Any] = {}
_SPECIAL_ATOMS: dict[str, Any] = {"true": True, "false": False, "nil": None}


# --------------------------------------------------------------------------------------------
# decoding


class _State:
    """Per-call decoding state: the input, its limits and the budgets left (elements, and bytes
    of Python objects), which one distribution frame shares between its two terms."""

    __slots__ = (
        "data", "end", "limits", "elements_left", "cost_left", "huge_ints", "huge_int_keys"
    )  # fmt: skip

    def __init__(self, data: Any, limits: DecodeLimits, input_size: int) -> None:
        self.data = data
        self.end = len(data)
        self.limits = limits
        self.elements_left = limits.max_elements
        self.cost_left = limits.max_expansion * input_size + limits.expansion_allowance
        self.huge_ints = 0  # integers Python hashes modulo 2**61 - 1 (see _d_map)
        self.huge_int_keys = 0


# What decoded values cost in bytes of Python objects (CPython 3.11+ on 64 bits), charged before
# they are built. _cetf charges exactly the same amounts at the same points. Shared objects
# (small ints, atoms, (), b"" and one-byte binaries, True/False/None) cost only the slot that
# holds them, which their container pays.
COST_LIST = 56  # + 8 per item
COST_TUPLE = 40  # + 8 per item; () is shared
COST_MAP = 64  # + COST_MAP_PAIR per pair
COST_MAP_PAIR = 48
COST_SLOT = 8
COST_INT = 32  # an int outside -5..256; a bignum of n bytes: 28 + 4 * ceil(8n / 30)
COST_FLOAT = 24
COST_BYTES = 33  # + length, for binaries of 2 bytes or more
COST_OBJECT = 64  # Pid, Port, Reference (+ its words), ExportFun, BitString, ImproperList
COST_FUN = 160  # + its encoding, which it keeps


def _fail(msg: str, pos: int) -> ETFError:
    return ETFError(f"{msg} at offset {pos}")


def _need(st: _State, pos: int, n: int, what: str) -> None:
    if n > st.end - pos:
        raise _fail(f"truncated {what}: needs {n} bytes, {max(st.end - pos, 0)} left", pos)


def _spend(st: _State, n: int, pos: int) -> None:
    st.elements_left -= n
    if st.elements_left < 0:
        raise _fail(f"term has more than max_elements={st.limits.max_elements} elements", pos)


def _charge(st: _State, cost: int, pos: int) -> None:
    st.cost_left -= cost
    if st.cost_left < 0:
        raise _fail(
            f"decoded term would take more memory than max_expansion={st.limits.max_expansion}"
            " times its input plus expansion_allowance",
            pos,
        )


def _atom_text(st: _State, pos: int, n: int, utf8: bool) -> str:
    raw = bytes(st.data[pos : pos + n])
    try:
        text = raw.decode("utf-8") if utf8 else raw.decode("latin-1")
    except UnicodeDecodeError:
        raise _fail("atom is not valid UTF-8", pos) from None
    if len(text) > st.limits.max_atom_chars:
        raise _fail(f"atom longer than {st.limits.max_atom_chars} characters", pos)
    return text


def _read_atom(st: _State, pos: int, special: bool) -> tuple[Any, int]:
    """Decode an atom at pos (any of the four atom tags). With special, true/false/nil map to
    True/False/None; without, the result is always an Atom (node names, module names)."""
    data = st.data
    _need(st, pos, 1, "atom")
    tag = data[pos]
    if tag == T.SMALL_ATOM_UTF8 or tag == T.SMALL_ATOM:
        _need(st, pos + 1, 1, "atom length")
        n = data[pos + 1]
        start = pos + 2
    elif tag == T.ATOM_UTF8 or tag == T.ATOM:
        _need(st, pos + 1, 2, "atom length")
        n = _u16(data, pos + 1)[0]
        start = pos + 3
    else:
        raise _fail(f"expected an atom, got tag {tag}", pos)
    _need(st, start, n, "atom")
    utf8 = tag == T.SMALL_ATOM_UTF8 or tag == T.ATOM_UTF8
    key = (utf8, bytes(data[start : start + n]))
    hit = _atom_cache.get(key)
    if hit is None:
        atom = Atom(_atom_text(st, start, n, utf8))
        if len(_atom_cache) >= _ATOM_CACHE_MAX:
            _atom_cache.clear()
        _atom_cache[key] = atom
        hit = atom
    elif len(hit) > st.limits.max_atom_chars:
        raise _fail(f"atom longer than {st.limits.max_atom_chars} characters", start)
    if special:
        value = _SPECIAL_ATOMS.get(hit, hit)
        return value, start + n
    return hit, start + n


def _read_small_uint(st: _State, pos: int, depth: int, what: str) -> tuple[int, int]:
    """An integer term that must be non-negative (fun fields)."""
    value, end = _term(st, pos, depth)
    if type(value) is not int or value < 0:
        raise _fail(f"{what} must be a non-negative integer", pos)
    return value, end


def _read_pid(st: _State, pos: int) -> tuple[Pid, int]:
    data = st.data
    if pos >= st.end or data[pos] != T.NEW_PID:
        raise _fail("expected a NEW_PID_EXT", pos)
    node, p = _read_atom(st, pos + 1, False)
    _need(st, p, 12, "pid")
    _charge(st, COST_OBJECT + 3 * COST_INT, pos)
    return Pid(node, *_u32x3(data, p)), p + 12


def _term(st: _State, pos: int, depth: int) -> tuple[Any, int]:
    if pos >= st.end:
        raise _fail("truncated: expected a term", pos)
    tag = st.data[pos]
    fn = _DECODERS[tag]
    if fn is None:
        name = T.OBSOLETE.get(tag)
        if name is not None:
            raise _fail(f"unsupported tag {tag} ({name})", pos)
        raise _fail(f"unknown tag {tag}", pos)
    return fn(st, pos, depth)


def _d_small_int(st: _State, pos: int, depth: int) -> tuple[Any, int]:
    _need(st, pos + 1, 1, "SMALL_INTEGER_EXT")
    return st.data[pos + 1], pos + 2


def _d_int(st: _State, pos: int, depth: int) -> tuple[Any, int]:
    _need(st, pos + 1, 4, "INTEGER_EXT")
    value = _i32(st.data, pos + 1)[0]
    if not -5 <= value <= 256:
        _charge(st, COST_INT, pos)
    return value, pos + 5


def _big(st: _State, start: int, n: int, pos: int) -> tuple[Any, int]:
    _need(st, start, n + 1, "bignum")
    sign = st.data[start]
    if sign > 1:
        raise _fail(f"bignum sign byte must be 0 or 1, got {sign}", pos)
    _charge(st, 28 + 4 * ((8 * n + 29) // 30), pos)
    value = int.from_bytes(st.data[start + 1 : start + 1 + n], "little")
    if n >= 8 and value >= _HASH_MODULUS:
        st.huge_ints += 1
    return (-value if sign else value), start + 1 + n


# Python hashes an int k as k mod (2**61 - 1), so such integers collide at will.
_HASH_MODULUS = 2**61 - 1


def _d_small_big(st: _State, pos: int, depth: int) -> tuple[Any, int]:
    _need(st, pos + 1, 1, "SMALL_BIG_EXT")
    return _big(st, pos + 2, st.data[pos + 1], pos)


def _d_large_big(st: _State, pos: int, depth: int) -> tuple[Any, int]:
    _need(st, pos + 1, 4, "LARGE_BIG_EXT")
    return _big(st, pos + 5, _u32(st.data, pos + 1)[0], pos)


def _check_float(value: float, pos: int) -> float:
    if not math.isfinite(value):
        raise _fail("float is not finite", pos)
    return value


def _d_new_float(st: _State, pos: int, depth: int) -> tuple[Any, int]:
    _need(st, pos + 1, 8, "NEW_FLOAT_EXT")
    _charge(st, COST_FLOAT, pos)
    return _check_float(_f64(st.data, pos + 1)[0], pos), pos + 9


def _d_old_float(st: _State, pos: int, depth: int) -> tuple[Any, int]:
    _need(st, pos + 1, 31, "FLOAT_EXT")
    _charge(st, COST_FLOAT, pos)
    text = bytes(st.data[pos + 1 : pos + 32]).rstrip(b"\x00")
    try:
        value = float(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise _fail("FLOAT_EXT is not a number", pos) from None
    return _check_float(value, pos), pos + 32


def _d_atom(st: _State, pos: int, depth: int) -> tuple[Any, int]:
    return _read_atom(st, pos, True)


def _tuple_items(st: _State, pos: int, n: int, depth: int) -> tuple[Any, int]:
    if n > st.end - pos:
        raise _fail(f"tuple of {n} elements cannot fit in {st.end - pos} bytes", pos)
    if depth >= st.limits.max_depth:
        raise _fail(f"nesting deeper than max_depth={st.limits.max_depth}", pos)
    _spend(st, n, pos)
    if n:
        _charge(st, COST_TUPLE + COST_SLOT * n, pos)
    items = []
    append = items.append
    depth += 1
    data, end, decoders = st.data, st.end, _DECODERS
    for _ in range(n):
        # _term inlined: one Python call less per element
        fn = decoders[data[pos]] if pos < end else None
        value, pos = fn(st, pos, depth) if fn is not None else _term(st, pos, depth)
        append(value)
    return tuple(items), pos


def _d_small_tuple(st: _State, pos: int, depth: int) -> tuple[Any, int]:
    _need(st, pos + 1, 1, "SMALL_TUPLE_EXT")
    return _tuple_items(st, pos + 2, st.data[pos + 1], depth)


def _d_large_tuple(st: _State, pos: int, depth: int) -> tuple[Any, int]:
    _need(st, pos + 1, 4, "LARGE_TUPLE_EXT")
    return _tuple_items(st, pos + 5, _u32(st.data, pos + 1)[0], depth)


def _d_nil(st: _State, pos: int, depth: int) -> tuple[Any, int]:
    _charge(st, COST_LIST, pos)
    return [], pos + 1


def _d_string(st: _State, pos: int, depth: int) -> tuple[Any, int]:
    _need(st, pos + 1, 2, "STRING_EXT")
    n = _u16(st.data, pos + 1)[0]
    _need(st, pos + 3, n, "STRING_EXT")
    _spend(st, n, pos)
    _charge(st, COST_LIST + COST_SLOT * n, pos)
    return list(st.data[pos + 3 : pos + 3 + n]), pos + 3 + n


def _d_list(st: _State, pos: int, depth: int) -> tuple[Any, int]:
    _need(st, pos + 1, 4, "LIST_EXT")
    n = _u32(st.data, pos + 1)[0]
    p = pos + 5
    if n + 1 > st.end - p:
        raise _fail(f"list of {n} elements cannot fit in {st.end - p} bytes", pos)
    if depth >= st.limits.max_depth:
        raise _fail(f"nesting deeper than max_depth={st.limits.max_depth}", pos)
    _spend(st, n, pos)
    _charge(st, COST_LIST + COST_SLOT * n, pos)
    items: list[Any] = []
    append = items.append
    depth += 1
    data, end, decoders = st.data, st.end, _DECODERS
    while True:
        for _ in range(n):
            fn = decoders[data[p]] if p < end else None  # _term inlined
            value, p = fn(st, p, depth) if fn is not None else _term(st, p, depth)
            append(value)
        if p >= end or data[p] != T.LIST:
            break
        # [a | [b | ...]]: never sent by OTP, but one list, read in one pass (linear time)
        _need(st, p + 1, 4, "LIST_EXT")
        n = _u32(data, p + 1)[0]
        if n + 1 > end - p - 5:
            raise _fail(f"list of {n} elements cannot fit in {end - p - 5} bytes", p)
        _spend(st, n, p)
        _charge(st, COST_SLOT * n, p)
        p += 5
    if p < end and data[p] == T.NIL:
        return items, p + 1
    tail, p = _term(st, p, depth)
    if type(tail) is list:  # a STRING_EXT tail
        items.extend(tail)
        return items, p
    if not items:  # LIST_EXT of length 0 with a tail is just the tail
        return tail, p
    _charge(st, COST_OBJECT, pos)
    return ImproperList(items, tail), p


def _d_binary(st: _State, pos: int, depth: int) -> tuple[Any, int]:
    _need(st, pos + 1, 4, "BINARY_EXT")
    n = _u32(st.data, pos + 1)[0]
    _need(st, pos + 5, n, "BINARY_EXT")
    if n > 1:
        _charge(st, COST_BYTES + n, pos)
    return bytes(st.data[pos + 5 : pos + 5 + n]), pos + 5 + n


def _d_bit_binary(st: _State, pos: int, depth: int) -> tuple[Any, int]:
    _need(st, pos + 1, 5, "BIT_BINARY_EXT")
    n = _u32(st.data, pos + 1)[0]
    bits = st.data[pos + 5]
    _need(st, pos + 6, n, "BIT_BINARY_EXT")
    if n == 0 or not 1 <= bits <= 8:
        raise _fail(f"BIT_BINARY_EXT with {n} bytes and {bits} bits in the last", pos)
    _charge(st, COST_OBJECT + (COST_BYTES + n if n > 1 else 0), pos)
    return BitString(bytes(st.data[pos + 6 : pos + 6 + n]), bits), pos + 6 + n


def _d_map(st: _State, pos: int, depth: int) -> tuple[Any, int]:
    """MAP_EXT: keys and values are read first, then the map is built (see _build_map)."""
    _need(st, pos + 1, 4, "MAP_EXT")
    n = _u32(st.data, pos + 1)[0]
    p = pos + 5
    if 2 * n > st.end - p:
        raise _fail(f"map of {n} pairs cannot fit in {st.end - p} bytes", pos)
    if depth >= st.limits.max_depth:
        raise _fail(f"nesting deeper than max_depth={st.limits.max_depth}", pos)
    _spend(st, 2 * n, pos)
    _charge(st, COST_MAP + COST_MAP_PAIR * n, pos)
    keys: list[Any] = []
    values: list[Any] = []
    depth += 1
    data, end, decoders = st.data, st.end, _DECODERS
    for _ in range(n):
        key_pos = p
        huge = st.huge_ints
        fn = decoders[data[p]] if p < end else None  # _term inlined
        key, p = fn(st, p, depth) if fn is not None else _term(st, p, depth)
        if st.huge_ints != huge:
            _count_huge_int_key(st, key_pos)
        fn = decoders[data[p]] if p < end else None
        value, p = fn(st, p, depth) if fn is not None else _term(st, p, depth)
        keys.append(key)
        values.append(value)
    return _build_map(keys, values, pos), p


def _count_huge_int_key(st: _State, pos: int) -> None:
    """Keys holding integers >= 2**61 - 1 can be made to share one hash, which turns dict
    insertion quadratic: bound how many one term may have."""
    st.huge_int_keys += 1
    if st.huge_int_keys > st.limits.max_huge_int_keys:
        raise _fail(
            f"more than max_huge_int_keys={st.limits.max_huge_int_keys} map keys hold "
            "integers of 2**61 - 1 or more",
            pos,
        )


def _build_map(keys: list[Any], values: list[Any], pos: int) -> dict[Any, Any]:
    """The dict of a map's pairs, in wire order, once its keys are known not to collide in
    Python's hash (see _check_probe_work); keys Python cannot hash become FrozenTerms."""
    hashes = []
    for i, key in enumerate(keys):
        try:
            hashes.append(hash(key))
        except TypeError:  # a list, a map, ...
            keys[i] = key = FrozenTerm(key)
            hashes.append(hash(key))
    _check_probe_work(hashes, pos)
    result: dict[Any, Any] = {}
    for key, value in zip(keys, values, strict=True):
        if key in result:  # equal under Python's == (1, 1.0, true) or a duplicate
            return _build_map_with_aliases(keys, values, pos)
        result[key] = value
    return result


def _build_map_with_aliases(keys: list[Any], values: list[Any], pos: int) -> dict[Any, Any]:
    """Keys that Python's == merges but Erlang does not (1, 1.0 and true) are wrapped in
    FrozenTerm, which compares Erlang-style; a key that is the same term twice is an error.
    Shared with _cetf."""
    first: dict[Any, Any] = {}  # key -> the first key of the map equal to it under ==
    final = []
    wrapped = False
    for key in keys:
        size = len(first)
        seen = first.setdefault(key, key)
        if len(first) == size:
            if same_term(seen, key):
                raise _fail("map has a duplicate key", pos)
            key = key if type(key) is FrozenTerm else FrozenTerm(key)
            wrapped = True
        final.append(key)
    if wrapped:  # the wrappers hash differently: check them too
        _check_probe_work([hash(key) for key in final], pos)
    result: dict[Any, Any] = {}
    for key, value in zip(final, values, strict=True):
        if key in result:
            raise _fail("map has a duplicate key", pos)
        result[key] = value
    return result


# Python's dict probes slot i = hash & mask, then i = 5 * i + 1 + (perturb >>= 5); keys whose
# hashes are equal, or crafted to meet on one probe sequence (tuple and int hashes can be
# inverted), make building the dict quadratic. _check_probe_work replays those probes for every
# table size the dict passes through and refuses the map when they exceed the budget below
# (random keys take about 1.5 probes each, structured ones such as multiples of 2**40 about 10).
PROBE_CHECK_MIN_KEYS = 128  # smaller maps cost at most this many probes per key anyway
PROBE_BUDGET_PER_KEY = 32
PROBE_BUDGET_BASE = 4096
_SIZE_T = (1 << 64) - 1


def _check_probe_work(hashes: list[int], pos: int) -> None:
    """Raise if inserting keys with these hashes into a dict would take more than the budget of
    probes at any table size from 8 up to 4 times the key count (CPython sizes a dict of n keys
    at most next_pow2(3n)). _cetf replays exactly the same probes in C."""
    n = len(hashes)
    if n < PROBE_CHECK_MIN_KEYS:
        return
    size = 8
    while True:
        m = min(n, 2 * size // 3)
        budget = PROBE_BUDGET_PER_KEY * m + PROBE_BUDGET_BASE
        mask = size - 1
        table = bytearray(size)
        work = 0
        for h in hashes[:m]:
            h &= _SIZE_T
            i = h & mask
            perturb = h
            while table[i]:
                work += 1
                perturb >>= 5
                i = (i * 5 + perturb + 1) & mask
            table[i] = 1
            if work > budget:
                raise _fail(f"map of {n} pairs whose keys collide in Python's hash", pos)
        if size >= 4 * n:
            return
        size *= 2


def _d_pid(st: _State, pos: int, depth: int) -> tuple[Any, int]:
    return _read_pid(st, pos)


def _d_new_port(st: _State, pos: int, depth: int) -> tuple[Any, int]:
    node, p = _read_atom(st, pos + 1, False)
    _need(st, p, 8, "NEW_PORT_EXT")
    _charge(st, COST_OBJECT + 2 * COST_INT, pos)
    return Port(node, _u32(st.data, p)[0], _u32(st.data, p + 4)[0]), p + 8


def _d_v4_port(st: _State, pos: int, depth: int) -> tuple[Any, int]:
    node, p = _read_atom(st, pos + 1, False)
    _need(st, p, 12, "V4_PORT_EXT")
    _charge(st, COST_OBJECT + 2 * COST_INT, pos)
    return Port(node, _u64(st.data, p)[0], _u32(st.data, p + 8)[0], True), p + 12


def _d_reference(st: _State, pos: int, depth: int) -> tuple[Any, int]:
    _need(st, pos + 1, 2, "NEWER_REFERENCE_EXT")
    n = _u16(st.data, pos + 1)[0]
    if not 1 <= n <= 5:
        raise _fail(f"reference with {n} words (1..5 allowed)", pos)
    node, p = _read_atom(st, pos + 3, False)
    _need(st, p, 4 + 4 * n, "NEWER_REFERENCE_EXT")
    _charge(st, COST_OBJECT + COST_TUPLE + (COST_SLOT + COST_INT) * n + COST_INT, pos)
    creation = _u32(st.data, p)[0]
    ids = struct.unpack_from(f">{n}I", st.data, p + 4)
    return Reference(node, creation, ids), p + 4 + 4 * n


def _d_export(st: _State, pos: int, depth: int) -> tuple[Any, int]:
    module, p = _read_atom(st, pos + 1, False)
    function, p = _read_atom(st, p, False)
    if p + 2 > st.end or st.data[p] != T.SMALL_INTEGER:
        raise _fail("EXPORT_EXT arity must be a SMALL_INTEGER_EXT", p)
    _charge(st, COST_OBJECT, pos)
    return ExportFun(module, function, st.data[p + 1]), p + 2


def _d_new_fun(st: _State, pos: int, depth: int) -> tuple[Any, int]:
    data = st.data
    _need(st, pos + 1, 4 + 1 + 16 + 4 + 4, "NEW_FUN_EXT")
    size = _u32(data, pos + 1)[0]
    end = pos + 1 + size
    if size < 29 or end > st.end:
        raise _fail(f"NEW_FUN_EXT size {size} does not fit the input", pos)
    if depth >= st.limits.max_depth:
        raise _fail(f"nesting deeper than max_depth={st.limits.max_depth}", pos)
    arity = data[pos + 5]
    uniq = bytes(data[pos + 6 : pos + 22])
    index = _u32(data, pos + 22)[0]
    num_free = _u32(data, pos + 26)[0]
    p = pos + 30
    if num_free > end - p:
        raise _fail(f"NEW_FUN_EXT with {num_free} free variables cannot fit", pos)
    _spend(st, num_free, pos)
    _charge(st, COST_FUN + COST_BYTES + size + COST_TUPLE + COST_SLOT * num_free, pos)
    module, p = _read_atom(st, p, False)
    old_index, p = _read_small_uint(st, p, depth + 1, "NEW_FUN_EXT OldIndex")
    old_uniq, p = _read_small_uint(st, p, depth + 1, "NEW_FUN_EXT OldUniq")
    pid, p = _read_pid(st, p)
    free: list[Any] = []
    for _ in range(num_free):
        value, p = _term(st, p, depth + 1)
        free.append(value)
    if p != end:
        raise _fail(f"NEW_FUN_EXT size {size} does not match its contents", pos)
    raw = bytes(data[pos:end])
    fun = Fun(raw, module, arity, index, uniq, old_index, old_uniq, pid, tuple(free))
    return fun, end


_DECODERS: list[Callable[[_State, int, int], tuple[Any, int]] | None] = [None] * 256
for _tag, _fn in {
    T.SMALL_INTEGER: _d_small_int,
    T.INTEGER: _d_int,
    T.SMALL_BIG: _d_small_big,
    T.LARGE_BIG: _d_large_big,
    T.NEW_FLOAT: _d_new_float,
    T.FLOAT: _d_old_float,
    T.ATOM: _d_atom,
    T.SMALL_ATOM: _d_atom,
    T.ATOM_UTF8: _d_atom,
    T.SMALL_ATOM_UTF8: _d_atom,
    T.SMALL_TUPLE: _d_small_tuple,
    T.LARGE_TUPLE: _d_large_tuple,
    T.NIL: _d_nil,
    T.STRING: _d_string,
    T.LIST: _d_list,
    T.BINARY: _d_binary,
    T.BIT_BINARY: _d_bit_binary,
    T.MAP: _d_map,
    T.NEW_PID: _d_pid,
    T.NEW_PORT: _d_new_port,
    T.V4_PORT: _d_v4_port,
    T.NEWER_REFERENCE: _d_reference,
    T.EXPORT: _d_export,
    T.NEW_FUN: _d_new_fun,
}.items():
    _DECODERS[_tag] = _fn


def _as_buffer(data: Any) -> Any:
    if isinstance(data, (bytes, bytearray)):
        return data
    if isinstance(data, memoryview):
        return data.cast("B") if data.format != "B" or data.ndim != 1 else data
    raise TypeError(f"expected bytes, bytearray or memoryview, got {type(data).__name__}")


_stack_ready_for = 0  # the max_depth the recursion limit was last raised for


def _ensure_stack(limits: DecodeLimits) -> None:
    # The decoder recurses once per nesting level (plus a frame or two per level for the
    # dispatch); since 3.11 such pure-Python calls use no C stack, so raising the limit is safe.
    global _stack_ready_for
    if limits.max_depth <= _stack_ready_for:
        return
    need = 3 * limits.max_depth + 1200
    if sys.getrecursionlimit() < need:
        sys.setrecursionlimit(need)
    _stack_ready_for = limits.max_depth


def decode_from(
    data: bytes | bytearray | memoryview, offset: int = 0, *, limits: DecodeLimits = DEFAULT_LIMITS
) -> tuple[Any, int]:
    """Decode one 131-prefixed term starting at `offset`; return (term, offset just after it)."""
    buf = _as_buffer(data)
    offset = operator.index(offset)
    if offset < 0 or offset > len(buf):
        raise ETFError(f"offset {offset} outside the input of {len(buf)} bytes")
    with _gc_paused(len(buf) - offset):
        return _decode_at(_State(buf, limits, len(buf) - offset), offset)


# Decoded terms hold no reference cycles: the cyclic GC has nothing to find while a large input is
# decoded, and its passes over millions of young containers cost far more than the decode.
_GC_PAUSE_ABOVE = 65536  # the same in _cetf


@contextlib.contextmanager
def _gc_paused(size: int) -> Iterator[None]:
    if size < _GC_PAUSE_ABOVE or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _decode_at(st: _State, offset: int) -> tuple[Any, int]:
    buf = st.data
    if offset >= st.end:
        raise _fail("truncated: expected the version byte 131", offset)
    if buf[offset] != T.VERSION:
        raise _fail(f"expected version byte 131, got {buf[offset]}", offset)
    if st.limits.max_depth > _stack_ready_for:
        _ensure_stack(st.limits)
    try:
        if offset + 1 < st.end and buf[offset + 1] == T.COMPRESSED:
            return _decode_compressed(st, offset)
        return _term(st, offset + 1, 0)
    except RecursionError:  # only if the caller's own stack was already nearly full
        raise ETFError("term nested too deeply for the Python stack") from None


def _inflate(buf: Any, offset: int, limits: DecodeLimits) -> tuple[bytes, int]:
    """Inflate the compressed term (131, 80, Size:32, zlib) at `offset`; return the inner term's
    bytes (starting at its tag) and the offset just after the zlib stream. Shared with _cetf."""
    if len(buf) - offset < 6:
        raise _fail("truncated compressed term header", offset)
    size = _u32(buf, offset + 2)[0]
    if size > limits.max_uncompressed_size:
        raise _fail(
            f"compressed term declares {size} bytes, over max_uncompressed_size="
            f"{limits.max_uncompressed_size}",
            offset,
        )
    inflater = zlib.decompressobj()
    try:
        inner = inflater.decompress(bytes(buf[offset + 6 :]), size)
    except zlib.error as exc:
        raise _fail(f"bad zlib data in compressed term ({exc})", offset) from None
    if len(inner) != size or not inflater.eof:
        raise _fail(f"compressed term does not inflate to its declared {size} bytes", offset)
    return inner, len(buf) - len(inflater.unused_data)


def _decode_compressed(st: _State, offset: int) -> tuple[Any, int]:
    buf = st.data
    if st.end - offset >= 6:  # the inflated bytes count against the memory budget
        size = _u32(buf, offset + 2)[0]
        if size <= st.limits.max_uncompressed_size:  # else _inflate says why
            _charge(st, size, offset)
    inner, end = _inflate(buf, offset, st.limits)
    st.data, st.end = inner, len(inner)
    try:
        term, p = _term(st, 0, 0)
    finally:
        st.data, st.end = buf, len(buf)
    if p != len(inner):
        raise _fail(f"compressed term has {len(inner) - p} trailing bytes", offset)
    return term, end


def decode(data: bytes | bytearray | memoryview, *, limits: DecodeLimits = DEFAULT_LIMITS) -> Any:
    """Decode exactly one 131-prefixed term (plain or compressed); trailing bytes are an error."""
    term, end = decode_from(data, 0, limits=limits)
    if end != len(data if not isinstance(data, memoryview) else _as_buffer(data)):
        raise _fail("trailing bytes after the term", end)
    return term


def decode_dist_frame(
    data: bytes | bytearray | memoryview, *, limits: DecodeLimits = DEFAULT_LIMITS
) -> tuple[Any, Any]:
    """Parse a distribution frame body `112, Control, [Message]` (no length prefix, no atom-cache
    header); return (control, message) with message NO_MESSAGE when absent."""
    buf = _as_buffer(data)
    if not buf or buf[0] != T.PASS_THROUGH:
        got = buf[0] if buf else "nothing"
        raise ETFError(f"distribution frame must start with 112, got {got} at offset 0")
    st = _State(buf, limits, len(buf))  # one budget for the frame's two terms
    with _gc_paused(len(buf)):
        control, p = _decode_at(st, 1)
        if p == len(buf):
            return control, NO_MESSAGE
        message, p = _decode_at(st, p)
    if p != len(buf):
        raise _fail("trailing bytes after the message in a distribution frame", p)
    return control, message


# --------------------------------------------------------------------------------------------
# encoding


def _encode_atom_text(out: bytearray, text: str) -> None:
    raw = text.encode("utf-8")
    n = len(raw)
    if n < 256:
        out.append(T.SMALL_ATOM_UTF8)
        out.append(n)
    else:
        if len(text) > 255:
            raise ETFError(f"atom longer than 255 characters: {text[:20]!r}...")
        out.append(T.ATOM_UTF8)
        out += _pack_u16(n)
    out += raw


def _e_atom(out: bytearray, term: Any, depth: int) -> None:
    if not isinstance(term, str):
        raise ETFError(f"an atom (node, module, function name) must be a str, got {term!r:.80}")
    atom = _encoded_atoms.get(term)
    if atom is None:
        buf = bytearray()
        _encode_atom_text(buf, str(term))
        atom = bytes(buf)
        if len(_encoded_atoms) >= _ATOM_CACHE_MAX:
            _encoded_atoms.clear()
        _encoded_atoms[str(term)] = atom
    out += atom


_encoded_atoms: dict[str, bytes] = {}


def _e_int(out: bytearray, term: int, depth: int) -> None:
    if 0 <= term <= 255:
        out.append(T.SMALL_INTEGER)
        out.append(term)
    elif -(2**31) <= term < 2**31:
        out.append(T.INTEGER)
        out += _pack_i32(term)
    else:
        magnitude = -term if term < 0 else term
        n = (magnitude.bit_length() + 7) // 8
        if n < 256:
            out.append(T.SMALL_BIG)
            out.append(n)
        else:
            out.append(T.LARGE_BIG)
            out += _pack_u32(n)
        out.append(1 if term < 0 else 0)
        out += magnitude.to_bytes(n, "little")


def _e_bool(out: bytearray, term: bool, depth: int) -> None:
    out += b"\x77\x04true" if term else b"\x77\x05false"


def _e_none(out: bytearray, term: None, depth: int) -> None:
    out += b"\x77\x03nil"


def _e_float(out: bytearray, term: float, depth: int) -> None:
    if not math.isfinite(term):
        raise ETFError(f"cannot encode a non-finite float: {term!r}")
    out.append(T.NEW_FLOAT)
    out += _pack_f64(term)


def _e_bytes(out: bytearray, term: bytes, depth: int) -> None:
    out.append(T.BINARY)
    out += _pack_u32(len(term))
    out += term


def _e_str(out: bytearray, term: str, depth: int) -> None:
    _e_bytes(out, term.encode("utf-8"), depth)


def _e_tuple(out: bytearray, term: tuple[Any, ...], depth: int) -> None:
    n = len(term)
    if n < 256:
        out.append(T.SMALL_TUPLE)
        out.append(n)
    else:
        out.append(T.LARGE_TUPLE)
        out += _pack_u32(n)
    depth += 1
    if n and depth > _ENCODE_MAX_DEPTH:  # as _encode_term would say for the first element
        raise ETFError(f"term nested deeper than {_ENCODE_MAX_DEPTH} (or cyclic)")
    encoders = _ENCODERS
    for item in term:
        # _encode_term inlined for the exact types: one Python call less per element
        fn = encoders.get(type(item))
        if fn is None:
            _encode_term(out, item, depth)
        else:
            fn(out, item, depth)


def _is_byte_list(term: list[Any]) -> bool:
    for x in term:
        if type(x) is not int or not 0 <= x <= 255:
            return False
    return True


def _e_list(out: bytearray, term: list[Any], depth: int) -> None:
    term = term[:]  # a snapshot: encoding a subclass may run code that changes the list
    n = len(term)
    if n == 0:
        out.append(T.NIL)
        return
    if n < 65536 and _is_byte_list(term):
        out.append(T.STRING)
        out += _pack_u16(n)
        out += bytes(term)
        return
    out.append(T.LIST)
    out += _pack_u32(n)
    depth += 1
    if depth > _ENCODE_MAX_DEPTH:
        raise ETFError(f"term nested deeper than {_ENCODE_MAX_DEPTH} (or cyclic)")
    encoders = _ENCODERS
    for item in term:
        fn = encoders.get(type(item))  # _encode_term inlined
        if fn is None:
            _encode_term(out, item, depth)
        else:
            fn(out, item, depth)
    out.append(T.NIL)


def _e_improper(out: bytearray, term: ImproperList, depth: int) -> None:
    items = list(term.items)  # a snapshot, as for lists
    tail = term.tail
    out.append(T.LIST)
    out += _pack_u32(len(items))
    depth += 1
    for item in items:
        _encode_term(out, item, depth)
    _encode_term(out, tail, depth)


def _e_dict(out: bytearray, term: dict[Any, Any], depth: int) -> None:
    items = list(term.items())  # a snapshot: the count written must match what follows
    out.append(T.MAP)
    out += _pack_u32(len(items))
    depth += 1
    for key, value in items:
        _encode_term(out, key.term if type(key) is FrozenTerm else key, depth)
        _encode_term(out, value, depth)


def _u32_field(value: int, what: str) -> bytes:
    if type(value) is not int or not 0 <= value < 2**32:
        raise ETFError(f"{what} must be an integer in 0..2**32-1, got {value!r}")
    return _pack_u32(value)


def _e_pid(out: bytearray, term: Pid, depth: int) -> None:
    out.append(T.NEW_PID)
    _e_atom(out, term.node, depth)
    out += _u32_field(term.id, "Pid id")
    out += _u32_field(term.serial, "Pid serial")
    out += _u32_field(term.creation, "Pid creation")


def _e_port(out: bytearray, term: Port, depth: int) -> None:
    if type(term.id) is not int or not 0 <= term.id < 2**64:
        raise ETFError(f"Port id must be an integer in 0..2**64-1, got {term.id!r}")
    if term.v4 or term.id >= 2**32:
        out.append(T.V4_PORT)
        _e_atom(out, term.node, depth)
        out += term.id.to_bytes(8, "big")
    else:
        out.append(T.NEW_PORT)
        _e_atom(out, term.node, depth)
        out += _pack_u32(term.id)
    out += _u32_field(term.creation, "Port creation")


def _e_reference(out: bytearray, term: Reference, depth: int) -> None:
    ids = term.ids
    if not isinstance(ids, tuple) or not 1 <= len(ids) <= 5:
        raise ETFError(f"Reference ids must be a tuple of 1..5 words, got {ids!r}")
    out.append(T.NEWER_REFERENCE)
    out += _pack_u16(len(ids))
    _e_atom(out, term.node, depth)
    out += _u32_field(term.creation, "Reference creation")
    for word in ids:
        out += _u32_field(word, "Reference id word")


def _e_export(out: bytearray, term: ExportFun, depth: int) -> None:
    if type(term.arity) is not int or not 0 <= term.arity <= 255:
        raise ETFError(f"ExportFun arity must be 0..255, got {term.arity!r}")
    out.append(T.EXPORT)
    _e_atom(out, term.module, depth)
    _e_atom(out, term.function, depth)
    out.append(T.SMALL_INTEGER)
    out.append(term.arity)


def _e_fun(out: bytearray, term: Fun, depth: int) -> None:
    raw = term.raw
    if type(raw) is not bytes:
        raise ETFError("Fun raw must be bytes")
    out += raw


def _e_bitstring(out: bytearray, term: BitString, depth: int) -> None:
    data, bits = term.data, term.bits
    if type(data) is not bytes or not data or type(bits) is not int or not 1 <= bits <= 8:
        raise ETFError("malformed BitString: data must be non-empty bytes and bits 1..8")
    out.append(T.BIT_BINARY)
    out += _pack_u32(len(data))
    out.append(bits)
    out += data


def _e_frozen(out: bytearray, term: FrozenTerm, depth: int) -> None:
    _encode_term(out, term.term, depth + 1)  # + 1: a FrozenTerm may hold itself


_ENCODERS: dict[type, Callable[[bytearray, Any, int], None]] = {
    Atom: _e_atom,
    int: _e_int,
    bool: _e_bool,
    type(None): _e_none,
    float: _e_float,
    bytes: _e_bytes,
    bytearray: _e_bytes,
    str: _e_str,
    tuple: _e_tuple,
    list: _e_list,
    dict: _e_dict,
    ImproperList: _e_improper,
    Pid: _e_pid,
    Port: _e_port,
    Reference: _e_reference,
    ExportFun: _e_export,
    Fun: _e_fun,
    BitString: _e_bitstring,
    FrozenTerm: _e_frozen,
}
# Subclasses (an IntEnum, a str subclass, ...) fall back to the first matching base, in this order.
_BASES: tuple[type, ...] = (
    Atom, bool, int, float, str, bytes, bytearray, tuple, list, dict, ImproperList,
    Pid, Port, Reference, ExportFun, Fun, BitString, FrozenTerm,
)  # fmt: skip

_ENCODE_MAX_DEPTH = DEFAULT_LIMITS.max_depth


def _encode_term(out: bytearray, term: Any, depth: int) -> None:
    if depth > _ENCODE_MAX_DEPTH:
        raise ETFError(f"term nested deeper than {_ENCODE_MAX_DEPTH} (or cyclic)")
    fn = _ENCODERS.get(type(term))
    if fn is None:
        for base in _BASES:
            if isinstance(term, base):
                fn = _ENCODERS[base]
                break
        else:
            raise ETFError(f"cannot encode a value of type {type(term).__name__}: {term!r:.80}")
    fn(out, term, depth)


def _encode_fragment(term: Any, depth: int) -> bytes:
    """The encoding of one subterm (no version byte): _cetf's fallback for unusual types."""
    out = bytearray()
    try:
        _encode_term(out, term, depth)
    except AttributeError as exc:
        raise _malformed(exc) from None
    return bytes(out)


def _malformed(exc: AttributeError) -> ETFError:
    """A term type whose fields were never set (Pid.__new__(Pid), ...)."""
    return ETFError(f"cannot encode a malformed term: {exc}")


def encode(term: Any, *, compressed: bool | int = False) -> bytes:
    """Encode `term` as a full external term (131 version byte first).

    compressed: False, True (zlib level 6, as term_to_binary(T, [compressed])) or a level 0..9.
    Like term_to_binary, the compressed form is used only when it is smaller.
    """
    out = bytearray(b"\x83")
    if _stack_ready_for < _ENCODE_MAX_DEPTH:
        _ensure_stack(DEFAULT_LIMITS)
    try:
        _encode_term(out, term, 0)
    except RecursionError:
        raise ETFError("term nested too deeply to encode") from None
    except UnicodeEncodeError as exc:  # a str holding a lone surrogate
        raise ETFError(f"cannot encode text as UTF-8: {exc}") from None
    except AttributeError as exc:
        raise _malformed(exc) from None
    return _finish(bytes(out), compressed)


def _finish(plain: bytes, compressed: Any) -> bytes:
    """Apply encode's `compressed` option to a plain encoding. Shared with _cetf."""
    if compressed is False:
        return plain
    level = 6 if compressed is True else compressed
    if type(level) is not int or not 0 <= level <= 9:
        raise ValueError(f"compressed must be a bool or a zlib level 0..9, got {compressed!r}")
    if level == 0:
        return plain
    body = memoryview(plain)[1:]
    packed = zlib.compress(body, level)
    # term_to_binary gives zlib only len(body) - 5 bytes of room and falls back to plain
    if len(packed) > len(body) - 5:
        return plain
    return b"\x83\x50" + _pack_u32(len(body)) + packed
