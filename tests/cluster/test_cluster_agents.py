"""The four clustering agents on a Python node, driven from real BEAM nodes running the app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from beam_app import collected, start_collector
from otp import ErlNode, beval, unique
from test_agent_models import table_eligible, vector_eligible

from dspex_cluster import Atom
from dspex_cluster.cluster import AgentNode
from dspex_cluster.signals import Signal

pytestmark = [pytest.mark.otp, pytest.mark.asyncio(loop_scope="module")]


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """The first truthy result of `check`, polled until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s (last: {result!r})")
        await asyncio.sleep(0.1)


def call(py: AgentNode, server: str, request: str, timeout_ms: int = 5000) -> str:
    return f"gen_server:call({{{server}, '{py.node.name}'}}, {request}, {timeout_ms})"


async def both_fresh(beams: list[ErlNode], agents: AgentNode) -> None:
    async def fresh() -> bool:
        nodes = agents.load_balancer.stats()[Atom("nodes")]
        return all(nodes.get(Atom(b.name), {}).get(Atom("fresh")) for b in beams)

    await eventually(fresh)


def publish_expr(type_: str, data: str, source: str = "test") -> str:
    """Erlang: build a signal with Signal.new/3 and publish it on the bus."""
    return (
        f"{{ok, _}} = 'Elixir.DSPEx.Clustering':publish("
        f"'Elixir.DSPEx.Clustering.Signal':'new!'(<<\"{type_}\">>, {data}, "
        f'[{{source, <<"{source}">>}}]))'
    )


async def test_agents_registered_and_exposed(beams: list[ErlNode], agents: AgentNode) -> None:
    names = await beval(beams[1], f"erpc:call('{agents.node.name}', dspex_agents, names, [])")
    assert names == [
        Atom("dspex_load_balancer"),
        Atom("dspex_health_monitor"),
        Atom("dspex_failure_predictor"),
        Atom("dspex_performance"),
    ]
    for fun in ("stats", "predictions", "scores", "report"):
        got = await beval(beams[1], f"erpc:call('{agents.node.name}', dspex_agents, {fun}, [])")
        assert isinstance(got, dict), (fun, got)
    state = await beval(beams[0], call(agents, "dspex_health_monitor", "state"))
    assert state[Atom("name")] == "dspex_health_monitor"
    assert b"cluster.health.data" in state[Atom("routes")]


async def test_place_from_beam_returns_a_member(beams: list[ErlNode], agents: AgentNode) -> None:
    await both_fresh(beams, agents)
    members = {Atom(b.name) for b in beams}
    for beam in beams:
        got = await beval(beam, call(agents, "dspex_load_balancer", "{place, #{name => w}, []}"))
        assert got[0] == "ok" and got[1] in members


async def test_constraints_are_honoured(beams: list[ErlNode], agents: AgentNode) -> None:
    await both_fresh(beams, agents)
    a, b = beams[0].name, beams[1].name
    lb = "dspex_load_balancer"
    only_b = await beval(beams[0], call(agents, lb, f"{{place, w, [{{nodes, ['{b}']}}]}}"))
    assert only_b == (Atom("ok"), Atom(b))
    not_a = await beval(beams[0], call(agents, lb, f"{{place, w, #{{exclude_nodes => ['{a}']}}}}"))
    assert not_a == (Atom("ok"), Atom(b))
    # a map agent spec may carry constraints, as with DSPEx.Clustering.place/2
    spec_c = await beval(
        beams[0], call(agents, lb, f"{{place, #{{constraints => [{{nodes, ['{a}']}}]}}, []}}")
    )
    assert spec_c == (Atom("ok"), Atom(a))
    none = (Atom("error"), Atom("no_suitable_nodes"))
    for c in (
        f"[{{exclude_nodes, ['{a}', '{b}']}}]",
        "[{min_memory_mb, 1000000000}]",
        "[{capabilities, [gpu]}]",
        "[{max_cpu, -1.0}]",
        "[{max_agents, -1}]",
    ):
        assert await beval(beams[0], call(agents, lb, f"{{place, w, {c}}}")) == none, c
    # Python members are candidates only when asked for, as the BEAM filter has them
    python = await beval(beams[0], call(agents, lb, "{place, w, [{kinds, [python]}]}"))
    assert python == (Atom("ok"), agents.node.name)


LEARN = """
Place = fun() -> {{ok, N}} = {place_call}, N end,
Done = fun(N, D) ->
    gen_server:call({{dspex_load_balancer, '{py}'}}, {{placement_outcome, N, #{{work => 0.04}}, D}})
end,
Run = fun(Slow, K) -> lists:map(fun(_) ->
    N = Place(), D = case N of Slow -> 400; _ -> 40 end, ok = Done(N, D), N
end, lists:seq(1, K)) end,
First = Run('{a}', 24), Second = Run('{b}', 40), {{First, Second}}
"""


async def test_outcomes_teach_the_model_a_slow_node(
    beams: list[ErlNode], agents: AgentNode
) -> None:
    await both_fresh(beams, agents)
    a, b = beams[0].name, beams[1].name
    place = call(
        agents, "dspex_load_balancer", f"{{place, #{{work => 0.04}}, [{{nodes, ['{a}', '{b}']}}]}}"
    )
    expr = LEARN.format(place_call=place, py=agents.node.name, a=a, b=b)
    first, second = await beval(beams[0], expr, timeout=60)
    # while a is slow, b takes the work; once b turns slow, the model moves the work back to a
    assert first[-8:].count(Atom(b)) >= 7, first
    assert second[-8:].count(Atom(a)) >= 7, second
    speeds = agents.load_balancer.stats()[Atom("nodes")]
    assert speeds[Atom(a)][Atom("speed")] > 2 * speeds[Atom(b)][Atom("speed")]


async def test_advise_answers_with_a_candidate(beams: list[ErlNode], agents: AgentNode) -> None:
    await both_fresh(beams, agents)
    expr = (
        "C = 'Elixir.DSPEx.Clustering.PlacementScore':filter("
        "'Elixir.DSPEx.Clustering.LoadBalancer':candidates(), []), "
        f"{{{call(agents, 'dspex_load_balancer', '{advise, w, #{}, C}')}, "
        "[maps:get(node, M) || M <- C]}"
    )
    answer, candidate_nodes = await beval(beams[0], expr)
    assert answer[0] == "ok" and answer[1] in candidate_nodes
    assert answer[1] in {Atom(b.name) for b in beams}  # never the Python node itself


async def test_predicted_failure_drains_a_node(beams: list[ErlNode], agents: AgentNode) -> None:
    await both_fresh(beams, agents)
    a, b = beams[0].name, beams[1].name
    lb = "dspex_load_balancer"

    async def predict(p: float) -> None:
        data = f"#{{node => '{b}', probability => {p}, confidence => 0.9}}"
        await beval(beams[0], publish_expr("cluster.failure.predicted", data))

    await predict(0.9)
    await eventually(lambda: _is_drained(agents, b))
    for _ in range(5):
        got = await beval(beams[1], call(agents, lb, "{place, w, []}"))
        assert got == (Atom("ok"), Atom(a))
    advise = f"{{advise, w, #{{}}, [#{{node => '{b}', kind => beam, status => up}}]}}"
    assert await beval(beams[0], call(agents, lb, advise)) == Atom("no_advice")
    await predict(0.05)
    await eventually(lambda: _not_drained(agents, b))


async def _is_drained(agents: AgentNode, node: str) -> bool:
    return Atom(node) in agents.load_balancer.drained


async def _not_drained(agents: AgentNode, node: str) -> bool:
    return Atom(node) not in agents.load_balancer.drained


async def test_real_health_data_reaches_the_monitor(
    beams: list[ErlNode], agents: AgentNode
) -> None:
    async def seen() -> Any:
        scores = await beval(beams[0], call(agents, "dspex_health_monitor", "scores"))
        nodes = [Atom(b.name) for b in beams] + [agents.node.name]  # its own psutil vitals too
        return all(scores.get(n, {}).get(Atom("rows"), 0) >= 2 for n in nodes) and scores

    scores = await eventually(seen)
    assert scores[Atom(beams[0].name)][Atom("features")] >= 5


HEALTH = (
    "Row = fun(Mem, Util) -> #{{node => '{node}', interval_ms => 100, "
    "scheduler_utilization => #{{total => Util}}, memory => #{{total => Mem}}, "
    "run_queue => #{{total => 0}}, process_count => 300 + rand:uniform(3)}} end, "
    "Pub = fun(D) -> {{ok, _}} = 'Elixir.DSPEx.Clustering':publish("
    "'Elixir.DSPEx.Clustering.Signal':health_data(D, [{{source, <<\"test\">>}}])) end, "
    "[Pub(Row(50000000 + rand:uniform(1000000), 0.1 + rand:uniform() / 20)) "
    "|| _ <- lists:seq(1, 80)], "
    "[Pub(Row(250000000 * K, 0.99)) || K <- [1, 2, 3]], ok"
)


async def test_injected_anomaly_reaches_a_beam_subscriber(
    beams: list[ErlNode], agents: AgentNode
) -> None:
    ghost = f"{unique('ghost')}@127.0.0.1"
    col = unique("anom")
    start_collector(beams[1], col, "cluster.health.*")
    await asyncio.sleep(0.2)  # pg membership propagates asynchronously
    await beval(beams[0], HEALTH.format(node=ghost))

    async def received() -> list[Signal]:
        got = [Signal.from_term(s) for s in collected(beams[1], col)]
        return [s for s in got if s.get("node") == Atom(ghost) and s.type != "cluster.health.data"]

    await eventually(lambda: _has(received, "cluster.health.alert"))
    got = await received()
    anomalies = [s for s in got if s.type == "cluster.health.anomaly"]
    assert anomalies and all(s.source.startswith(f"dspex://{agents.node.name}/") for s in got)
    top = anomalies[0]
    assert top.get("score") >= top.get("threshold")
    drivers = list(top.get("features"))
    assert drivers[0] in ("memory.total", "scheduler_utilization.total"), top.data
    alert = next(s for s in got if s.type == "cluster.health.alert")
    assert alert.get("severity") == Atom("warning") and alert.priority == "high"


async def _has(received: Callable[[], Awaitable[list[Signal]]], type_: str) -> bool:
    return any(s.type == type_ for s in await received())


DOOMED = (
    "Pub = fun(U) -> {{ok, _}} = 'Elixir.DSPEx.Clustering':publish("
    "'Elixir.DSPEx.Clustering.Signal':health_data(#{{node => '{node}', interval_ms => 100, "
    'os_memory => #{{used_fraction => U}}}}, [{{source, <<"test">>}}])), timer:sleep(100) end, '
    "[Pub(0.5 + K * 0.03) || K <- lists:seq(1, 12)], ok"
)


async def test_failure_prediction_published(beams: list[ErlNode], agents: AgentNode) -> None:
    doomed = f"{unique('doomed')}@127.0.0.1"
    col = unique("fail")
    start_collector(beams[1], col, "cluster.failure.predicted")
    await asyncio.sleep(0.2)
    await beval(beams[0], DOOMED.format(node=doomed), timeout=30)

    async def predicted() -> list[Signal]:
        got = [Signal.from_term(s) for s in collected(beams[1], col)]
        return [s for s in got if s.get("node") == Atom(doomed)]

    first = (await eventually(predicted))[0]
    assert first.get("probability") >= 0.3
    ttf = first.get("time_to_failure_s")
    assert ttf is not None and 0 < ttf < 30, first.data  # memory: full in about 7 s
    assert 0 < first.get("confidence") < 1
    assert first.get("reasons")[Atom("memory")] > 0.5
    answer = await beval(
        beams[0], call(agents, "dspex_failure_predictor", f"{{predict, '{doomed}'}}")
    )
    assert answer[Atom("node")] == Atom(doomed)


async def test_overload_publishes_a_rebalance_plan(beams: list[ErlNode], agents: AgentNode) -> None:
    hot, cool = f"{unique('hot')}@127.0.0.1", f"{unique('cool')}@127.0.0.1"
    col = unique("reb")
    start_collector(beams[1], col, "cluster.rebalance.request")
    await asyncio.sleep(0.2)
    report = (
        "R = fun(N, Cpu) -> {{ok, _}} = 'Elixir.DSPEx.Clustering':publish("
        "'Elixir.DSPEx.Clustering.Signal':load_report(#{{node => N, cpu => Cpu, memory => 0.3, "
        'agents => 10, kind => beam, interval_ms => 100}}, [{{source, <<"test">>}}])) end, '
        "[begin R('{hot}', 0.97), R('{cool}', 0.05), timer:sleep(100) end "
        "|| _ <- lists:seq(1, 15)], ok"
    )
    try:
        await beval(beams[0], report.format(hot=hot, cool=cool), timeout=30)

        async def plans() -> list[Signal]:
            return [Signal.from_term(s) for s in collected(beams[1], col)]

        # the real BEAM nodes share this host's CPU: they may be hot too, so look for ours
        async def ours() -> list[Signal]:
            return [s for s in await plans() if Atom(hot) in s.get("nodes")]

        got = await eventually(ours)
        plan = [step for step in got[0].get("plan") if step[Atom("from")] == Atom(hot)]
        assert got[0].get("reason") == Atom("overload")
        assert plan and all(step[Atom("reason")] == Atom("overload") for step in plan)
        assert sum(step[Atom("agents")] for step in plan) >= 1
        assert {step[Atom("to")] for step in plan} <= {Atom(cool), *(Atom(b.name) for b in beams)}
        forecast = await beval(beams[0], call(agents, "dspex_load_balancer", "{forecast, 3}"))
        assert len(forecast[Atom(hot)]) == 3
    finally:  # the fake nodes leave, so later placements cannot pick them
        for n in (hot, cool):
            await beval(beams[0], publish_expr("cluster.node.down", f"#{{node => '{n}'}}"))


async def test_performance_report(beams: list[ErlNode], agents: AgentNode) -> None:
    slow = f"{unique('slowpoke')}@127.0.0.1"
    outcome = f"{{placement_outcome, '{slow}', #{{work => 0.04}}, 2000}}"
    for _ in range(3):
        assert await beval(beams[1], call(agents, "dspex_load_balancer", outcome)) == "ok"
    # an outcome may also be cast
    await beval(
        beams[1], f"gen_server:cast({{dspex_load_balancer, '{agents.node.name}'}}, {outcome})"
    )
    await eventually(lambda: _outcomes_for(agents, slow, 4))
    report = await beval(beams[1], call(agents, "dspex_performance", "report"))
    assert report[Atom("task_latency_ms")][Atom("n")] > 0  # outcomes from the learning test
    assert (
        report[Atom("task_latency_ms")][Atom("p99")] >= report[Atom("task_latency_ms")][Atom("p50")]
    )
    assert report[Atom("signal_latency_ms")][Atom("n")] > 0
    assert report[Atom("throughput")][Atom("signals_per_s")] > 0
    assert b"cluster.load.report" in report[Atom("signal_types")]
    slow_nodes = [
        b[Atom("node")] for b in report[Atom("bottlenecks")] if b[Atom("kind")] == "slow_node"
    ]
    assert slow_nodes == [Atom(slow)]
    assert report[Atom("per_node")][Atom(slow)][Atom("p50_ms")] == 2000
    assert len(report[Atom("recommendations")]) == len(report[Atom("bottlenecks")])
    col = unique("perf")
    start_collector(beams[0], col, "cluster.performance.report")
    await eventually(lambda: asyncio.to_thread(collected, beams[0], col), timeout=5)


CANDIDATES = [
    {
        "node": "n1@h",
        "kind": "beam",
        "status": "up",
        "cpu": 0.2,
        "memory": 0.5,
        "free_memory_mb": 4096,
        "agents": 3,
        "capabilities": ["gpu", "ssd"],
    },
    {
        "node": "n2@h",
        "kind": "beam",
        "status": "up",
        "cpu": 0.9,
        "memory": 0.2,
        "free_memory_mb": 512,
        "agents": 12,
        "capabilities": ["ssd"],
    },
    {"node": "n3@h", "kind": "python", "status": "up"},
    {"node": "n4@h", "kind": "beam", "status": "suspect", "cpu": 0.1, "agents": 0},
    {
        "node": "n5@h",
        "kind": "beam",
        "status": "up",
        "cpu": None,
        "memory": None,
        "free_memory_mb": None,
        "agents": None,
        "capabilities": [],
    },
]
CONSTRAINTS: list[dict[str, Any]] = [
    {},
    {"exclude_nodes": ["n1@h"]},
    {"nodes": ["n2@h", "n3@h"]},
    {"kinds": ["beam"]},
    {"kinds": ["python"]},
    {"min_memory_mb": 1000},
    {"capabilities": ["ssd"]},
    {"capabilities": ["gpu", "ssd"]},
    {"max_cpu": 0.5},
    {"max_agents": 5},
    {"max_cpu": 0.95, "capabilities": ["ssd"], "exclude_nodes": ["n2@h"]},
]


def _term(d: dict[str, Any]) -> dict[Atom, Any]:
    def conv(k: str, v: Any) -> Any:
        if k in ("node", "kind", "status") and isinstance(v, str):
            return Atom(v)
        if isinstance(v, list):
            return [Atom(x) for x in v]
        return v

    return {Atom(k): conv(k, v) for k, v in d.items()}


async def test_constraints_match_the_beam_filter(beams: list[ErlNode], agents: AgentNode) -> None:
    """Python's filter gives exactly what DSPEx.Clustering.PlacementScore.filter/2 gives."""
    from dspex_cluster.cluster.constraints import eligible

    cands = [_term(c) for c in CANDIDATES]
    for c in CONSTRAINTS:
        beam = await agents.node.rpc(
            beams[1].name, "Elixir.DSPEx.Clustering.PlacementScore", "filter", [cands, _term(c)]
        )
        expected = [x[Atom("node")] for x in beam]
        ours = [x for x in cands if eligible(x, _term(c))]
        assert [x[Atom("node")] for x in ours] == expected, c
        # the load balancer's vectorised filter (advise's columns and place's node table)
        assert vector_eligible(cands, _term(c)) == expected, c
        assert table_eligible(cands, _term(c)) == expected, c


async def test_bus_fails_over_when_the_relay_node_dies(
    beams: list[ErlNode], agents: AgentNode
) -> None:
    """Last in the module: it stops the first BEAM node."""
    a, b = Atom(beams[0].name), Atom(beams[1].name)
    assert agents.bus.relay == a
    await eventually(lambda: _knows(agents, b))  # learned from DSPEx.Clustering.members/0
    beams[0].stop()
    await eventually(lambda: _relay_is(agents, b))
    before = agents.health_monitor.anomaly.nodes[b].rows
    await eventually(lambda: _rows_grew(agents, b, before))  # b's health data still arrives
    got = await beval(beams[1], call(agents, "dspex_load_balancer", "{place, w, []}"))
    assert got == (Atom("ok"), b), agents.failure_predictor.predictions().get(b)


async def _outcomes_for(agents: AgentNode, node: str, n: int) -> bool:
    return sum(1 for o in agents.load_balancer.outcomes if o[1] == Atom(node)) >= n


async def _knows(agents: AgentNode, node: Atom) -> bool:
    return node in agents.bus.known


async def _relay_is(agents: AgentNode, node: Atom) -> bool:
    return agents.bus.relay == node


async def _rows_grew(agents: AgentNode, node: Atom, before: int) -> bool:
    return agents.health_monitor.anomaly.nodes[node].rows > before + 2
