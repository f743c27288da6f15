"""The agents' decision logic without a cluster: trends, health scoring, rebalance plans,
placement over many nodes."""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

import numpy as np
import pytest

from dspex_cluster import Atom
from dspex_cluster.cluster.candidates import NodeTable, columns_of, eligible_mask
from dspex_cluster.cluster.constraints import (
    Filter,
    capability_match,
    compile_filter,
    eligible,
    merged_constraints,
)
from dspex_cluster.cluster.failure_predictor import (
    FailureConfig,
    FailurePredictor,
    exhaustion,
    growth,
)
from dspex_cluster.cluster.health_monitor import HealthPolicy, NodeHealth, flatten
from dspex_cluster.cluster.load_balancer import NO_ADVICE, NO_SUITABLE, LoadBalancer
from dspex_cluster.cluster.terms import as_mapping, atom_list, number
from dspex_cluster.cluster.view import NodeState
from dspex_cluster.signals import Signal


def series(values: list[float], dt: float = 0.5) -> deque[tuple[float, float]]:
    return deque((i * dt, v) for i, v in enumerate(values))


def test_a_step_is_not_a_trend_a_steady_climb_is() -> None:
    step = series([20.0] * 4 + [28.0] * 5)
    p, _ = growth(step, 30.0, 100.0)
    assert p < 0.01
    climb = series([100.0 + 40.0 * i for i in range(9)])  # 80 MB/s: +420 MB in ~5 s
    p, doubling = growth(climb, 30.0, 100.0)
    assert p > 0.99 and doubling is not None and 3 < doubling < 8
    noise = series(list(100 + np.random.default_rng(1).normal(0, 3, 9)))
    assert growth(noise, 30.0, 100.0)[0] == 0.0


def test_exhaustion_time_follows_the_rate() -> None:
    p, ttf = exhaustion(series([0.5 + 0.05 * i for i in range(9)]), horizon=30.0)  # 0.1/s
    assert p > 0.99 and ttf is not None and abs(ttf - 1.0) < 0.05  # 0.9 -> 1.0 at 0.1/s
    p, ttf = exhaustion(series([0.5] * 9), horizon=30.0)
    assert p < 0.01 and ttf is None


def test_health_score_needs_rarity_and_size() -> None:
    rng = np.random.default_rng(7)
    names = ["scheduler_utilization.total", "memory.total", "run_queue.total"]
    h = NodeHealth(names, HealthPolicy())
    for _ in range(80):
        h.update(
            {
                names[0]: 0.1 + rng.normal(0, 0.01),
                names[1]: 5e7 + rng.normal(0, 1e5),
                names[2]: float(rng.integers(0, 2)),
            }
        )
    noise_extreme = h.update({names[0]: 0.14, names[1]: 5e7, names[2]: 1.0})
    assert noise_extreme < 0.25  # rare-ish but small: gated
    spike = h.update({names[0]: 0.99, names[1]: 3e8, names[2]: 9.0})
    assert spike >= 0.25 and h.deviation > 4
    assert next(iter(h.shares)) in names


def test_flatten_keeps_numbers_and_skips_counters() -> None:
    data = {
        Atom("memory"): {Atom("total"): 5, Atom("code"): 9},
        Atom("reductions"): {Atom("total"): 10**9, Atom("since_last_call"): 100},
        Atom("pid"): "x",
        Atom("flag"): True,
        Atom("os_cpu"): None,
    }
    assert flatten(data) == {"memory.total": 5.0, "reductions.since_last_call": 100.0}


def _lb_with(reports: dict[str, dict]) -> LoadBalancer:
    lb = LoadBalancer()
    lb.setup()
    for node, load in reports.items():
        data = {
            Atom(k): v
            for k, v in {
                "node": Atom(node),
                "kind": Atom("beam"),
                "interval_ms": 1000,
                **load,
            }.items()
        }
        lb.on_load_report(Signal.new("cluster.load.report", data, source="t"))
    return lb


def test_place_over_a_thousand_nodes() -> None:
    reports = {
        f"n{i}@h": {
            "cpu": (i % 10) / 10,
            "memory": 0.3,
            "agents": i % 7,
            "free_memory_mb": 1000 + i,
        }
        for i in range(1000)
    }
    lb = _lb_with(reports)
    results = [lb.place(None, [(Atom("min_memory_mb"), 1500)]) for _ in range(20)]
    chosen = {r[1] for r in results}
    assert all(r[0] == "ok" for r in results)
    assert all(int(n[1:].split("@")[0]) >= 500 for n in chosen)  # only nodes with the memory


def test_drained_and_python_nodes_are_avoided() -> None:
    lb = _lb_with(
        {"a@h": {"cpu": 0.1}, "b@h": {"cpu": 0.1}, "p@h": {"cpu": 0.0, "kind": Atom("python")}}
    )
    lb.drain(Atom("a@h"))
    for _ in range(10):
        assert lb.place(None, []) == (Atom("ok"), Atom("b@h"))
    assert lb.place(None, [(Atom("kinds"), [Atom("python")])]) == (Atom("ok"), Atom("p@h"))
    lb.drain(Atom("b@h"))  # every BEAM node drained: the work still goes somewhere
    assert lb.place(None, [])[0] == "ok"
    assert lb.place(None, [(Atom("nodes"), [Atom("a@h")])]) == (Atom("ok"), Atom("a@h"))


def _predict(lb: LoadBalancer, node: str, p: float) -> None:
    data = {Atom("node"): Atom(node), Atom("probability"): p}
    lb.on_prediction(Signal.new("cluster.failure.predicted", data, source="t"))


def test_predictions_drain_at_most_a_third_likeliest_first() -> None:
    """The BEAM Drain's guard: max_drained_share (0.34) of 6 BEAM members is 2 nodes."""
    nodes = [f"n{i}@h" for i in range(6)]
    lb = _lb_with({n: {"cpu": 0.5} for n in nodes})
    assert lb.drain_limit() == 2
    _predict(lb, "n0@h", 0.9)
    _predict(lb, "n1@h", 0.7)
    _predict(lb, "n2@h", 0.6)  # at the limit, less likely than both drained: held
    assert set(lb.drained) == {Atom("n0@h"), Atom("n1@h")}
    _predict(lb, "n3@h", 0.95)  # likelier than n1: takes its place
    assert set(lb.drained) == {Atom("n0@h"), Atom("n3@h")}
    _predict(lb, "n0@h", 0.8)  # a drained node's new prediction replaces its old one
    assert lb.drained[Atom("n0@h")] == 0.8
    _predict(lb, "n0@h", 0.1)  # below undrain_probability: undrained, room for another
    _predict(lb, "n2@h", 0.6)
    assert set(lb.drained) == {Atom("n2@h"), Atom("n3@h")}
    _predict(lb, "n4@h", 0.55)  # no drained node is less likely: held
    assert Atom("n4@h") not in lb.drained


def test_a_busy_host_never_drains_every_candidate() -> None:
    """Every node predicted to fail (an overloaded host looks sick everywhere): one of three is
    drained, advise still answers with a candidate."""
    nodes = [f"m{i}@h" for i in range(3)]
    lb = _lb_with({n: {"cpu": 0.99} for n in nodes})
    for i, n in enumerate(nodes):
        _predict(lb, n, 0.6 + 0.1 * i)
    assert lb.drained == {Atom("m2@h"): 0.8}  # the likeliest failure
    candidates = [
        {Atom("node"): Atom(n), Atom("kind"): Atom("beam"), Atom("status"): Atom("up")}
        for n in nodes
    ]
    got = lb.advise(None, [], candidates)
    assert got[0] == "ok" and got[1] in {Atom("m0@h"), Atom("m1@h")}
    # members that go down stop counting; by-hand drains are neither limited nor displaced
    lb.drain(Atom("m0@h"))
    _predict(lb, "m1@h", 0.99)
    assert set(lb.drained) == {Atom("m0@h"), Atom("m1@h")}
    down = Signal.new("cluster.node.down", {Atom("node"): Atom("m1@h")}, source="t")
    lb.on_membership(down)
    assert lb.beam_members() == 2 and lb.drain_limit() == 1


def test_a_recent_down_history_raises_the_prediction() -> None:
    """Two nodes with the same health reports; one was down a moment ago. The hazard model
    (skills.failure, fed the down period) gives it the higher history risk and higher P."""
    fp = FailurePredictor(FailureConfig())
    fp.setup()

    def signal(type_: str, node: str, **data: Any) -> Signal:
        fields = {Atom("node"): Atom(node), **{Atom(k): v for k, v in data.items()}}
        return Signal.new(type_, fields, source="t")

    for node in ("steady@h", "flaky@h"):
        fp.on_health(signal("cluster.health.data", node, interval_ms=1000, memory=0.4))
    fp.on_membership(signal("cluster.node.down", "flaky@h"))
    fp.on_membership(signal("cluster.node.up", "flaky@h"))
    assert fp.failures == 1
    for node in ("steady@h", "flaky@h"):
        fp.on_health(signal("cluster.health.data", node, interval_ms=1000, memory=0.4))
    got = fp.predictions()
    flaky, steady = got[Atom("flaky@h")], got[Atom("steady@h")]
    hist = Atom("reasons"), Atom("history")
    assert flaky[hist[0]][hist[1]] > 10 * steady[hist[0]][hist[1]] > 0
    assert flaky[Atom("probability")] > steady[Atom("probability")]
    # the same with the silence prior's down count set equal: the hazard model alone differs
    fp.nodes[Atom("steady@h")].downs = list(fp.nodes[Atom("flaky@h")].downs)
    now = time.monotonic()
    a = fp.predict(Atom("flaky@h"), fp.nodes[Atom("flaky@h")], now)
    b = fp.predict(Atom("steady@h"), fp.nodes[Atom("steady@h")], now)
    assert a["probability"] > b["probability"]
    assert a["reasons"]["silence"] == pytest.approx(b["reasons"]["silence"], rel=0.2)
    model = flaky[Atom("history_model")]
    assert 0 < model[Atom("probability")] <= 1 and model[Atom("time_to_failure_s")] > 0
    # a rebuilt model keeps all the history (no time window any more)
    fp._new_hazard(-math.inf)
    assert fp.failures == 1
    again = fp.predictions()[Atom("flaky@h")][Atom("reasons")][Atom("history")]
    assert again == pytest.approx(flaky[hist[0]][hist[1]], rel=0.05)


def test_history_is_kept_up_to_the_memory_cap() -> None:
    fp = FailurePredictor(FailureConfig(history_max_failures=4))
    fp.setup()
    wall = time.time()
    fp.first_seen = {Atom("a@h"): wall - 7200.0, Atom("b@h"): wall - 7200.0}
    fp.failure_log = [
        (Atom("a@h"), wall - 3600.0 + 60.0 * k, wall - 3590.0 + 60.0 * k) for k in range(4)
    ]
    fp._new_hazard(-math.inf)
    fp.history_probabilities([Atom("a@h")], wall)
    assert fp.failures == 4  # at the cap: everything kept, hours old
    fp.failure_log.append((Atom("b@h"), wall - 100.0, wall - 90.0))
    fp.history_probabilities([Atom("a@h"), Atom("b@h")], wall)
    assert fp.failures == 3 and fp.failure_log[0][1] == wall - 3600.0 + 120.0  # oldest half gone
    # the node-interval cap: 2 nodes x 2 h / 30 s = 480 intervals > 400 -> the older hour goes
    fp.config = FailureConfig(history_max_intervals=400)
    fp.history_probabilities([Atom("a@h"), Atom("b@h")], wall)
    assert fp.hazard_since == pytest.approx(wall - 3600.0)


async def test_hazard_refits_run_in_a_worker_thread_and_predictions_never_wait() -> None:
    fp = FailurePredictor(FailureConfig(horizon_s=30.0))
    fp.setup()
    wall = time.time()
    nodes = [Atom(f"n{k}@h") for k in range(8)]
    fp.first_seen = {n: wall - 86400.0 for n in nodes}
    rng = np.random.default_rng(0)
    fp.failure_log = [
        (nodes[int(k)], float(t), float(t) + 60.0)
        for k, t in zip(
            rng.integers(0, 8, 200),
            np.sort(rng.uniform(wall - 86000, wall - 600, 200)),
            strict=True,
        )
    ]
    fp._new_hazard(-math.inf)
    assert fp.history_probabilities(nodes, wall) == {}  # no fit ready: answers at once
    assert fp._refit is not None and not fp.hazard.has_fit(wall)
    seconds = await fp._refit  # the fit ran in the worker thread; its callback installed it
    assert seconds > 0 and fp.refits == 1 and fp.refit_seconds == seconds
    assert fp.hazard.has_fit(wall) and fp._refit is None
    got = fp.history_probabilities(nodes, wall)
    assert set(got) == set(nodes) and all(0.0 < p < 1.0 for p in got.values())
    # a failure after the cutoff changes nothing fitted; one before it starts a new refit
    fp.hazard.observe_failure(nodes[0], wall + 1.0, wall + 2.0)
    assert fp.hazard.has_fit(wall) and fp._refit is None
    fp.hazard.observe_failure(nodes[1], fp.hazard.cutoff(wall) - 5.0, fp.hazard.cutoff(wall) - 1.0)
    assert not fp.hazard.has_fit(wall)
    assert fp.history_probabilities(nodes, wall) == {}  # no ready fit at or before the cutoff
    assert fp._refit is not None
    await fp._refit
    assert fp.hazard.has_fit(wall) and fp.refits == 2
    fp._executor.shutdown(wait=True)


def vector_eligible(cands: list[Any], c: Any) -> list[Atom]:
    """The nodes the load balancer's column filter keeps (advise: from candidate maps)."""
    index: dict[Atom, int] = {}

    def rows(nodes: list[Atom]) -> list[int]:
        return [index.setdefault(x, len(index)) for x in nodes]

    f = Filter.of(as_mapping(c))
    cols = columns_of(cands, rows, f.needs_caps)
    keep = eligible_mask(cols, f, index, len(index), cols.status == "up")
    return list(cols.node[keep])


def table_eligible(cands: list[Any], c: Any) -> list[Atom]:
    """The same from the node table `place` reads (each candidate as a fresh load report)."""
    table, index = NodeTable(), {}
    now = time.monotonic()
    for x in map(as_mapping, cands):
        s = NodeState(x["node"], x.get("kind"), x.get("status"), dict(x), reported_at=now)
        table.sync(index.setdefault(s.node, len(index)), s)
    cols = table.columns(now, 5.0, 30.0)
    f = Filter.of(as_mapping(c))
    keep = eligible_mask(cols, f, index, len(index), cols.status == "up")
    return list(cols.node[keep])


def test_column_filter_is_the_per_candidate_filter() -> None:
    """Random candidates (missing, nil, odd-typed fields; binary keys; keyword lists) and
    constraints: the vectorised filter keeps exactly what `compile_filter` keeps."""
    rng = np.random.default_rng(3)
    caps = [Atom("gpu"), Atom("ssd"), Atom("fpga")]
    nodes = [Atom(f"n{i}@h") for i in range(9)]

    def pick(items: list[Atom], k: int) -> list[Atom]:
        return [items[i] for i in rng.choice(len(items), k, replace=False)]

    def value(kind: str) -> Any:
        r = rng.random()
        if r < 0.15:
            return None
        if r < 0.2:
            return rng.choice([True, Atom("x"), b"1", {Atom("a"): 1}, float("nan")])
        return {"cpu": rng.random() * 1.2, "n": int(rng.integers(0, 4000))}[kind]

    for trial in range(200):
        cands: list[Any] = []
        for i in range(int(rng.integers(0, 12))):
            m: dict[Any, Any] = {
                Atom("node"): Atom(f"n{i % 9}@h"),
                Atom("kind"): Atom(rng.choice(["beam", "beam", "python"])),
                Atom("status"): Atom(rng.choice(["up", "up", "suspect", "down"])),
                Atom("cpu"): value("cpu"),
                Atom("free_memory_mb"): value("n"),
                Atom("agents"): value("n"),
                Atom("capabilities"): pick(caps, int(rng.integers(0, 3))),
            }
            m = {k: v for k, v in m.items() if k == "node" or rng.random() > 0.1}
            if rng.random() < 0.1:
                m = {k.encode(): v for k, v in m.items()}
            cands.append(list(m.items()) if rng.random() < 0.1 else m)
        c: dict[Atom, Any] = {}
        for key, make in (
            ("exclude_nodes", lambda: pick(nodes, 2)),
            ("nodes", lambda: pick(nodes, 3)),
            ("kinds", lambda: [Atom(rng.choice(["beam", "python"]))]),
            ("min_memory_mb", lambda: int(rng.integers(0, 4000))),
            ("capabilities", lambda: pick(caps, 1)),
            ("max_cpu", lambda: float(rng.random())),
            ("max_agents", lambda: int(rng.integers(0, 4000))),
        ):
            if rng.random() < 0.25:
                c[Atom(key)] = make()
        maps = [as_mapping(x) for x in cands]
        expected = [x["node"] for x in maps if eligible(x, as_mapping(c))]
        assert vector_eligible(cands, c) == expected, (trial, c)
        unique = list({m["node"]: m for m in maps}.values())  # the table: one row per node
        want = [x["node"] for x in unique if eligible(x, as_mapping(c))]
        assert sorted(table_eligible(unique, c)) == sorted(want), (trial, c)


def reference_inputs(lb: LoadBalancer, spec: Any, constraints: Any, cands: list[Any]) -> Any:
    """The model's inputs built the plain way, one candidate map at a time (the load
    balancer's former loop): (features, mask), or None when no candidate is eligible."""
    c = merged_constraints(spec, constraints)
    ok = compile_filter(c)
    python_ok = Atom("python") in atom_list(c.get("kinds"))
    kind_ok = [x for x in cands if python_ok or x.get("kind") != "python"]
    chosen = [x for x in kind_ok if ok(x)]
    if not any(x.get("status") == "up" for x in kind_ok):
        chosen = [
            x for x in kind_ok if x.get("status") == "suspect" and ok({**x, "status": Atom("up")})
        ]
    if not chosen:
        return None
    n = len(lb.index)
    features = np.zeros((n, 7))
    features[:, 2] = 1.0
    mask = np.zeros(n, dtype=bool)
    now = time.monotonic()
    for x in chosen:
        row = lb.index[x["node"]]
        capacity = number(x.get("capacity")) or lb.schedulers.get(x["node"], 1.0)
        cpu = min(max(number(x.get("cpu"), 0.0) or 0.0, 0.0), 1.0)
        busy = number(x.get("scheduler_utilization"))
        busy = cpu if busy is None else min(max(busy, 0.0), 1.0)
        rtt = number(x.get("rtt_ms"))
        features[row] = (
            cpu,
            number(x.get("memory"), 0.0),
            capacity,
            0.0,
            lb._in_flight(x["node"], now) + busy * capacity,
            capability_match(x, c),
            0.5 if rtt is None else 1.0 - 1.0 / (1.0 + rtt / 10.0),
        )
        mask[row] = True
    return features, mask


def _spy(choose: Any, seen: list[tuple[np.ndarray, np.ndarray]]) -> Any:
    """`choose`, recording the (features, mask) it is given."""

    def spy(features: Any, task: Any = None, mask: Any = None) -> int:
        seen.append((features.copy(), mask.copy()))
        return int(choose(features, task, mask))

    return spy


def test_vectorised_decisions_see_what_the_plain_loop_sees() -> None:
    """place and advise hand the model exactly the features and mask that building them one
    candidate at a time gives (so they choose the same node)."""
    rng = np.random.default_rng(11)
    caps = [Atom("gpu"), Atom("ssd")]
    for trial in range(40):
        reports = {}
        for i in range(int(rng.integers(1, 25))):
            load: dict[str, Any] = {
                "cpu": float(rng.random()),
                "memory": float(rng.random()),
                "free_memory_mb": int(rng.integers(0, 4000)),
                "agents": int(rng.integers(0, 9)),
                "capabilities": [cap for cap in caps if rng.random() < 0.5],
                "rtt_ms": float(rng.random() * 9),
                "kind": Atom("python") if rng.random() < 0.1 else Atom("beam"),
            }
            for key in ("scheduler_utilization", "capacity"):
                if rng.random() < 0.5:
                    load[key] = float(rng.integers(0, 3))
            load = {k: v for k, v in load.items() if rng.random() > 0.1}
            reports[f"n{i}@h"] = load
        lb = _lb_with(reports)
        for node in list(reports)[:2]:
            lb.on_health(
                Signal.new(
                    "cluster.health.data",
                    {
                        Atom("node"): Atom(node),
                        Atom("scheduler_utilization"): {Atom("per_scheduler"): [1, 2, 3]},
                    },
                    source="t",
                )
            )
        seen: list[tuple[np.ndarray, np.ndarray]] = []
        lb.model.choose = _spy(lb.model.choose, seen)  # type: ignore[method-assign]
        for _ in range(5):
            c = {}
            if rng.random() < 0.4:
                c[Atom("max_cpu")] = float(rng.random())
            if rng.random() < 0.3:
                c[Atom("capabilities")] = [caps[int(rng.integers(0, 2))]]
            if rng.random() < 0.3:
                c[Atom("prefer_capabilities")] = caps
            if rng.random() < 0.2:
                c[Atom("kinds")] = [Atom("python"), Atom("beam")]
            now = time.monotonic()
            cands = [s.candidate() for s in lb.view.nodes.values() if s.fresh(now, 5.0)]
            for call in ("place", "advise"):
                want = reference_inputs(lb, None, c, cands)
                seen.clear()
                got = lb.place(None, c) if call == "place" else lb.advise(None, c, cands)
                if want is None:
                    assert got in (NO_SUITABLE, NO_ADVICE) and not seen, (trial, call, c)
                    continue
                features, mask = seen[-1]
                assert np.array_equal(mask, want[1]), (trial, call, c)
                assert np.allclose(features[mask], want[0][mask], rtol=0, atol=1e-12)
                assert got[0] == "ok" and mask[lb.index[got[1]]]
