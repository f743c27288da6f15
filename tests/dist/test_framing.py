"""Framing fed bytes: ticks, batches, partial frames, limits, bad frames."""

from __future__ import annotations

import struct

from dspex_cluster.dist import control as C
from dspex_cluster.dist import flags as F
from dspex_cluster.dist.framing import FrameReader, encode_frame
from dspex_cluster.etf import NO_MESSAGE, Atom, Pid, encode

P = Pid(Atom("a@h"), 1, 0, 3)


def test_frame_layout_is_pass_through() -> None:
    frame = encode_frame(C.send(P), (Atom("hi"), 1))
    body = b"p" + encode((2, Atom(""), P)) + encode((Atom("hi"), 1))
    assert frame == struct.pack(">I", len(body)) + body


def test_many_frames_and_ticks_in_one_chunk_and_split_anywhere() -> None:
    stream = b"".join(
        [encode_frame(C.send_sender(P, P), i) for i in range(50)]
        + [b"\x00\x00\x00\x00"] * 3
        + [encode_frame(C.link(P, P))]
    )
    reader = FrameReader()
    frames, ticks = reader.feed(stream)
    assert ticks == 3 and len(frames) == 51
    assert [m for _, m in frames[:50]] == list(range(50))
    assert frames[50] == ((1, P, P), NO_MESSAGE)
    for cut in (1, 3, 4, 5, 17, len(stream) - 1):
        reader = FrameReader()
        a, ta = reader.feed(stream[:cut])
        b, tb = reader.feed(stream[cut:])
        assert len(a) + len(b) == 51 and ta + tb == 3 and reader.buffered == 0


def test_oversized_frame_is_an_error_before_the_body_arrives() -> None:
    reader = FrameReader(max_frame=100)
    frames, _ = reader.feed(struct.pack(">I", 101))
    assert frames == [] and "exceeds" in (reader.error or "")


def test_good_frames_before_a_bad_one_are_kept() -> None:
    reader = FrameReader()
    good = encode_frame(C.send(P), 1)
    bad = struct.pack(">I", 3) + b"p\x83\xff"
    frames, _ = reader.feed(good + bad + good)
    assert len(frames) == 1 and reader.error
    assert reader.feed(good) == ([], 0)  # nothing after an error is trusted


def test_non_tuple_control_and_stray_bytes_are_errors() -> None:
    for body in (b"p" + encode([1]), b"p" + encode((2, Atom(""), P)) + encode(1) + b"x"):
        reader = FrameReader()
        reader.feed(struct.pack(">I", len(body)) + body)
        assert reader.error


def test_flag_sets() -> None:
    assert F.node_flags(True) & F.PUBLISHED == 0
    assert F.node_flags(False) & F.PUBLISHED
    ours = F.node_flags(True)
    for flag in (F.SPAWN, F.ALIAS, F.V4_NC, F.UNLINK_ID, F.MANDATORY_25_DIGEST, F.HANDSHAKE_23):
        assert ours & flag
    for flag in (F.ATOM_CACHE, F.DIST_HDR_ATOM_CACHE, F.FRAGMENTS, F.NAME_ME):
        assert not ours & flag
    assert ours & F.MANDATORY_26 == F.MANDATORY_26


def test_control_encoding_cache_gives_identical_frames() -> None:
    cache: dict[tuple, bytes] = {}
    plain = [encode_frame(C.send_sender(P, P), i) for i in range(3)]
    cached = [encode_frame(C.send_sender(P, P), i, cache) for i in range(3)]
    assert plain == cached and len(cache) == 1
    spawn = C.spawn_request(1, P, P, (Atom("m"), Atom("f"), 0), [Atom("monitor")])
    assert encode_frame(spawn, [], cache) == encode_frame(spawn, [])  # unhashable: not cached
    assert len(cache) == 1
