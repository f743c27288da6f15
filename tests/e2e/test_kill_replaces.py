"""A BEAM node killed with work on it: its placed agents and tasks start again elsewhere and every
task finishes (its own cluster: this module kills one of its BEAM nodes)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agents"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_cluster import wait_for  # noqa: E402

pytestmark = pytest.mark.otp

PLACEMENT = "'Elixir.DSPEx.Clustering.AgentPlacement'"
DRAIN = "'Elixir.DSPEx.Clustering.Drain'"
WORKLOAD = "'Elixir.DSPEx.Clustering.Workload'"


def test_kill_9_with_agents_and_tasks_on_the_node_loses_nothing(beams, agent_node) -> None:  # type: ignore[no-untyped-def]
    keeper, victim = beams
    # everything starts on the victim: the keeper is drained while the work is placed
    keeper.eval(f"{DRAIN}:drain('{keeper.name}', test)")
    for i in range(3):
        reply = keeper.eval(
            f'{PLACEMENT}:start_agent(#{{id => <<"svc{i}">>, '
            "start => {'Elixir.Task', start_link, [timer, sleep, [infinity]]}}, [])"
        )
        assert reply[0] == "ok" and str(reply[1]) == victim.name
    per_ms = keeper.eval(f"{WORKLOAD}:calibrate()")
    plan = "[" + ",".join(f'{{{i * 50}, <<"k{i}">>, 300}}' for i in range(20)) + "]"
    keeper.eval(
        f"{{ok, W}} = {WORKLOAD}:start({plan}, [{{iterations_per_ms, {per_ms}}}]), "
        "register(e2e_kill_run, W)"
    )
    wait_for(lambda: keeper.eval(f"maps:get(arrived, {WORKLOAD}:status(e2e_kill_run))") == 20)
    keeper.eval(f"{DRAIN}:undrain('{keeper.name}')")
    status = keeper.eval(f"{WORKLOAD}:status(e2e_kill_run)")
    assert status["completed"] < 20  # work is still running on the victim

    os.kill(int(victim.eval("list_to_integer(os:getpid())")), signal.SIGKILL)
    killed = time.monotonic()

    def agents_on_keeper() -> bool:
        agents = keeper.eval(f"{PLACEMENT}:agents()")
        ours = [a for k, a in agents.items() if bytes(k).startswith(b"svc")]
        return len(ours) == 3 and all(str(a["node"]) == keeper.name for a in ours)

    wait_for(agents_on_keeper, timeout=5)
    assert time.monotonic() - killed < 5
    wait_for(
        lambda: keeper.eval(f"maps:get(completed, {WORKLOAD}:status(e2e_kill_run))") == 20,
        timeout=60,
    )
    results = keeper.eval(f"{WORKLOAD}:results(e2e_kill_run)")
    assert all(r["done_ms"] is not None for r in results)
    moved = [r for r in results if r["moves"] > 0]
    assert moved and all(str(r["node"]) == keeper.name for r in moved)
    moves = keeper.eval(f"maps:get(moves, {WORKLOAD}:status(e2e_kill_run))")
    assert moves.get("node_down", 0) == len(moved)
    for i in range(3):
        keeper.eval(f'{PLACEMENT}:stop_agent(<<"svc{i}">>)')
