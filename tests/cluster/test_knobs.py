"""The load balancer's exploration and the health monitor's alert threshold follow the Cognitive
Variables `lb.exploration` and `health.alert_threshold` when they exist (set from a BEAM node, as
from iex), keep their defaults when none exists, and feed rewards from outcomes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from beam_app import COOKIE, connected_app_nodes
from otp import unique

from dspex_cluster.cluster import (
    AgentSettings,
    HealthPolicy,
    LoadBalancerConfig,
    start_agent_node,
)
from dspex_cluster.etf import Atom

pytestmark = pytest.mark.otp

VAR = "'Elixir.DSPEx.Clustering.Variable'"


async def _until(pred: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_knobs_follow_the_variables_adapt_and_fall_back_to_defaults(epmd) -> None:  # type: ignore[no-untyped-def]
    fast = {"knob_retry_s": 0.2, "knob_feedback_interval_s": 0.3}
    settings = AgentSettings(load_balancer=LoadBalancerConfig(**fast), health=HealthPolicy(**fast))
    with connected_app_nodes(epmd.port, ("ka", "kb")) as beams:
        agents = await start_agent_node(
            f"{unique('pyk')}@127.0.0.1",
            COOKIE,
            join=[beams[0].name],
            epmd_port=epmd.port,
            settings=settings,
        )
        try:
            lb, hm = agents.load_balancer, agents.health_monitor.anomaly
            await asyncio.sleep(0.5)
            # no variable: the defaults
            assert lb.model.optimism == 0.5 and lb.exploration.version is None
            assert hm.policy.alert_on == 0.3 and hm.policy.alert_off == 0.15

            b = beams[1]
            started = b.eval(
                f'{VAR}:start(<<"lb.exploration">>, [{{type, float}}, {{range, {{0.0, 2.0}}}},'
                " {value, 0.9}, {seed, 1}])"
            )
            assert started[0] == "ok"
            await _until(lambda: lb.model.optimism == 0.9)
            assert b.eval(f'{VAR}:set(<<"lb.exploration">>, 0.25)') == ("ok", 2)
            await _until(lambda: lb.model.optimism == 0.25 and lb.exploration.version == 2)

            # outcomes reward the value in use; the variable takes a step and every LB follows
            for _ in range(5):
                lb.outcome(Atom(b.name), {"work": 1.0}, 120.0)
            await _until(lambda: (lb.exploration.version or 0) >= 3)
            info = b.eval(f'{VAR}:info(<<"lb.exploration">>)')
            assert info[0] == "ok" and info[1]["feedback_steps"] >= 1
            assert lb.model.optimism == lb.exploration.value

            assert (
                b.eval(
                    f'{VAR}:start(<<"health.alert_threshold">>, [{{type, float}}, {{value, 0.6}}])'
                )[0]
                == "ok"
            )
            await _until(lambda: hm.policy.alert_on == 0.6)
            assert hm.policy.alert_off == 0.15
            # a node that goes down unannounced is a negative reward for the threshold in use
            hm.on_down(_down_signal(b.name))
            await _until(lambda: hm.threshold.feedback_sent >= 1)

            # deleted: back to the defaults
            assert b.eval(f'{VAR}:delete(<<"health.alert_threshold">>)') == "ok"
            await _until(lambda: hm.policy.alert_on == 0.3 and hm.threshold.version is None)
        finally:
            await agents.stop()


def _down_signal(node: str):  # type: ignore[no-untyped-def]
    from dspex_cluster.signals import Signal

    return Signal(type="cluster.node.down", source="test", data={Atom("node"): Atom(node)})
