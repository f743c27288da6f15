"""BEAM nodes running the :dspex_cluster app for agent tests. The private epmd fixture is the
interop suite's (tests/interop/conftest.py), imported, not copied."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from beam_app import COOKIE, interop_conftest, start_app_node  # noqa: E402
from otp import ErlNode  # noqa: E402

epmd = interop_conftest("interop_conftest_for_agents").epmd

pytestmark = pytest.mark.otp


@pytest.fixture(scope="module")
def beam_app(epmd) -> Iterator[ErlNode]:  # type: ignore[no-untyped-def]
    """One BEAM node running the app, per test module."""
    node = start_app_node(epmd.port, COOKIE, "app")
    try:
        yield node
    finally:
        node.stop()
