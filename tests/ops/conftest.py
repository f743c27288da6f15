"""One small cluster for the operations tests: a private epmd, three BEAM nodes running
:dspex_cluster with `/metrics` on a port each, and one Python agent node (its own OS process)
with `/metrics` and the live dashboard. Everything is stopped by PID in the finalizers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agents"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from beam_app import COOKIE, interop_conftest, start_app_node  # noqa: E402
from e2e_cluster import AgentNodeProcess, connect, wait_for  # noqa: E402
from otp import ErlNode, free_port, unique  # noqa: E402

epmd = interop_conftest("interop_conftest_for_ops").epmd
pytestmark = pytest.mark.otp


@dataclass
class OpsCluster:
    beams: list[ErlNode]
    beam_metrics: dict[str, int]  # node name -> metrics port
    agent: AgentNodeProcess
    agent_metrics: int
    dashboard: int
    workdir: Path


@pytest.fixture(scope="module")
def ops_cluster(epmd, tmp_path_factory) -> Iterator[OpsCluster]:  # type: ignore[no-untyped-def]
    workdir = tmp_path_factory.mktemp("ops")
    beams: list[ErlNode] = []
    ports: dict[str, int] = {}
    agent = None
    try:
        for prefix in ("oa", "ob", "oc"):
            port = free_port()
            beam = start_app_node(epmd.port, COOKIE, prefix, env={"metrics_port": str(port)})
            beams.append(beam)
            ports[beam.name] = port
        for other in beams[1:]:
            assert beams[0].eval(f"net_kernel:connect_node('{other.name}')") is True
        cookie_file = workdir / "cookie"
        cookie_file.write_text(COOKIE)
        cookie_file.chmod(0o600)
        agent_metrics, dashboard = free_port(), free_port()
        agent = AgentNodeProcess(
            f"{unique('opy')}@127.0.0.1", epmd.port, [b.name for b in beams[:2]], cookie_file
        )
        agent.args += ["--metrics-port", str(agent_metrics), "--dashboard-port", str(dashboard)]
        agent.start()
        connect(beams, agent.name)
        # every BEAM node counts every other member up before the tests look
        for b in beams:
            wait_for(lambda b=b: len(b.eval("'Elixir.DSPEx.Clustering':members()")) == 4)
        yield OpsCluster(beams, ports, agent, agent_metrics, dashboard, workdir)
    finally:
        if agent is not None:
            agent.stop()
        for b in beams:
            b.stop()
