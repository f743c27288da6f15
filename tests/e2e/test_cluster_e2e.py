"""The BEAM side uses the Python agents, end to end: two BEAM app nodes and a Python agent node in
its own OS process (see conftest.py)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agents"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from beam_app import collected, start_collector  # noqa: E402
from e2e_cluster import EX, AgentNodeProcess, connect, wait_for  # noqa: E402
from otp import unique  # noqa: E402

pytestmark = pytest.mark.otp

ADVISOR = "'Elixir.DSPEx.Clustering.PythonAdvisor'"
DRAIN = "'Elixir.DSPEx.Clustering.Drain'"


def place(beam, spec_id: str) -> tuple[object, object]:  # type: ignore[no-untyped-def]
    """DSPEx.Clustering.place/2 on `beam`; (result, the Python node that advised it or nil)."""
    return beam.eval(
        f'R = {EX}:place(#{{id => <<"{spec_id}">>, work => 0.05}}, [{{kinds, [beam]}}]), '
        f'{{R, {ADVISOR}:take_advisor(<<"{spec_id}">>)}}'
    )


def test_placement_goes_through_the_python_load_balancer(beams, agent_node) -> None:  # type: ignore[no-untyped-def]
    names = {b.name for b in beams}
    for i in range(10):
        (tag, node), advisor = place(beams[0], f"p{i}")
        assert tag == "ok" and str(node) in names
        assert str(advisor) == agent_node.name
    # the Python model counted them
    stats = beams[0].eval(f"erpc:call('{agent_node.name}', dspex_agents, stats, [])")
    assert stats["placements"] >= 10


# A BEAM process that places every 20 ms and keeps {MonotonicMs, Result, Advisor}.
PLACER = (
    "Loop = fun Loop(N, Acc) -> receive {stop, From} -> From ! {placed, lists:reverse(Acc)} "
    "after 20 -> Id = integer_to_binary(N), "
    f"R = try {EX}:place(#{{id => Id}}, [{{kinds, [beam]}}]) catch C:E -> {{caught, C, E}} end, "
    f"A = {ADVISOR}:take_advisor(Id), "
    "Loop(N + 1, [{erlang:monotonic_time(millisecond), R, A} | Acc]) end end, "
    "register(e2e_placer, spawn(fun() -> Loop(0, []) end))"
)


def test_fallback_while_the_python_node_is_dead_and_python_again_when_back(  # type: ignore[no-untyped-def]
    beams, agent_node
) -> None:
    beam = beams[0]
    beam.eval(PLACER)
    try:
        time.sleep(0.5)
        killed_at = beam.eval("erlang:monotonic_time(millisecond)")
        agent_node.kill9()
        time.sleep(1.5)
        restarted_at = beam.eval("erlang:monotonic_time(millisecond)")
        agent_node.start()
        connect(beams, agent_node.name)
        time.sleep(2.5)  # beyond the advisor's back-off of the dead node
    finally:
        placed = beam.eval(
            "e2e_placer ! {stop, self()}, receive {placed, L} -> L after 5000 -> timeout end"
        )
    assert placed != "timeout" and len(placed) > 50
    # no caller ever saw an error
    assert all(r[0] == "ok" for _, r, _ in placed), [r for _, r, _ in placed if r[0] != "ok"]
    py = agent_node.name
    before = [a for t, _, a in placed if t < killed_at]
    dead = [a for t, _, a in placed if killed_at + 1000 <= t < restarted_at]
    after = [a for t, _, a in placed if t > restarted_at]
    # (a busy host may now and then push an answer past the 50 ms budget: the heuristic then)
    assert before and sum(a == py for a in before) >= 0.8 * len(before)
    assert all(a in (py, None) for a in before)
    # from a second after the kill on, the heuristic places alone (no advisor: nil)
    assert dead and all(a is None for a in dead)
    # the Python node is asked again once it is back
    assert py in after


def test_anomaly_and_prediction_signals_reach_beam_subscribers_and_drain(  # type: ignore[no-untyped-def]
    beams, agent_node
) -> None:
    watcher, sick = beams
    start_collector(watcher, "e2e_anomalies", "cluster.health.anomaly")
    start_collector(watcher, "e2e_predictions", "cluster.failure.predicted")
    # The agent node may have just been restarted (the test before kills it): its detector must
    # have seen the sick node healthy well past its warm-up (10 rows) first, or the degradation
    # becomes its idea of normal. 30 rows are 6 s of health data at these nodes' 200 ms.
    rows_of_sick = (
        f"maps:get(rows, maps:get('{sick.name}', "
        f"erpc:call('{agent_node.name}', dspex_agents, scores, []), #{{}}), 0)"
    )
    wait_for(lambda: watcher.eval(rows_of_sick) >= 30, timeout=30)
    sick.eval("'Elixir.DSPEx.Clustering.Degrader':start([{hogs, 2}, {leak_mb_per_s, 40}])")
    try:

        def about_sick(name: str) -> list[dict]:  # type: ignore[type-arg]
            return [s for s in collected(watcher, name) if str(s["data"]["node"]) == sick.name]

        anomalies = wait_for(lambda: about_sick("e2e_anomalies"), timeout=30)
        assert anomalies[0]["data"]["score"] > 0 and "features" in anomalies[0]["data"]
        assert anomalies[0]["source"].decode().startswith(f"dspex://{agent_node.name}/")
        predicted = wait_for(
            lambda: [s for s in about_sick("e2e_predictions") if s["data"]["probability"] >= 0.5],
            timeout=30,
        )
        assert predicted[0]["type"] == b"cluster.failure.predicted"

        # the high prediction drained the sick node on the BEAM side: no new work goes there
        wait_for(lambda: sick.name in [str(n) for n in watcher.eval(f"{DRAIN}:drained()")])
        for i in range(30):
            (tag, node), _ = place(watcher, f"d{i}")
            assert tag == "ok" and str(node) == watcher.name
        placed_agent = watcher.eval(
            "'Elixir.DSPEx.Clustering.AgentPlacement':start_agent(#{id => e2e_svc, "
            "start => {'Elixir.Task', start_link, [timer, sleep, [infinity]]}}, [])"
        )
        assert placed_agent[0] == "ok" and str(placed_agent[1]) == watcher.name
    finally:
        sick.eval("'Elixir.DSPEx.Clustering.Degrader':stop()")
        for b in beams:
            b.eval(f"{DRAIN}:undrain('{sick.name}')")
        watcher.eval("'Elixir.DSPEx.Clustering.AgentPlacement':stop_agent(e2e_svc)")


def test_two_python_nodes_the_survivor_takes_over_within_a_second(  # type: ignore[no-untyped-def]
    beams, agent_node, epmd
) -> None:
    beam = beams[0]
    second = AgentNodeProcess(
        f"{unique('epy2')}@127.0.0.1", epmd.port, [b.name for b in beams], agent_node.cookie_file
    )
    second.start()
    try:
        connect(beams, second.name)
        place(beam, "warm")  # someone answered: that one is asked first from now on
        preferred = beam.eval(f"maps:get(preferred, {ADVISOR}:stats())")
        victim = agent_node if preferred == agent_node.name else second
        survivor = second if victim is agent_node else agent_node
        beam.eval(PLACER)
        try:
            time.sleep(0.5)
            killed_at = beam.eval("erlang:monotonic_time(millisecond)")
            victim.kill9()
            time.sleep(1.5)
        finally:
            placed = beam.eval(
                "e2e_placer ! {stop, self()}, receive {placed, L} -> L after 5000 -> timeout end"
            )
        assert placed != "timeout"
        assert all(r[0] == "ok" for _, r, _ in placed)
        taken_over = [t for t, _, a in placed if t > killed_at and a == survivor.name]
        assert taken_over and taken_over[0] - killed_at < 1000
        # and it stays with the survivor
        late = [a for t, _, a in placed if t > killed_at + 1000]
        assert late and sum(a == survivor.name for a in late) >= 0.8 * len(late)
        assert victim.name not in late
    finally:
        second.stop()
        if agent_node.proc is None or agent_node.proc.poll() is not None:
            agent_node.start()
            connect(beams, agent_node.name)
