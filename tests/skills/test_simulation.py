"""The discrete-event placement simulator: closed-form validation, determinism, every policy."""

from __future__ import annotations

import numpy as np
import pytest

from dspex_cluster.skills.placement import POLICIES, simulate


def supermarket_tasks(n_nodes: int, n_tasks: int, load: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / (load * n_nodes), n_tasks))
    return np.column_stack([arrivals, rng.exponential(1.0, n_tasks)])


def power_of_d_mean(load: float, d: int) -> float:
    """Mean time in system of the supermarket model, N -> infinity (Mitzenmacher)."""
    if d == 1:
        return 1.0 / (1.0 - load)
    return sum(load ** ((d**i - d) / (d - 1)) for i in range(1, 40))


def test_closed_form_values() -> None:
    assert power_of_d_mean(0.9, 1) == pytest.approx(10.0)
    assert power_of_d_mean(0.9, 2) == pytest.approx(2.6145, abs=1e-3)


@pytest.mark.parametrize(
    ("policy", "d", "n_nodes", "n_tasks"), [("random", 1, 50, 600_000), ("p2c", 2, 500, 300_000)]
)
def test_supermarket_model_within_5_percent(
    policy: str, d: int, n_nodes: int, n_tasks: int
) -> None:
    # random choice: every queue is an M/M/1 at load 0.9 (long memory: many tasks per queue);
    # two choices: the large-N limit, so many nodes. Fresh queue lengths (report interval 0).
    tasks = supermarket_tasks(n_nodes, n_tasks, 0.9, seed=7)
    nodes = [{"speed": 1.0, "cores": 1}] * n_nodes
    r = simulate(policy, nodes, tasks, seed=7, report_interval_s=0.0, warmup_fraction=0.2)
    assert r["mean_s"] == pytest.approx(power_of_d_mean(0.9, d), rel=0.05)


def test_single_server_fifo_by_hand() -> None:
    # one node, one core, speed 2: (0, 4) runs 0..2; (1, 2) waits from 1 to 2, runs 2..3
    r = simulate(
        "round_robin", [{"speed": 2.0, "cores": 1}], [(1.0, 2.0), (0.0, 4.0)], return_latencies=True
    )
    assert r["latencies_s"].tolist() == pytest.approx([2.0, 2.0])
    assert r["max_queue"] == 1
    # two cores: nobody waits
    r = simulate(
        "round_robin", [{"speed": 2.0, "cores": 2}], [(1.0, 2.0), (0.0, 4.0)], return_latencies=True
    )
    assert r["latencies_s"].tolist() == pytest.approx([2.0, 1.0])
    assert r["max_queue"] == 0
    r2 = simulate(
        "round_robin", [{"speed": 1.0, "cores": 1}], [(0.0, 4.0), (1.0, 2.0)], return_latencies=True
    )
    assert r2["latencies_s"].tolist() == pytest.approx([4.0, 5.0])
    assert r2["max_queue"] == 1


def test_slowdown_retimes_the_running_task() -> None:
    # 4 s of work at speed 1; at t=1 the node slows 3x: 3 s left take 9 s -> done at 10
    r = simulate(
        "random", [{"speed": 1.0}], [(0.0, 4.0)], [(1.0, 0, "slowdown", 3.0)], return_latencies=True
    )
    assert r["latencies_s"][0] == pytest.approx(10.0)


def small_heterogeneous_case(seed: int = 3) -> tuple[list[dict[str, float]], np.ndarray]:
    rng = np.random.default_rng(seed)
    nodes = [{"speed": float(s), "cores": 2} for s in rng.permutation(np.geomspace(0.5, 2.0, 8))]
    capacity = sum(n["speed"] * n["cores"] for n in nodes)
    n = 4000
    arrivals = np.cumsum(rng.exponential(1.0 / (0.8 * capacity), n))
    return nodes, np.column_stack([arrivals, rng.exponential(1.0, n)])


@pytest.mark.parametrize("policy", [*POLICIES, "least_loaded_tracked", "learned_known_speeds"])
def test_every_policy_runs_and_is_deterministic(policy: str) -> None:
    nodes, tasks = small_heterogeneous_case()
    events = [(float(tasks[len(tasks) // 2, 0]), 0, "slowdown", 3.0)]
    a = simulate(policy, nodes, tasks, events, seed=11, report_interval_s=0.5)
    b = simulate(policy, nodes, tasks, events, seed=11, report_interval_s=0.5)
    assert a == b
    assert a["tasks"] == len(tasks)
    assert 0.0 < a["p50_s"] <= a["p99_s"]
    assert a["mean_s"] >= tasks[:, 1].min() / 2.0


def test_seed_changes_random_policy() -> None:
    nodes, tasks = small_heterogeneous_case()
    assert simulate("random", nodes, tasks, seed=1) != simulate("random", nodes, tasks, seed=2)


def test_learned_beats_round_robin_on_heterogeneous_nodes() -> None:
    nodes, tasks = small_heterogeneous_case()
    rr = simulate("round_robin", nodes, tasks, seed=0, report_interval_s=0.5)
    learned = simulate("learned", nodes, tasks, seed=0, report_interval_s=0.5)
    assert learned["p99_s"] < 0.5 * rr["p99_s"]
    assert learned["mean_s"] < 0.5 * rr["mean_s"]


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        simulate("nope", [{"speed": 1.0}], [(0.0, 1.0)])
    with pytest.raises(ValueError):
        simulate("random", [{"speed": 1.0}], [(0.0, 1.0)], [(0.0, 5, "slowdown", 2.0)])
    with pytest.raises(ValueError):
        simulate("random", [{"speed": 1.0}], [(0.0, -1.0)])


def test_tail_rule_changes_little_on_equal_nodes() -> None:
    # every node is in the "slower half": a tail task still gets (about) its earliest finish
    rng = np.random.default_rng(0)
    work = rng.pareto(1.3, 3000) + 1.0
    arrivals = np.cumsum(rng.exponential(work.mean() / (0.8 * 12), 3000))
    tasks = np.column_stack([arrivals, work])
    nodes = [{"speed": 1.0, "cores": 2}] * 6
    on = simulate("learned", nodes, tasks, seed=0, report_interval_s=0.5)
    off = simulate(
        "learned",
        nodes,
        tasks,
        seed=0,
        report_interval_s=0.5,
        policy_options={"tail_quantile": None},
    )
    assert on["p99_s"] == pytest.approx(off["p99_s"], rel=0.03)
    assert on["mean_s"] == pytest.approx(off["mean_s"], rel=0.03)


def test_known_speeds_spare_the_learned_placer_its_cold_start() -> None:
    # a few long tasks first (placed blind by the learner), then short ones
    nodes = [{"speed": s, "cores": 1} for s in (0.25, 0.25, 0.25, 2.0)]
    tasks = [(0.0, 8.0), (0.1, 8.0), (0.2, 8.0), (0.3, 8.0), (40.0, 1.0), (40.1, 1.0)]
    known = simulate(
        "learned_known_speeds", nodes, tasks, seed=0, report_interval_s=0.5, return_latencies=True
    )
    # every long task queues on the fast node (4 s each) rather than run 32 s on a slow one
    assert known["latencies_s"].tolist() == pytest.approx([4.0, 7.9, 11.8, 15.7, 0.5, 0.9])
    blind = simulate("learned", nodes, tasks, seed=0, report_interval_s=0.5)
    assert blind["p99_s"] > 30.0  # the learner has to place the long ones before it knows
