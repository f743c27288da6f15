"""Warm agents: learned state saved to a store and restored by a fresh agent (cluster/warm.py)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dspex_cluster import Atom
from dspex_cluster.cluster import FailureConfig, FailurePredictor, LoadBalancer
from dspex_cluster.cluster.health_monitor import HealthMonitor, NodeHealth
from dspex_cluster.cluster.warm import FileStateStore, default_store, node_state_dir

NODES = [f"w{i}@h" for i in range(4)]


def _candidates() -> list[dict[Atom, Any]]:
    return [
        {
            Atom("node"): Atom(n),
            Atom("kind"): Atom("beam"),
            Atom("status"): Atom("up"),
            Atom("cpu"): 0.1 * i,
        }
        for i, n in enumerate(NODES)
    ]


def _warm(agent: Any, store: FileStateStore) -> Any:
    agent.warm_store = store
    agent.setup()
    return agent


def _placements(lb: LoadBalancer, n: int = 40) -> list[Atom]:
    out = []
    for k in range(n):
        got = lb.advise({Atom("work"): 0.5 + (k % 5) * 0.5}, [], _candidates())
        assert got[0] == "ok"
        out.append(got[1])
    return out


def test_a_restarted_load_balancer_places_as_before(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path / "py1@h")
    lb = _warm(LoadBalancer(), store)
    rng = np.random.default_rng(3)
    speeds = {n: s for n, s in zip(NODES, (1.0, 3.0, 0.5, 2.0), strict=True)}
    for _ in range(60):  # outcomes teach it the nodes' speeds
        n = NODES[int(rng.integers(0, 4))]
        work = float(rng.uniform(0.5, 2.0))
        lb.outcome(Atom(n), {Atom("work"): work}, 1000.0 * work / speeds[n])
    assert lb.checkpoint() and not lb.checkpoint()  # saved once; nothing new to save after
    before = _placements(lb)
    cold = _placements(_warm(LoadBalancer(), FileStateStore(tmp_path / "other")))
    restarted = _warm(LoadBalancer(), store)
    assert restarted.restored
    np.testing.assert_array_equal(restarted.model.speed, lb.model.speed)
    assert _placements(restarted) == before
    assert cold != before  # a cold balancer places differently: the test can tell


def test_failure_history_survives_a_restart(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path)
    fp = _warm(FailurePredictor(FailureConfig()), store)
    wall = time.time()
    fp.first_seen = {Atom("a@h"): wall - 7200.0, Atom("b@h"): wall - 7200.0}
    fp.failure_log = [
        (Atom("a@h"), wall - 3000.0 + 100.0 * k, wall - 2990.0 + 100.0 * k) for k in range(5)
    ]
    fp._new_hazard(-math.inf)
    fp.first_seen[Atom("b@h")] = wall - 7200.0
    fp.hazard.add_node(Atom("b@h"), since_ts=wall - 7200.0)
    p = fp.history_probabilities([Atom("a@h"), Atom("b@h")], wall)
    assert fp.checkpoint()
    again = _warm(FailurePredictor(FailureConfig()), store)
    assert again.restored and again.failures == 5 and set(again.first_seen) == set(fp.first_seen)
    q = again.history_probabilities([Atom("a@h"), Atom("b@h")], wall)
    assert q == pytest.approx(p, rel=1e-9)


def test_health_baselines_survive_a_restart(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path)
    hm = _warm(HealthMonitor(), store)
    rng = np.random.default_rng(5)
    h = hm.anomaly.nodes[Atom("s@h")] = NodeHealth(["cpu", "memory"], hm.anomaly.policy)
    for _ in range(60):
        h.update({"cpu": 0.3 + float(rng.normal(0, 0.01)), "memory": 0.4})
    assert hm.checkpoint()
    again = _warm(HealthMonitor(), store)
    a, b = hm.anomaly.nodes[Atom("s@h")], again.anomaly.nodes[Atom("s@h")]
    assert again.restored and b.rows == a.rows == 60
    for cpu in (0.31, 0.9):  # the same next scores: same baselines
        got = b.update({"cpu": cpu, "memory": 0.4})
        assert got == pytest.approx(a.update({"cpu": cpu, "memory": 0.4}), rel=1e-9, abs=1e-12)


def test_a_damaged_state_file_means_a_cold_start(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path)
    (tmp_path / "dspex_load_balancer.json").write_text('{"nodes": ["x@h"], "model": 3')
    lb = _warm(LoadBalancer(), store)
    assert not lb.restored and lb.index == {}
    store.save("dspex_load_balancer", {"nodes": ["x@h"], "schedulers": {}, "model": 7})
    lb = _warm(LoadBalancer(), store)  # well-formed JSON, wrong shape: cold too
    assert not lb.restored and lb.index == {}
    with pytest.raises(ValueError):
        store.save("../escape", {})


def test_state_directory_per_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSPEX_STATE_DIR", raising=False)
    assert default_store("py1@127.0.0.1") is None  # no directory: cold starts, nothing written
    monkeypatch.setenv("DSPEX_STATE_DIR", str(tmp_path))
    store = default_store("py1@127.0.0.1")
    assert store is not None and store.directory == node_state_dir(tmp_path, "py1@127.0.0.1")
    explicit = default_store("py1@127.0.0.1", str(tmp_path / "x"))
    assert explicit is not None and explicit.directory.parent == tmp_path / "x"
