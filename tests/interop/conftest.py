"""Real OTP 25 and OTP 28 nodes on a private epmd, shared per module; a fresh Python node per test.

Every child process (epmd, beam.smp) is stopped by its PID in a finalizer, also on failure.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from otp import Epmd, ErlNode, unique  # noqa: E402

from dspex_cluster import Node  # noqa: E402

COOKIE = "dspex-test-cookie"

pytestmark = pytest.mark.otp


@pytest.fixture(scope="session")
def epmd() -> Iterator[Epmd]:
    server = Epmd()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["otp25", "otp28"])
def beam(request: pytest.FixtureRequest, epmd: Epmd) -> Iterator[ErlNode]:
    """One visible BEAM node per module and OTP version."""
    node = ErlNode(epmd.port, request.param, cookie=COOKIE)
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
async def py(epmd: Epmd) -> AsyncIterator[Node]:
    """A fresh hidden Python node."""
    node = Node(f"{unique('py')}@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()
