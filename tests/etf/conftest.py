"""Fixtures for the codec tests: both implementations, and one Erlang peer per OTP version."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from dspex_cluster import etf

from .erlang_peer import ErlangPeer, erl_executables

IMPLEMENTATIONS = ["pure", "native"]
OTP_VERSIONS = ["otp25", "otp28"]


@pytest.fixture(params=IMPLEMENTATIONS)
def codec(request: pytest.FixtureRequest) -> ModuleType:
    """The pure reference codec and the C fast path: every codec test runs against both."""
    module = etf.pure if request.param == "pure" else etf.native
    if module is None:
        pytest.skip("the C extension dspex_cluster.etf._cetf is not built")
    return module


@pytest.fixture(scope="session", params=OTP_VERSIONS)
def erlang(request: pytest.FixtureRequest) -> Iterator[ErlangPeer]:
    erl = erl_executables().get(request.param)
    if erl is None:
        pytest.fail(f"{request.param} erl not found (run make setup)")
    peer = ErlangPeer(erl)
    try:
        yield peer
    finally:
        peer.close()
