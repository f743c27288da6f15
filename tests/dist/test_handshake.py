"""The handshake state machines fed bytes: both directions, cookies, statuses, hostile input."""

from __future__ import annotations

import hashlib
import struct

import pytest

from dspex_cluster.dist import flags as F
from dspex_cluster.dist.handshake import (
    AcceptorHandshake,
    AliveAsked,
    Established,
    HandshakeError,
    InitiatorHandshake,
    PeerNamed,
    gen_digest,
)

A, B = "a@127.0.0.1", "b@127.0.0.1"
OTP25_FLAGS = 0xD07DF7FBD  # what OTP 25.2.3 sends in N (checklist §2)


def test_digest_is_md5_of_cookie_and_decimal_challenge() -> None:
    assert gen_digest(4294967295, "secret") == hashlib.md5(b"secret4294967295").digest()
    assert gen_digest(-1, "x") == gen_digest(0xFFFFFFFF, "x")


def pair(cookie_a: str = "c", cookie_b: str = "c") -> tuple[InitiatorHandshake, AcceptorHandshake]:
    ini = InitiatorHandshake(A, F.node_flags(True), 11, cookie_a, peer_name=B)
    acc = AcceptorHandshake(B, F.node_flags(False), 22, cookie_b)
    return ini, acc


def run(ini: InitiatorHandshake, acc: AcceptorHandshake, status: str = "ok"):
    ev = acc.receive_data(ini.data_to_send())
    assert ev == [PeerNamed(A, F.node_flags(True), 11)]
    acc.send_status(status)
    ini_events = ini.receive_data(acc.data_to_send())  # status + challenge
    acc_events = acc.receive_data(ini.data_to_send())  # reply
    ini_events += ini.receive_data(acc.data_to_send())  # ack
    return ini_events, acc_events


def test_full_handshake_both_sides_established() -> None:
    ini, acc = pair()
    ini_ev, acc_ev = run(ini, acc)
    (done_i,) = ini_ev
    (done_a,) = acc_ev
    assert isinstance(done_i, Established) and isinstance(done_a, Established)
    assert done_i.peer_name == B and done_i.peer_creation == 22
    assert done_a.peer_name == A and done_a.peer_creation == 11
    # negotiated: AND of both, PUBLISHED only on one side so absent
    assert done_i.flags == done_a.flags
    assert not done_i.flags & F.PUBLISHED
    assert done_i.flags & F.SPAWN and done_i.flags & F.ALIAS


def test_send_name_layout() -> None:
    ini = InitiatorHandshake(A, 0x1234, 7, "c", peer_name=B)
    raw = ini.data_to_send()
    head = struct.pack(">HcQIH", 1 + 8 + 4 + 2 + len(A), b"N", 0x1234, 7, len(A))
    assert raw == head + A.encode()


def test_wrong_cookie_is_refused_by_the_acceptor_without_leaking_it() -> None:
    ini, acc = pair("right", "wrong-cookie-value")
    acc.receive_data(ini.data_to_send())
    acc.send_status("ok")
    ini.receive_data(acc.data_to_send())
    with pytest.raises(HandshakeError, match="cookie mismatch") as err:
        acc.receive_data(ini.data_to_send())
    assert "wrong-cookie-value" not in str(err.value) and "right" not in str(err.value)
    assert "wrong-cookie-value" not in repr(acc)


def test_initiator_rejects_a_bad_ack() -> None:
    ini, acc = pair()
    acc.receive_data(ini.data_to_send())
    acc.send_status("ok")
    ini.receive_data(acc.data_to_send())
    acc.receive_data(ini.data_to_send())
    ack = bytearray(acc.data_to_send())
    ack[-1] ^= 1
    with pytest.raises(HandshakeError, match="cookie"):
        ini.receive_data(bytes(ack))


@pytest.mark.parametrize("status", ["nok", "not_allowed", "named:"])
def test_initiator_stops_on_refusal(status: str) -> None:
    ini, acc = pair()
    acc.receive_data(ini.data_to_send())
    acc.send_status(status if status != "named:" else "nok")
    raw = acc.data_to_send() if status != "named:" else b"\x00\x06snamed:"
    with pytest.raises(HandshakeError, match="refused"):
        ini.receive_data(raw)


def test_alive_answered_true_continues() -> None:
    ini, acc = pair()
    acc.receive_data(ini.data_to_send())
    acc.send_status("alive")
    (asked,) = ini.receive_data(acc.data_to_send())
    assert isinstance(asked, AliveAsked) and asked.peer_name == acc.name
    assert ini.answer_alive(True) == []
    assert ini.data_to_send() == b"\x00\x05strue"
    assert acc.receive_data(b"\x00\x05strue") == []  # -> challenge
    ini.receive_data(acc.data_to_send())
    (done,) = acc.receive_data(ini.data_to_send())
    assert isinstance(done, Established)


def test_alive_answered_false_ends_both_sides() -> None:
    # net_kernel's is_pending said no: a connection of ours came up while this one was set up
    ini, acc = pair()
    acc.receive_data(ini.data_to_send())
    acc.send_status("alive")
    ini.receive_data(acc.data_to_send())
    with pytest.raises(HandshakeError, match="already connected"):
        ini.answer_alive(False)
    assert ini.data_to_send() == b"\x00\x06sfalse"
    with pytest.raises(HandshakeError, match="gave up"):
        acc.receive_data(b"\x00\x06sfalse")


def test_answer_alive_only_when_asked() -> None:
    ini, _acc = pair()
    with pytest.raises(HandshakeError, match="answer_alive in state"):
        ini.answer_alive(True)


def test_ok_simultaneous_continues() -> None:
    ini, acc = pair()
    ini_ev, acc_ev = run(ini, acc, "ok_simultaneous")
    assert isinstance(ini_ev[0], Established) and ini.status == "ok_simultaneous"


def test_byte_at_a_time_and_leftover() -> None:
    ini, acc = pair()
    raw = ini.data_to_send()
    events = []
    for i in range(len(raw)):
        events += acc.receive_data(raw[i : i + 1])
    assert len(events) == 1
    acc.send_status("ok")
    for b in acc.data_to_send():
        assert ini.receive_data(bytes([b])) == []
    acc.receive_data(ini.data_to_send())
    (done,) = ini.receive_data(acc.data_to_send() + b"\x00\x00\x00\x00")
    assert done.leftover == b"\x00\x00\x00\x00"


def test_initiator_checks_the_name_in_the_challenge() -> None:
    ini = InitiatorHandshake(A, F.node_flags(True), 1, "c", peer_name="other@127.0.0.1")
    acc = AcceptorHandshake(B, F.node_flags(True), 2, "c")
    acc.receive_data(ini.data_to_send())
    acc.send_status("ok")
    with pytest.raises(HandshakeError, match="answered"):
        ini.receive_data(acc.data_to_send())


def test_acceptor_refuses_a_peer_without_mandatory_flags() -> None:
    ini = InitiatorHandshake(A, F.UTF8_ATOMS, 1, "c", peer_name=B)
    acc = AcceptorHandshake(B, F.node_flags(True), 2, "c")
    acc.receive_data(ini.data_to_send())
    acc.send_status("ok")
    assert acc.data_to_send() == b"\x00\x0csnot_allowed"


def test_otp25_flags_and_digest_shorthand_are_acceptable() -> None:
    assert F.missing_required(OTP25_FLAGS) == 0
    assert F.missing_required(F.MANDATORY_25_DIGEST) == 0
    assert F.missing_required(F.MANDATORY_25 & ~F.MAP_TAG) == F.MAP_TAG


def test_old_n_name_with_complement() -> None:
    acc = AcceptorHandshake(B, F.node_flags(True), 2, "c")
    low = F.node_flags(True) & 0xFFFFFFFF
    name = struct.pack(">cHI", b"n", 5, low) + A.encode()
    (named,) = acc.receive_data(struct.pack(">H", len(name)) + name)
    assert named.name == A
    acc.send_status("ok")
    challenge_msg = acc.data_to_send()[2 + 3 + 2 :]  # skip "sok" and the length
    assert challenge_msg[:1] == b"N"
    (challenge,) = struct.unpack_from(">I", challenge_msg, 9)
    comp = struct.pack(">cII", b"c", F.node_flags(True) >> 32, 9)
    acc.receive_data(struct.pack(">H", len(comp)) + comp)
    reply = b"r" + struct.pack(">I", 5) + gen_digest(challenge, "c")
    (done,) = acc.receive_data(struct.pack(">H", len(reply)) + reply)
    assert done.peer_creation == 9 and done.peer_flags == F.node_flags(True)


@pytest.mark.parametrize(
    "garbage",
    [b"\x00\x00", b"\xff\xff" + b"x" * 10, b"\x00\x03zzz", b"\x00\x02N\x00"],
)
def test_garbage_names_fail_cleanly(garbage: bytes) -> None:
    acc = AcceptorHandshake(B, F.node_flags(True), 2, "c")
    with pytest.raises(HandshakeError):
        acc.receive_data(garbage)


@pytest.mark.parametrize(
    "name",
    [b"a" * 4000 + b"@127.0.0.1", b"bad\x00name@127.0.0.1", b"two@at@host", b"@host", b"name@",
     b"sp ace@host", "\u00e9".encode() * 300 + b"@h"],
)  # fmt: skip
def test_acceptor_refuses_names_otp_would_not_accept(name: bytes) -> None:
    """No status (no `sok`) for a name that is not a valid node name atom."""
    acceptor = AcceptorHandshake("b@127.0.0.1", F.node_flags(True), 2, "c")
    msg = b"N" + struct.pack(">QIH", F.node_flags(True), 1, len(name)) + name
    with pytest.raises(HandshakeError, match="invalid peer name"):
        acceptor.receive_data(struct.pack(">H", len(msg)) + msg)
    assert acceptor.data_to_send() == b""
