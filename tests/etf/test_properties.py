"""Round-trip properties, hostile input, limits and error reporting, for both implementations."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
import zlib
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dspex_cluster import etf
from dspex_cluster.etf import (
    NO_MESSAGE,
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
    same_term,
)

PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
FUZZ = settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
atoms = text.filter(lambda s: s not in {"true", "false", "nil"}).map(Atom)
nodes = st.sampled_from([Atom("py1@127.0.0.1"), Atom("nonode@nohost"), Atom("bé@host")])
u32 = st.integers(0, 2**32 - 1)
integers = st.one_of(
    st.integers(-300, 300),
    st.integers(-(2**33), 2**33),
    st.integers(-(2**2100), 2**2100),
    st.sampled_from([255, 256, 2**31 - 1, -(2**31), 2**31, -(2**31) - 1, 2**2040, 2**2040 - 1]),
)
bitstrings = st.builds(
    lambda data, bits: BitString(data[:-1] + bytes([data[-1] & (0xFF << (8 - bits)) & 0xFF]), bits),
    st.binary(min_size=1, max_size=6),
    st.integers(1, 8),
)
# a local fun made by OTP 25:
# term_to_binary((fun(X) -> fun() -> X end end)(7), [{minor_version, 2}])
FUN_SAMPLE = etf.pure.decode(
    bytes.fromhex(
        "83700000009200065361AA461590D1BDF1EB62D1A6EB080000002B00000001770865726C5F6576616C612B62"
        "00329B0D58770D6E6F6E6F6465406E6F686F7374000000090000000000000000680661016C00000001680277"
        "015861076A77046E6F6E6577046E6F6E6574000000006C0000000168057706636C6175736561016A6A6C0000"
        "00016803770376617261017701586A6A"
    )
)

leaves = st.one_of(
    integers,
    st.floats(allow_nan=False, allow_infinity=False),
    atoms,
    st.binary(max_size=20),
    st.sampled_from([True, False, None, Atom("undefined")]),
    bitstrings,
    st.builds(Pid, nodes, u32, u32, u32),
    st.builds(Reference, nodes, u32, st.lists(u32, min_size=3, max_size=5).map(tuple)),
    st.builds(Port, nodes, st.integers(0, 2**64 - 1), u32, st.booleans()),
    st.builds(ExportFun, atoms, atoms, st.integers(0, 255)),
    st.just(FUN_SAMPLE),
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    hashable_keys = st.one_of(integers, atoms, st.binary(max_size=5), st.tuples(atoms, integers))
    wrapped_keys = st.one_of(
        st.lists(children, max_size=3), st.dictionaries(atoms, children, max_size=2)
    ).map(FrozenTerm)
    tails = st.one_of(atoms, integers, st.binary(max_size=4), st.tuples(children))
    return st.one_of(
        st.lists(children, max_size=6),
        st.lists(st.integers(0, 255), min_size=1, max_size=8),  # charlists
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(st.one_of(hashable_keys, wrapped_keys), children, max_size=5),
        st.builds(ImproperList, st.lists(children, min_size=1, max_size=3), tails),
    )


terms = st.recursive(leaves, _containers, max_leaves=15)


@PROPERTY
@given(terms)
def test_decode_inverts_encode(codec: ModuleType, term: Any) -> None:
    data = codec.encode(term)
    back = codec.decode(data)
    assert same_term(back, term)
    assert codec.encode(back) == data  # and the bytes are stable
    assert codec.decode(codec.encode(term, compressed=True)) == back


@PROPERTY
@given(terms)
def test_both_implementations_agree(term: Any) -> None:
    if etf.native is None:
        pytest.skip("the C extension is not built")
    data = etf.pure.encode(term)
    assert etf.native.encode(term) == data
    assert etf.native.encode(term, compressed=6) == etf.pure.encode(term, compressed=6)
    assert same_term(etf.native.decode(data), etf.pure.decode(data))


def _decode_or_etf_error(codec: ModuleType, data: bytes) -> Any:
    try:
        return codec.decode(data)
    except ETFError:
        return None


@FUZZ
@given(st.binary(max_size=64))
def test_random_bytes_only_raise_etf_error(codec: ModuleType, data: bytes) -> None:
    _decode_or_etf_error(codec, b"\x83" + data)
    _decode_or_etf_error(codec, data)


@FUZZ
@given(terms, st.data())
def test_mutated_encodings_only_raise_etf_error(codec: ModuleType, term: Any, data: Any) -> None:
    good = bytearray(codec.encode(term))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(1, len(good) - 1)) if len(good) > 1 else 0
        good[i] = data.draw(st.integers(0, 255))
    _decode_or_etf_error(codec, bytes(good))


@PROPERTY
@given(terms)
def test_every_truncation_is_an_etf_error(codec: ModuleType, term: Any) -> None:
    data = codec.encode(term)
    step = max(1, len(data) // 64)  # every cut of small terms, 64 spread cuts of big ones
    for end in range(0, len(data), step):
        with pytest.raises(ETFError):
            codec.decode(data[:end])


@PROPERTY
@given(terms, terms)
def test_dist_frames(codec: ModuleType, control: Any, message: Any) -> None:
    ctl, msg = codec.encode(control), codec.encode(message)
    got_ctl, got_msg = codec.decode_dist_frame(b"\x70" + ctl + msg)
    assert same_term(got_ctl, control) and same_term(got_msg, message)
    got_ctl, got_msg = codec.decode_dist_frame(memoryview(b"\x70" + ctl))
    assert same_term(got_ctl, control) and got_msg is NO_MESSAGE
    with pytest.raises(ETFError):
        codec.decode_dist_frame(b"\x70" + ctl + msg + b"\x00")
    with pytest.raises(ETFError):
        codec.decode_dist_frame(ctl + msg)
    # decode_from walks the same frame term by term
    frame = bytearray(b"\x70" + ctl + msg)
    first, end = codec.decode_from(frame, 1)
    second, end2 = codec.decode_from(frame, end)
    assert same_term((first, second, end2), (control, message, len(frame)))


# ---- hand-made hostile input -----------------------------------------------------------------

U32_MAX = b"\xff\xff\xff\xff"

HOSTILE = {
    "empty": b"",
    "version_only": b"\x83",
    "bad_version": b"\x84\x61\x01",
    "list_4g": b"\x83\x6c" + U32_MAX + b"\x6a",
    "tuple_4g": b"\x83\x69" + U32_MAX,
    "map_4g": b"\x83\x74" + U32_MAX + b"\x61\x01\x61\x02",
    "binary_4g": b"\x83\x6d" + U32_MAX + b"abc",
    "bits_4g": b"\x83\x4d" + U32_MAX + b"\x03abc",
    "bits_zero": b"\x83\x4d\x00\x00\x00\x01\x00\x80",
    "bits_nine": b"\x83\x4d\x00\x00\x00\x01\x09\x80",
    "bits_empty": b"\x83\x4d\x00\x00\x00\x00\x03",
    "string_64k": b"\x83\x6b\xff\xffabc",
    "big_4g": b"\x83\x6f" + U32_MAX + b"\x00\x01",
    "big_bad_sign": b"\x83\x6e\x01\x02\x01",
    "atom_64k": b"\x83\x76\xff\xffab",
    "atom_bad_utf8": b"\x83\x77\x02\xc3\x28",
    "atom_256_chars": b"\x83\x76\x01\x00" + b"a" * 256,
    "ref_0_words": b"\x83\x5a\x00\x00\x77\x01a\x00\x00\x00\x00",
    "ref_6_words": b"\x83\x5a\x00\x06\x77\x01a" + b"\x00" * 28,
    "pid_bad_node": b"\x83\x58\x61\x01" + b"\x00" * 12,
    "fun_bad_size": b"\x83\x70\x00\x00\x00\x05\x00",
    "fun_huge_free": b"\x83\x70\x00\x00\x00\x30" + b"\x00" * 21 + U32_MAX + b"\x00" * 20,
    "export_bad_arity": b"\x83\x71\x77\x01m\x77\x01f\x62\x00\x00\x00\x01",
    "float_nan": b"\x83\x46\x7f\xf8\x00\x00\x00\x00\x00\x00",
    "float_inf": b"\x83\x46\x7f\xf0\x00\x00\x00\x00\x00\x00",
    "old_float_garbage": b"\x83\x63" + b"x" * 31,
    "local_ext": b"\x83\x79\x00\x00\x00\x00\x61\x01",
    "unknown_tag": b"\x83\xc8",
    "old_pid": b"\x83\x67\x77\x01a\x00\x00\x00\x01\x00\x00\x00\x00\x00",
    "atom_cache_ref": b"\x83\x52\x00",
    "dist_header": b"\x83\x44\x00",
    "duplicate_map_key": b"\x83\x74\x00\x00\x00\x02\x61\x01\x61\x02\x61\x01\x61\x03",
    "trailing": b"\x83\x61\x01\x00",
    "compressed_short": b"\x83\x50\x00\x00",
    "compressed_not_zlib": b"\x83\x50\x00\x00\x00\x02\x00\x00\x00",
    "compressed_size_lies_big": b"\x83\x50\x00\x00\x00\x09" + zlib.compress(b"\x61\x01"),
    "compressed_size_lies_small": b"\x83\x50\x00\x00\x00\x01" + zlib.compress(b"\x61\x01"),
    "compressed_4g": b"\x83\x50" + U32_MAX + zlib.compress(b"\x61\x01"),
    "compressed_trailing_inside": b"\x83\x50\x00\x00\x00\x03" + zlib.compress(b"\x61\x01\x00"),
    "compressed_nested": b"\x83\x50\x00\x00\x00\x03" + zlib.compress(b"\x83\x61\x01"),
    "compressed_truncated_stream": b"\x83\x50\x00\x00\x00\x02" + zlib.compress(b"\x61\x01")[:-3],
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_input_is_an_etf_error(codec: ModuleType, name: str) -> None:
    with pytest.raises(ETFError):
        codec.decode(HOSTILE[name])


@pytest.mark.parametrize(
    "data, words",
    [
        (b"\x83\x79\x00", ["tag 121", "LOCAL_EXT", "offset 1"]),
        (b"\x83\x68\x01\xc8", ["unknown tag 200", "offset 3"]),
        (b"\x83\x6d\x00\x00\x00\x09ab", ["BINARY_EXT", "offset 6"]),
    ],
)
def test_errors_name_the_tag_and_offset(codec: ModuleType, data: bytes, words: list[str]) -> None:
    with pytest.raises(ETFError) as caught:
        codec.decode(data)
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize("opener, closer", [(b"\x68\x01", b"\x6a"), (b"\x6c\x00\x00\x00\x01", b"")])
def test_depth_bomb(codec: ModuleType, opener: bytes, closer: bytes) -> None:
    # 200,000 nested 1-tuples (or 1-element lists whose tail is missing): rejected, not a crash
    bomb = b"\x83" + opener * 200_000 + b"\x6a" + closer * 200_000
    with pytest.raises(ETFError, match="max_depth"):
        codec.decode(bomb)


def test_depth_limit_is_exact(codec: ModuleType) -> None:
    def nested(levels: int) -> bytes:
        return b"\x83" + b"\x68\x01" * levels + b"\x6a"

    assert codec.decode(nested(1000)) is not None  # the default max_depth is 1000
    with pytest.raises(ETFError):
        codec.decode(nested(1001))
    shallow = DecodeLimits(max_depth=3)
    assert codec.decode(nested(3), limits=shallow) == ((([],),),)
    with pytest.raises(ETFError):
        codec.decode(nested(4), limits=shallow)
    with pytest.raises(ETFError):
        codec.decode(b"\x83" + b"\x74\x00\x00\x00\x01\x61\x01" * 4 + b"\x6a", limits=shallow)


def test_element_limit(codec: ModuleType) -> None:
    small = DecodeLimits(max_elements=10)
    assert codec.decode(codec.encode(list(range(300, 310))), limits=small) == list(range(300, 310))
    for too_many in (list(range(300, 311)), [[1, 2, 3]] * 4, {i: i for i in range(6)}, [65] * 11):
        with pytest.raises(ETFError, match="max_elements"):
            codec.decode(codec.encode(too_many), limits=small)


def test_zip_bomb(codec: ModuleType) -> None:
    inner = b"\x6d" + struct.pack(">I", 80_000_000) + bytes(80_000_000)
    bomb = b"\x83\x50" + struct.pack(">I", len(inner)) + zlib.compress(inner, 9)
    assert len(bomb) < 200_000
    with pytest.raises(ETFError, match="max_uncompressed_size"):
        codec.decode(bomb)
    # within the limit it decodes; a lower limit refuses it before inflating
    fine = (
        b"\x83\x50"
        + struct.pack(">I", 5 + 1000)
        + zlib.compress(b"\x6d\x00\x00\x03\xe8" + bytes(1000))
    )
    assert codec.decode(fine) == bytes(1000)
    with pytest.raises(ETFError):
        codec.decode(fine, limits=DecodeLimits(max_uncompressed_size=1000))


def test_atom_limit(codec: ModuleType) -> None:
    data = codec.encode(Atom("abcdef"))
    with pytest.raises(ETFError):
        codec.decode(data, limits=DecodeLimits(max_atom_chars=5))


def test_old_tags_decode(codec: ModuleType) -> None:
    assert codec.decode(b"\x83\x63" + b"1.50000000000000000000e+00".ljust(31, b"\x00")) == 1.5
    assert codec.decode(b"\x83\x73\x02\xf1a") == Atom("ña")  # SMALL_ATOM_EXT, latin-1
    assert codec.decode(b"\x83\x64\x00\x04true") is True  # ATOM_EXT
    assert codec.encode(codec.decode(b"\x83\x64\x00\x02ok")) == b"\x83\x77\x02ok"


def test_non_canonical_but_valid_lists(codec: ModuleType) -> None:
    # [1 | [2]] written as a cons whose tail is a list: it is the list [1, 2]
    assert codec.decode(b"\x83\x6c\x00\x00\x00\x01\x61\x01\x6b\x00\x01\x02") == [1, 2]
    assert codec.decode(b"\x83\x6c\x00\x00\x00\x00\x61\x07") == 7


def test_v4_port_keeps_its_tag(codec: ModuleType) -> None:
    v4 = b"\x83\x78\x77\x01n" + (3).to_bytes(8, "big") + b"\x00\x00\x00\x01"
    port = codec.decode(v4)
    assert port == Port(Atom("n"), 3, 1) and port.v4
    assert codec.encode(port) == v4
    assert codec.encode(Port(Atom("n"), 3, 1))[1] == 89  # NEW_PORT_EXT when made in Python


@pytest.mark.parametrize(
    "value",
    [
        math.inf,
        math.nan,
        object(),
        {1, 2},
        Atom("a" * 256),
        "\ud800",
        Atom("\ud800"),
        Pid(Atom("n"), 2**32, 0, 0),
        Pid("n", -1, 0, 0),
        Reference(Atom("n"), 0, ()),
        Reference(Atom("n"), 0, (1, 2, 3, 4, 5, 6)),
        Port(Atom("n"), 2**64, 0),
        ExportFun(Atom("m"), Atom("f"), 256),
    ],
    ids=repr,
)
def test_unencodable_values(codec: ModuleType, value: Any) -> None:
    with pytest.raises(ETFError):
        codec.encode(value)


def test_deep_and_cyclic_values_do_not_crash_the_encoder(codec: ModuleType) -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ETFError):
        codec.encode(deep)
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    with pytest.raises(ETFError):
        codec.encode(cyclic)


def test_inputs_of_every_buffer_type(codec: ModuleType) -> None:
    data = codec.encode((Atom("ping"), 1, b"payload"))
    for buf in (data, bytearray(data), memoryview(data)):
        assert codec.decode(buf) == (Atom("ping"), 1, b"payload")
    with pytest.raises(ETFError):
        codec.decode_from(data, len(data) + 1)
    with pytest.raises(TypeError):
        codec.decode("not bytes")


def test_compression(codec: ModuleType) -> None:
    term = [Atom("hello")] * 500
    packed = codec.encode(term, compressed=True)
    assert packed[:2] == b"\x83\x50" and codec.decode(packed) == term
    assert codec.encode(term, compressed=0) == codec.encode(term)
    assert codec.encode((1, 2), compressed=9) == codec.encode((1, 2))  # not smaller: plain
    with pytest.raises(ValueError):
        codec.encode(term, compressed=10)


def test_types_are_immutable_hashable_and_readable() -> None:
    pid = Pid(Atom("py1@127.0.0.1"), 1, 0, 3)
    assert repr(pid) == "#Pid<py1@127.0.0.1.1.0>"
    assert repr(Atom("ok")) == "Atom('ok')" and Atom("ok") == "ok"
    assert len({pid, Pid(Atom("py1@127.0.0.1"), 1, 0, 3)}) == 1
    assert hash(ImproperList([1], 2)) == hash(ImproperList([1], 2))
    assert FrozenTerm([1, 2]) == FrozenTerm([1, 2]) != FrozenTerm((1, 2))
    assert FrozenTerm(1) != FrozenTerm(1.0) != FrozenTerm(True)
    with pytest.raises(AttributeError):
        pid.id = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ImproperList([1], 2).tail = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        ImproperList([], 2)
    with pytest.raises(ValueError):
        BitString(b"\x00", 0)


DEEP_IN_A_THREAD = """
import sys, threading
from dspex_cluster import etf
codec = getattr(etf, sys.argv[1])
limits = etf.DecodeLimits(max_depth=2000)  # the ceiling
threading.stack_size(1024 * 1024)
done = []
def run():
    for opener, closer in ((b"\\x68\\x01", b""), (b"\\x6c\\x00\\x00\\x00\\x01", b"\\x6a"),
                           (b"\\x74\\x00\\x00\\x00\\x01\\x61\\x01", b"")):
        codec.decode(b"\\x83" + opener * 2000 + b"\\x6a" + closer * 2000, limits=limits)
    done.append(True)
thread = threading.Thread(target=run)
thread.start()
thread.join()
print(done == [True])
"""


def test_deepest_allowed_term_fits_a_1mb_thread_stack(codec: ModuleType) -> None:
    name = "pure" if codec is etf.pure else "native"
    run = subprocess.run(
        [sys.executable, "-c", DEEP_IN_A_THREAD, name], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0 and run.stdout.strip() == "True", run.stderr[-500:]


def test_hash_flooding_map_keys_are_bounded(codec: ModuleType) -> None:
    """Ints >= 2**61 - 1 can share one Python hash: a map of thousands of them is refused
    instead of taking quadratic time; other keys are not affected."""
    modulus = 2**61 - 1
    flood = etf.pure.encode({1 + i * modulus: i for i in range(1, 5001)})
    with pytest.raises(ETFError, match="max_huge_int_keys"):
        codec.decode(flood)
    in_tuples = etf.pure.encode({(i * modulus,): i for i in range(1, 5001)})
    with pytest.raises(ETFError, match="max_huge_int_keys"):
        codec.decode(in_tuples)
    fine = {1 + i * modulus: i for i in range(1, 101)}
    assert codec.decode(etf.pure.encode(fine)) == fine
    assert codec.decode(etf.pure.encode(fine), limits=DecodeLimits(max_huge_int_keys=100)) == fine
    with pytest.raises(ETFError):
        codec.decode(etf.pure.encode(fine), limits=DecodeLimits(max_huge_int_keys=99))


def test_many_colliding_int_and_float_keys_decode_in_linear_time(codec: ModuleType) -> None:
    # 1 and 1.0 are distinct Erlang keys but equal in Python: each pair takes the slow path
    pairs = {}
    for i in range(20_000):
        pairs[i] = A_INT
        pairs[FrozenTerm(float(i))] = A_FLOAT
    data = etf.pure.encode(pairs)
    back = codec.decode(data)
    assert len(back) == 40_000 and codec.encode(back) == data
    # a key repeated after the collision path started is still a duplicate
    one, one_f = b"\x61\x01", b"\x46" + struct.pack(">d", 1.0)
    for keys in ([one, one_f, one_f], [one, one_f, one], [one_f, one, one_f]):
        body = b"".join(k + b"\x6a" for k in keys)
        with pytest.raises(ETFError, match="duplicate"):
            codec.decode(b"\x83\x74" + struct.pack(">I", len(keys)) + body)


A_INT = Atom("int")
A_FLOAT = Atom("float")


def _outcome(codec: ModuleType, data: bytes) -> tuple[str, Any]:
    try:
        return "term", codec.decode(data)
    except ETFError as err:
        return "error", str(err)


@FUZZ
@given(terms, st.data())
def test_implementations_agree_on_damaged_input(term: Any, data: Any) -> None:
    """Same term or the very same error message, whatever the damage."""
    if etf.native is None:
        pytest.skip("the C extension is not built")
    damaged = bytearray(etf.pure.encode(term))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(damaged) - 1))
        if data.draw(st.booleans()):
            damaged[at] = data.draw(st.integers(0, 255))
        else:
            del damaged[at:]
            damaged += data.draw(st.binary(max_size=3))
        if not damaged:
            break
    kind, pure_result = _outcome(etf.pure, bytes(damaged))
    native_kind, native_result = _outcome(etf.native, bytes(damaged))
    assert kind == native_kind
    assert same_term(pure_result, native_result) if kind == "term" else pure_result == native_result


@pytest.mark.parametrize("levels", [999, 1000, 1001])
@pytest.mark.parametrize("leaf", [(), [], 5, [1, 2], [300], {}, {1: 2}])
def test_encoders_agree_at_the_depth_limit(levels: int, leaf: Any) -> None:
    if etf.native is None:
        pytest.skip("the C extension is not built")
    term = leaf
    for _ in range(levels):
        term = (term,)
    outcomes = []
    for codec in (etf.pure, etf.native):
        try:
            outcomes.append(codec.encode(term))
        except ETFError:
            outcomes.append(None)
    assert outcomes[0] == outcomes[1]
    # the encoders refuse a term placed deeper than 1000 levels; a charlist has no terms inside
    has_children = leaf in ([300], {1: 2})
    deepest = levels + 1 if has_children else levels
    assert (outcomes[0] is None) == (deepest > 1000)
