"""Fixtures: one small cluster per test module — a private epmd, two BEAM nodes running
:dspex_cluster (tests/agents/beam_app.py, so tests can evaluate Erlang on them) and one Python
agent node in its own OS process (`e2e_cluster.AgentNodeProcess`). Everything is stopped by PID
in the finalizers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agents"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from beam_app import COOKIE, connected_app_nodes, interop_conftest  # noqa: E402
from e2e_cluster import AgentNodeProcess, connect  # noqa: E402
from otp import ErlNode, unique  # noqa: E402

epmd = interop_conftest("interop_conftest_for_e2e").epmd
pytestmark = pytest.mark.otp


@pytest.fixture(scope="module")
def beams(epmd) -> Iterator[list[ErlNode]]:  # type: ignore[no-untyped-def]
    with connected_app_nodes(epmd.port, ("ea", "eb")) as nodes:
        yield nodes


@pytest.fixture(scope="module")
def agent_node(beams, epmd, tmp_path_factory) -> Iterator[AgentNodeProcess]:  # type: ignore[no-untyped-def]
    """The Python agent node, known to both BEAM nodes' Python advisors."""
    workdir = tmp_path_factory.mktemp("e2e")
    cookie_file = workdir / "cookie"
    cookie_file.write_text(COOKIE)
    cookie_file.chmod(0o600)
    py = AgentNodeProcess(
        f"{unique('epy')}@127.0.0.1", epmd.port, [b.name for b in beams], cookie_file
    )
    py.start()
    try:
        connect(beams, py.name)
        yield py
    finally:
        py.stop()
