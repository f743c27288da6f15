"""Terms built against the decoder's time and memory, and objects built against the encoder.

Both codecs must refuse (or accept) the same inputs with the same ETFError: see hostile_inputs.py
for how the inputs are made. Nothing here measures time (bench/bench_hostile.py does); an input
that used to take seconds is now refused, which is what is asserted.
"""

from __future__ import annotations

import random
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dspex_cluster import etf
from dspex_cluster.etf import (
    Atom,
    BitString,
    DecodeLimits,
    ETFError,
    ExportFun,
    FrozenTerm,
    ImproperList,
    Pid,
    Port,
    Reference,
)

from .hostile_inputs import colliding_pairs, list_of_tails, map_bytes, nil_list

REPO = Path(__file__).resolve().parents[2]


# -- point 1: map keys that collide in Python's hash -------------------------------------------


def test_colliding_tuple_keys_are_refused(codec: ModuleType) -> None:
    """10,000 2-tuples of ordinary ints with one Python hash: quadratic to put in a dict (about
    10 s on either codec before), now refused before the dict is built."""
    keys = colliding_pairs(10_000)
    with pytest.raises(ETFError, match="collide in Python's hash"):
        codec.decode(map_bytes(keys))
    with pytest.raises(ETFError, match="collide in Python's hash"):  # small, still refused
        codec.decode(map_bytes(keys[:200]))
    few = keys[:100]  # below the size worth checking: at most 100 probes per key
    assert list(codec.decode(map_bytes(few))) == few


def test_structured_but_honest_keys_are_accepted(codec: ModuleType) -> None:
    rng = random.Random(7)
    shapes: dict[str, list[Any]] = {
        "random ints": list({rng.getrandbits(61) - 2**60: 0 for _ in range(20_000)}),
        "multiples of 2**40": [k << 40 for k in range(20_000)],
        "k / 1024": [k / 1024 for k in range(1, 20_001)],
        "grid": [(i, j) for i in range(150) for j in range(150)],
        "-1 and -2 alike": [(i, -1) for i in range(5000)] + [(i, -2) for i in range(5000)],
        "atoms": [Atom(f"key_{i}") for i in range(20_000)],
        "binaries": [f"k{i}".encode() for i in range(20_000)],
    }
    for name, keys in shapes.items():
        decoded = codec.decode(map_bytes(keys))
        assert list(decoded) == keys, name


def test_both_codecs_replay_the_same_probes() -> None:
    """Ints hash to themselves, so keys with chosen hashes: equally spaced ones collide on the
    first probes of some table sizes and not others. C and pure must decide alike."""
    if etf.native is None:
        pytest.skip("the C extension is not built")
    outcomes = set()
    for shift in range(0, 56, 3):
        for n in (128, 300, 1000, 4000):
            for low in (0, 5):
                data = map_bytes([(i << shift) | low for i in range(n)])
                results = []
                for codec in (etf.pure, etf.native):
                    try:
                        codec.decode(data)
                        results.append("accepted")
                    except ETFError as err:
                        results.append(str(err))
                assert results[0] == results[1], (shift, n, low, results)
                outcomes.add(results[0] == "accepted")
    assert outcomes == {True, False}  # both outcomes occur: the comparison means something


def test_keys_equal_only_in_python_still_decode_in_order(codec: ModuleType) -> None:
    keys: list[Any] = []
    for i in range(300):
        keys += [i, float(i)]
    keys += [True, False]  # equal to 1 and 0
    decoded = codec.decode(map_bytes(keys))
    got = [k.term if type(k) is FrozenTerm else k for k in decoded]
    assert [(type(k), k) for k in got] == [(type(k), k) for k in keys]
    with pytest.raises(ETFError, match="duplicate key"):
        codec.decode(map_bytes([*keys, 5.0]))


# -- point 3: memory and time proportional to the input ----------------------------------------


def test_a_frame_of_empty_lists_is_refused(codec: ModuleType) -> None:
    """2 MB of [] would be 2 million list objects (about 150 MB): over 16x + 16 MiB."""
    with pytest.raises(ETFError, match="max_expansion"):
        codec.decode(nil_list(2_000_000))
    assert codec.decode(nil_list(100_000)) == [[]] * 100_000  # within the allowance
    with pytest.raises(ETFError, match="max_expansion"):
        codec.decode(nil_list(1000), limits=DecodeLimits(expansion_allowance=0))


def test_the_budget_is_per_frame_not_per_term(codec: ModuleType) -> None:
    k = 300_000
    term = nil_list(k)
    frame = b"p" + term + term
    assert len(codec.decode_from(frame, 1)[0]) == k  # each term alone fits the frame's budget
    with pytest.raises(ETFError, match="max_expansion"):
        codec.decode_dist_frame(frame)  # both do not


def test_compressed_terms_count_what_they_inflate_to(codec: ModuleType) -> None:
    packed = etf.pure.encode([0, 1] * 1_500_000, compressed=True)
    assert len(packed) < 100_000
    with pytest.raises(ETFError, match="max_expansion"):
        codec.decode(packed)
    roomy = DecodeLimits(expansion_allowance=64 * 1024 * 1024)
    assert len(codec.decode(packed, limits=roomy)) == 3_000_000


def test_list_tails_are_read_in_one_pass(codec: ModuleType) -> None:
    """5,000 LIST_EXTs each the tail of the last: once re-spliced at every level (quadratic) and
    refused past max_depth; now one list, read once."""
    assert codec.decode(list_of_tails(5000, 10)) == list(range(10)) * 5000
    improper = list_of_tails(3, 2)[:-1] + b"a\x07"
    assert codec.decode(improper) == ImproperList([0, 1] * 3, 7)
    charlist_tail = list_of_tails(2, 1)[:-1] + b"k\x00\x02hi"
    assert codec.decode(charlist_tail) == [0, 0, 104, 105]


# -- point 10: the C encoder on hostile or broken objects --------------------------------------

HOSTILE_OBJECTS = r"""
import sys
from dspex_cluster import etf
from dspex_cluster.etf import *

def blank(cls):
    return cls.__new__(cls)

def with_field(obj, **fields):
    for name, value in fields.items():
        object.__setattr__(obj, name, value)
    return obj

class Falsy:
    def __bool__(self):
        raise ZeroDivisionError("no truth")

selfish = blank(FrozenTerm)
object.__setattr__(selfish, "term", selfish)
kinds = (Pid, Reference, Port, ExportFun, BitString, Fun, ImproperList, FrozenTerm)
cases = [blank(c) for c in kinds]
cases += [selfish, [1, (selfish,)]]
cases += [with_field(BitString(b"a", 1), bits=b) for b in (1000, 2**70, 0, 9, "x", True)]
cases += [with_field(BitString(b"a", 1), data=d) for d in ("text", b"", bytearray(b"a"))]
cases += [with_field(Port(Atom("n@h"), 1, 2), v4=Falsy())]
cases += [with_field(Pid(Atom("n@h"), 1, 2, 3), node=5)]
cases += [with_field(Fun.__new__(Fun), raw="text"), with_field(ImproperList([1], 2), items=(1, 2))]
for case in cases:
    out = []
    for codec in (etf.pure, etf.native):
        try:
            out.append(("ok", codec.encode(case)))
        except Exception as exc:
            out.append((type(exc).__name__, str(exc)))
    print(repr(out[0] == out[1]), repr(out[0])[:200], repr(out[1])[:200])
"""


def test_hostile_objects_encode_the_same_on_both_codecs() -> None:
    """Term objects with fields never set, a FrozenTerm holding itself, bits out of range...: the
    C encoder once crashed, looped or wrote wrong bytes on these; now it fails exactly as the
    pure one does. Run in a child so that a crash is a failure, not the end of the test run."""
    if etf.native is None:
        pytest.skip("the C extension is not built")
    run = subprocess.run(
        [sys.executable, "-c", HOSTILE_OBJECTS],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert run.returncode == 0, f"the encoder crashed: {run.returncode} {run.stderr[-400:]}"
    lines = run.stdout.splitlines()
    assert len(lines) == 23
    for line in lines:
        assert line.startswith("True "), line
        assert "'ok'" not in line or "malformed" not in line


class _Mutator(int):
    """An int subclass whose comparison (which the encoder makes) changes a container."""

    victim: Any = None

    def __ge__(self, other: object) -> bool:
        victim = _Mutator.victim
        if isinstance(victim, list):
            victim.extend(range(1000, 1010))
        elif isinstance(victim, dict):
            for i in range(10):
                victim[f"new{i}"] = i
        return int.__ge__(self, other)  # type: ignore[operator]


def test_containers_changed_while_encoding_stay_consistent(codec: ModuleType) -> None:
    """A list or dict changed by code the encoder runs is encoded as it was when reached: the
    count written always matches what follows."""
    out = {}
    for name, make in (
        ("list", lambda: [1, _Mutator(300), 2, 3]),
        ("dict", lambda: {"a": 1, "b": _Mutator(300), "c": 3}),
        ("improper", lambda: ImproperList([1, _Mutator(300), 2], Atom("t"))),
    ):
        victim = make()
        _Mutator.victim = victim.items if isinstance(victim, ImproperList) else victim
        data = codec.encode(victim)
        out[name] = data
        back = etf.pure.decode(data)
        if name == "list":
            assert back == [1, 300, 2, 3]
        elif name == "dict":
            assert back == {b"a": 1, b"b": 300, b"c": 3}
        else:
            assert back == ImproperList([1, 300, 2], Atom("t"))
    _Mutator.victim = None


# -- point 11 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [2**63, 2**64, -(2**63) - 1, 2**70])
def test_decode_from_far_offsets_are_etf_errors(codec: ModuleType, offset: int) -> None:
    with pytest.raises(ETFError, match="outside the input"):
        codec.decode_from(b"\x83a\x01", offset)


def test_all_object_kinds_still_decode_under_the_budget(codec: ModuleType) -> None:
    term = (
        Pid(Atom("n@h"), 1, 2, 3),
        Reference(Atom("n@h"), 1, (1, 2, 3)),
        Port(Atom("n@h"), 5, 1),
        Port(Atom("n@h"), 2**40, 1, True),
        ExportFun(Atom("m"), Atom("f"), 2),
        BitString(b"ab", 3),
        ImproperList([1, 2], 3),
        [2**70, -300, 1.5, b"xy", b"", {1: 2}],
    )
    data = etf.pure.encode(term)
    assert codec.decode(data) == term
    tiny = DecodeLimits(max_expansion=1, expansion_allowance=0)
    with pytest.raises(ETFError, match="max_expansion"):
        codec.decode(data, limits=tiny)
    assert struct.unpack(">I", etf.pure.encode([1] * 70000)[2:6])[0] == 70000
