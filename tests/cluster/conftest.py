"""Two BEAM nodes running the app and one Python agent node, shared by a test module.

Reuses tests/agents/beam_app.py (app nodes) and, through it, the interop epmd fixture."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agents"))

from beam_app import COOKIE, connected_app_nodes, interop_conftest  # noqa: E402
from otp import ErlNode, unique  # noqa: E402

from dspex_cluster.cluster import (  # noqa: E402
    AgentNode,
    AgentSettings,
    FailureConfig,
    LoadBalancerConfig,
    PerformanceConfig,
    start_agent_node,
)

epmd = interop_conftest("interop_conftest_for_cluster").epmd
pytestmark = pytest.mark.otp


def fast_settings() -> AgentSettings:
    return AgentSettings(
        load_balancer=LoadBalancerConfig(
            forecast_interval_s=0.25, overload_ticks=2, rebalance_cooldown_s=60.0
        ),
        failure=FailureConfig(check_interval_s=0.2),
        performance=PerformanceConfig(report_interval_s=1.0),
        host_vitals_interval_s=0.5,
    )


@pytest.fixture(scope="module")
def beams(epmd) -> Iterator[list[ErlNode]]:  # type: ignore[no-untyped-def]
    """Two connected BEAM nodes running :dspex_cluster."""
    with connected_app_nodes(epmd.port, ("ba", "bb")) as nodes:
        yield nodes


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def agents(beams: list[ErlNode], epmd) -> AsyncIterator[AgentNode]:  # type: ignore[no-untyped-def]
    """The Python agent node, joined to the first BEAM node, its relay subscriptions in place."""
    agent_node = await start_agent_node(
        f"{unique('py')}@127.0.0.1",
        COOKIE,
        join=[beams[0].name],
        epmd_port=epmd.port,
        settings=fast_settings(),
    )
    try:
        await agent_node.bus.wait_relay(10)
        yield agent_node
    finally:
        await agent_node.stop()
