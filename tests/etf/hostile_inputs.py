"""Inputs built to hurt a decoder: keys that collide in Python's hash, terms that decode to far
more memory than their size, list tails. Used by the codec tests and by bench/bench_hostile.py.

Everything is built as bytes directly, never through a dict (building a dict of colliding keys is
exactly the quadratic work these inputs are about).
"""

from __future__ import annotations

import struct

from dspex_cluster.etf import pure

_M64 = (1 << 64) - 1
_MODULUS = (1 << 61) - 1
# CPython's tuple hash (xxHash-like, 3.8+, 64-bit): acc = P5; per item acc = rotl(acc + h*P2, 31)
# * P1; every step is invertible, so the second item of a pair can be chosen to hit any hash.
_P1 = 11400714785074694791
_P2 = 14029467366897019727
_P5 = 2870177450012600261
_P1_INV = pow(_P1, -1, 1 << 64)
_P2_INV = pow(_P2, -1, 1 << 64)


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def _rotr(x: int, r: int) -> int:
    return ((x >> r) | (x << (64 - r))) & _M64


def _int_with_hash(h: int) -> int | None:
    """An int whose Python hash is the 64-bit pattern h, if there is one."""
    if h < _MODULUS:
        return h
    signed = h - (1 << 64)
    if -_MODULUS < signed < -1:
        return signed
    return None


def colliding_pairs(n: int, first: int = 1000) -> list[tuple[int, int]]:
    """n distinct 2-tuples of ordinary integers that all have the same Python hash."""
    target = 0x5DEECE66D2B4F0A1
    meet = _rotr((target * _P1_INV) & _M64, 31)  # the accumulator before the second item
    pairs = []
    a = first
    while len(pairs) < n:
        acc = (_rotl((_P5 + (hash(a) & _M64) * _P2) & _M64, 31) * _P1) & _M64
        b = _int_with_hash(((meet - acc) * _P2_INV) & _M64)
        if b is not None:
            pairs.append((a, b))
        a += 1
    assert len({hash(p) for p in pairs[:50]}) == 1, "not CPython's 64-bit tuple hash"
    return pairs


def map_bytes(keys: list[object], value: bytes = b"a\x00") -> bytes:
    """A MAP_EXT of `keys` (each mapped to the term `value`), as a full term."""
    body = b"".join(pure.encode(k)[1:] + value for k in keys)
    return b"\x83t" + struct.pack(">I", len(keys)) + body


def nil_list(n: int) -> bytes:
    """[[], [], ...]: n empty lists, one byte each on the wire and a list object each in Python."""
    return b"\x83l" + struct.pack(">I", n) + b"j" * n + b"j"


def list_of_tails(segments: int, per: int) -> bytes:
    """[0, 1, ... | [.. | [..]]]: `segments` LIST_EXTs of `per` small ints, each the tail of the one
    before (OTP never sends this; an older decoder re-spliced the items at every level)."""
    items = b"".join(b"a" + bytes([i % 256]) for i in range(per))
    return b"\x83" + (b"l" + struct.pack(">I", per) + items) * segments + b"j"
