"""EPMD requests and replies, checked against the byte layouts of the protocol (checklist §1)."""

from __future__ import annotations

import pytest

from dspex_cluster.dist import epmd


def test_alive2_request_layout() -> None:
    req = epmd.alive2_request(0x8155, "dfpy3", hidden=True)
    body = (
        bytes([120]) + b"\x81\x55" + bytes([72, 0]) + b"\x00\x06\x00\x06" + b"\x00\x05dfpy3\x00\x00"
    )
    assert req == len(body).to_bytes(2, "big") + body


def test_alive2_visible_node_type() -> None:
    assert epmd.alive2_request(1, "a", hidden=False)[5] == 77


def test_alive2_replies_new_and_old() -> None:
    assert epmd.parse_alive2_response(b"\x76\x00\x00\x00") is None  # incomplete
    assert epmd.parse_alive2_response(b"\x76\x00\x12\x34\x56\x78") == (0, 0x12345678)
    assert epmd.parse_alive2_response(b"\x79\x01\x00\x03") == (1, 3)
    with pytest.raises(epmd.EPMDError):
        epmd.parse_alive2_response(b"\x01\x00")


def test_port_please2_success_bytes_from_a_real_epmd() -> None:
    reply = bytes.fromhex("7700815548000006000600056466707933" + "0000")
    info = epmd.parse_port_please2_response(reply)
    assert info == epmd.NodeInfo("dfpy3", 0x8155, 72, 0, 6, 6, b"")
    assert info.hidden


def test_port_please2_partial_unknown_and_truncated() -> None:
    reply = bytes.fromhex("77008155480000060006000564667079330000")
    assert epmd.parse_port_please2_response(reply[:9]) is None
    with pytest.raises(epmd.EPMDError, match="truncated"):
        epmd.parse_port_please2_response(reply[:9], closed=True)
    with pytest.raises(epmd.EPMDError, match="not registered"):
        epmd.parse_port_please2_response(b"\x77\x01")
    with pytest.raises(epmd.EPMDError):
        epmd.parse_port_please2_response(b"", closed=True)


def test_names_reply() -> None:
    raw = (4369).to_bytes(4, "big") + b"name beam1 at port 40001\nname py1 at port 40002\n"
    assert epmd.parse_names_response(raw) == (4369, {"beam1": 40001, "py1": 40002})
    assert epmd.port_please2_request("py1") == b"\x00\x04\x7apy1"
    assert epmd.names_request() == b"\x00\x01\x6e"
