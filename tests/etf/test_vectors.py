"""The codec against real `erlang:term_to_binary` / `binary_to_term` of OTP 25 and OTP 28."""

from __future__ import annotations

import random
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from dspex_cluster.etf import (
    Atom,
    BitString,
    ExportFun,
    FrozenTerm,
    Fun,
    ImproperList,
    Pid,
    Port,
    Reference,
    same_term,
)

from .erlang_peer import ErlangPeer

A = Atom
NODE = A("nonode@nohost")


def _is_pid(v: Any) -> bool:
    return type(v) is Pid and v.node == NODE and v.creation == 0


def _is_ref(v: Any, words: tuple[int, ...] = (3, 5)) -> bool:
    return type(v) is Reference and v.node == NODE and len(v.ids) in words


def _is_fun(arity: int, free: bool) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        return (
            type(v) is Fun
            and v.module == "erl_eval"
            and v.arity == arity
            and bool(v.free_vars) is free
            and _is_pid(v.pid)
        )

    return check


# vector name -> the Python value decode must give, or a predicate on it
EXPECTED: dict[str, Any] = {
    "atom_ok": A("ok"),
    "atom_true": True,
    "atom_false": False,
    "atom_nil": None,
    "atom_undefined": A("undefined"),
    "atom_empty": A(""),
    "atom_latin1": A("ñandú"),
    "atom_emoji": A("😀"),
    "atom_long": A("a" * 255),
    "atom_long_unicode": A("é" * 255),
    "int_0": 0,
    "int_255": 255,
    "int_256": 256,
    "int_m1": -1,
    "int_max32": 2**31 - 1,
    "int_min32": -(2**31),
    "big_2_31": 2**31,
    "big_m2_31_m1": -(2**31) - 1,
    "big_2_64": 2**64,
    "big_m2_64": -(2**64),
    "big_255_bytes": 2**2040 - 1,
    "big_256_bytes": 2**2040,
    "big_neg_large": -(2**3000) - 12345,
    "float_0": 0.0,
    "float_1_5": 1.5,
    "float_pi": 3.141592653589793,
    "float_big": 1.0e300,
    "float_tiny_neg": -2.5e-300,
    "float_denormal": 5.0e-324,
    "bin_empty": b"",
    "bin_payload": b"payload",
    "bin_bytes": b"\x00\xff\x01\x80",
    "bin_300": b"xyz" * 100,
    "bits_1_3": BitString(b"\x20", 3),
    "bits_2_5": BitString(b"\xff\x38", 5),
    "bits_1_1": BitString(b"\x80", 1),
    "bits_7": BitString(b"\xfe", 7),
    "tuple_empty": (),
    "tuple_pair": (A("a"), 1),
    "tuple_300": tuple(range(1, 301)),
    "nil": [],
    "list_1_2": [1, 2],
    "charlist_abc": [97, 98, 99],
    "charlist_latin1": [0xF1],
    "list_256": [256],
    "list_emoji": [0x1F600],
    "list_neg": [-1],
    "list_mixed": [1, A("a"), b"b", 2.5],
    "list_seq_300": list(range(1, 301)),
    "charlist_65535": [97] * 65535,
    "list_65536": [97] * 65536,
    "improper_int": ImproperList([1], 2),
    "improper_atoms": ImproperList([A("a"), A("b")], A("c")),
    "improper_bin": ImproperList([1], b"x"),
    "list_of_charlists": [[97, 98], [], [99]],
    "map_empty": {},
    "map_small": {A("a"): 1, A("b"): b"x", A("c"): [1, 2]},
    "map_33": {i: i * i for i in range(1, 34)},
    "map_100_atoms": {A(f"k{i}"): i for i in range(1, 101)},
    "map_list_key": {FrozenTerm([1, 2]): {A("x"): (1, 2)}, FrozenTerm([97, 98]): 1},
    "map_map_key": {FrozenTerm({A("a"): 1}): 2},
    "map_num_keys": {1: A("a"), FrozenTerm(1.0): A("b")},
    "map_bool_int_keys": {0: 4, 1: 2, FrozenTerm(False): 3, FrozenTerm(True): 1},
    "map_tuple_list_key": {FrozenTerm(([1],)): A("x"), (1,): A("y")},
    "pid_self": _is_pid,
    "ref_make": lambda v: _is_ref(v, (3,)),
    "ref_monitor": _is_ref,
    "ref_alias": _is_ref,
    "port_open": lambda v: type(v) is Port and v.node == NODE,
    "fun_export": ExportFun(A("lists"), A("map"), 2),
    "fun_export_self": ExportFun(A("erlang"), A("self"), 0),
    "fun_free_vars": _is_fun(1, True),
    "fun_no_free": _is_fun(0, True),  # an erl_eval closure always carries its environment
    "nested": lambda v: (
        type(v) is tuple
        and same_term(v[:4], (A("ok"), [{A("k"): [1, 2, (A("x"), b"y")]}], [115, 116, 114], [b"a"]))
        and _is_pid(v[4][0])
        and _is_ref(v[4][1], (3,))
    ),
    "gen_call": lambda v: (
        v[0] == "$gen_call" and _is_pid(v[1][0]) and _is_ref(v[1][1]) and v[2] == ("get", "key")
    ),
    "gen_call_alias": lambda v: (
        type(v[1][1]) is ImproperList and v[1][1].items == ["alias"] and _is_ref(v[1][1].tail)
    ),
    "dist_send_ctl": lambda v: v[0] == 22 and _is_pid(v[1]) and v[1] == v[2],
    "ping": (A("ping"), 12345, b"payload"),
    "compressed_atoms": [A("hello")] * 1000,
    "compressed_small": (A("a"), 1),
    "compressed_9": list(range(1, 2001)),
    "compressed_1": b"abcdefgh" * 500,
}
# the compression level each compressed vector was made with (term_to_binary's default is 6)
COMPRESSION = {"compressed_atoms": 6, "compressed_small": 6, "compressed_9": 9, "compressed_1": 1}


def test_peer_vectors_are_all_checked(erlang: ErlangPeer) -> None:
    assert set(erlang.vectors) == set(EXPECTED)


def _check_value(name: str, value: Any) -> None:
    expected = EXPECTED[name]
    if callable(expected) and not isinstance(expected, type):
        assert expected(value), f"{name}: unexpected {value!r:.300}"
    else:
        assert same_term(value, expected), f"{name}: {value!r:.300} != {expected!r:.300}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_decode_gives_expected_value(codec: ModuleType, erlang: ErlangPeer, name: str) -> None:
    minor2, default = erlang.vectors[name]
    value = codec.decode(minor2)
    _check_value(name, value)
    # the release's default encoding (OTP 25: latin-1 ATOM_EXT) decodes to the same term
    plain = codec.decode(default)
    if type(value) is Fun:  # opaque: its raw bytes differ with the atom encoding, not its identity
        assert (plain.module, plain.index, plain.uniq, plain.pid) == (
            value.module,
            value.index,
            value.uniq,
            value.pid,
        )
    else:
        assert same_term(plain, value)
    # decode_from stops right after the term, anywhere in a larger buffer
    framed = b"\x00\x01" + minor2 + b"\x70"
    assert same_term(codec.decode_from(framed, 2), (value, 2 + len(minor2)))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reencode_is_byte_exact(codec: ModuleType, erlang: ErlangPeer, name: str) -> None:
    minor2, _ = erlang.vectors[name]
    value = codec.decode(minor2)
    if name in COMPRESSION:
        assert codec.encode(value, compressed=COMPRESSION[name]) == minor2
    else:
        assert codec.encode(value) == minor2


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_erlang_reads_our_encoding(codec: ModuleType, erlang: ErlangPeer, name: str) -> None:
    """binary_to_term(encode(decode(V))) =:= the original term, inside the same VM."""
    minor2, _ = erlang.vectors[name]
    ours = codec.encode(codec.decode(minor2))
    assert erlang.request("C", name, ours.hex()) == ["true"]


# Python values -> the Erlang term binary_to_term must produce (an Erlang expression)
PY_TO_ERLANG: list[tuple[Any, str]] = [
    (A("ok"), "ok"),
    (A("hello world"), "'hello world'"),
    (A("ñ😀"), "list_to_atom([241, 128512])"),
    (True, "true"),
    (False, "false"),
    (None, "nil"),
    (0, "0"),
    (-1, "-1"),
    (255, "255"),
    (2**31, "2147483648"),
    (-(2**31), "-2147483648"),
    (2**100 + 7, "(1 bsl 100) + 7"),
    (-(2**2100), "-(1 bsl 2100)"),
    (1.5, "1.5"),
    (-0.25, "-0.25"),
    (b"", "<<>>"),
    (b"\x00\x01", "<<0, 1>>"),
    (bytearray(b"ab"), "<<\"ab\">>"),
    ("héllo", "unicode:characters_to_binary([104, 233, 108, 108, 111])"),
    (BitString(b"\x20", 3), "<<1:3>>"),
    ((), "{}"),
    ((1, (2, (3,))), "{1, {2, {3}}}"),
    (tuple(range(256)), "list_to_tuple(lists:seq(0, 255))"),
    ([], "[]"),
    ([1, 2], "[1, 2]"),
    ([104, 105], "\"hi\""),
    ([True], "[true]"),
    ([256, 0], "[256, 0]"),
    ([1.0], "[1.0]"),
    (list(range(70000)), "lists:seq(0, 69999)"),
    ([0] * 65535, "lists:duplicate(65535, 0)"),
    (ImproperList([1, 2], A("t")), "[1, 2 | t]"),
    ({}, "#{}"),
    ({A("a"): 1, "b": [1], 3: {4: 5}}, "#{a => 1, <<\"b\">> => [1], 3 => #{4 => 5}}"),
    ({FrozenTerm([1]): 1, FrozenTerm({}): 2}, "#{[1] => 1, #{} => 2}"),
    ({1: A("i"), FrozenTerm(1.0): A("f"), FrozenTerm(True): A("t")},
     "#{1 => i, 1.0 => f, true => t}"),
    ({i: str(i) for i in range(40)},
     "maps:from_list([{I, integer_to_binary(I)} || I <- lists:seq(0, 39)])"),
    (ExportFun(A("lists"), A("reverse"), 1), "fun lists:reverse/1"),
]  # fmt: skip


@pytest.mark.parametrize("value, expr", PY_TO_ERLANG, ids=[e[:40] for _, e in PY_TO_ERLANG])
def test_python_values_reach_erlang(
    codec: ModuleType, erlang: ErlangPeer, value: Any, expr: str
) -> None:
    reply = erlang.request("E", codec.encode(value).hex(), expr)
    assert reply[0] == "true", reply
    # and what Erlang makes of it comes back to the same Python value
    back = codec.decode(bytes.fromhex(reply[1]))
    assert same_term(back, _as_decoded(value))


def _as_decoded(value: Any) -> Any:
    """The value decode gives for `value`: Python str and bytearray come back as bytes."""
    if isinstance(value, str) and type(value) is not Atom:
        return value.encode()
    if isinstance(value, bytearray):
        return bytes(value)
    return value


def _random_term(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(13 if depth < 4 else 7)
    if kind == 0:
        return rng.choice([0, 1, 255, 256, -1, 2**31 - 1, -(2**31), 2**31, 2**64 + 3, -(2**77)])
    if kind == 1:
        return rng.randint(-(2**40), 2**40)
    if kind == 2:
        return rng.choice([0.5, -1e10, 3.25, 1e-300, 123456.789])
    if kind == 3:
        return A(rng.choice(["a", "ok", "error", "undefined", "héllo", "x y", "😀", ""]))
    if kind == 4:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(5)))
    if kind == 5:
        return rng.choice([True, False, None])
    if kind == 6:
        return BitString(bytes([rng.randrange(256) & 0xF0]), 4)
    if kind == 7:
        return tuple(_random_term(rng, depth + 1) for _ in range(rng.randrange(4)))
    if kind == 8:
        return [_random_term(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 9:
        return [rng.randrange(256) for _ in range(rng.randrange(1, 6))]
    if kind == 10:
        return ImproperList([_random_term(rng, depth + 1)], A("tail"))
    if kind == 11:  # a map with hashable atom/int keys: sorted as term_to_binary orders them
        keys = sorted({rng.randrange(100) for _ in range(rng.randrange(4))})
        return {k: _random_term(rng, depth + 1) for k in keys}
    return ExportFun(A("m"), A("f"), rng.randrange(256))


def test_random_terms_match_term_to_binary(codec: ModuleType, erlang: ErlangPeer) -> None:
    """Erlang's own re-encoding of what we encode is byte-identical: we write canonical terms."""
    rng = random.Random(20261127)
    for _ in range(300):
        value = _random_term(rng)
        ours = codec.encode(value)
        status, *rest = erlang.request("D", ours.hex())
        assert status == "ok", (value, ours.hex())
        assert bytes.fromhex(rest[0]) == ours, value
        assert same_term(codec.decode(ours), value)


def test_v4_port_round_trip(codec: ModuleType, erlang: ErlangPeer) -> None:
    """A V4_PORT_EXT with a 64-bit id decodes, re-encodes unchanged, and Erlang accepts it."""
    ours = codec.encode(Port(A("nonode@nohost"), 2**40 + 5, 0))
    assert ours[1] == 120
    assert codec.encode(codec.decode(ours)) == ours
    # OTP 25 knows V4_PORT_EXT but only 32-bit port numbers: either way it must not crash
    status, *_ = erlang.request("D", ours.hex())
    assert status in {"ok", "badarg"}
