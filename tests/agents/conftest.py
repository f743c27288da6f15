"""BEAM nodes running the :dspex_cluster app for agent tests. The private epmd fixture is the
interop suite's (tests/interop/conftest.py), imported, not copied."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from beam_app import COOKIE, REPO, start_app_node  # noqa: E402
from otp import ErlNode  # noqa: E402


def _interop_conftest():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "interop_conftest_for_agents", REPO / "tests" / "interop" / "conftest.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_interop = _interop_conftest()
epmd = _interop.epmd

pytestmark = pytest.mark.otp


@pytest.fixture(scope="module")
def beam_app(epmd) -> Iterator[ErlNode]:  # type: ignore[no-untyped-def]
    """One BEAM node running the app, per test module."""
    node = start_app_node(epmd.port, COOKIE, "app")
    try:
        yield node
    finally:
        node.stop()
