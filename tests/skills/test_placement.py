"""PlacementModel and the baseline policies: constraints, learning, exploration, the API."""

from __future__ import annotations

import numpy as np
import pytest

from dspex_cluster.skills import placement
from dspex_cluster.skills.placement import (
    BACKLOG,
    CAPABILITY,
    CAPACITY,
    MEMORY,
    NETWORK,
    NODE_FEATURES,
    POLICIES,
    QUEUE,
    PlacementModel,
    WeightedScorePolicy,
    make_policy,
)


def features(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = np.zeros((n, len(NODE_FEATURES)))
    f[:, CAPACITY] = 4.0
    f[:, CAPABILITY] = 1.0
    f[:, QUEUE] = rng.integers(0, 3, n)
    f[:, MEMORY] = rng.random(n) * 0.5
    return f


def test_simulate_is_exported_from_placement() -> None:
    from dspex_cluster.skills.placement import simulate
    from dspex_cluster.skills.simulation import simulate as sim

    assert simulate is sim
    with pytest.raises(AttributeError):
        placement.no_such_name  # noqa: B018


@pytest.mark.parametrize("name", POLICIES)
def test_every_policy_respects_the_feasible_mask(name: str) -> None:
    policy = make_policy(name, seed=1)
    f = features(50)
    mask = np.zeros(50, dtype=bool)
    mask[[7, 23, 41]] = True
    for _ in range(30):
        assert policy.choose(f, {"work": 1.0}, mask) in (7, 23, 41)
    assert policy.choose(f, {"work": 1.0}, np.zeros(50, dtype=bool)) == -1


@pytest.mark.parametrize("name", POLICIES)
def test_every_policy_respects_task_constraints(name: str) -> None:
    policy = make_policy(name, seed=2)
    f = features(20)
    f[:, CAPABILITY] = 0.0
    f[[3, 9], CAPABILITY] = 1.0
    f[3, CAPACITY] = 2.0  # too small for the task below
    f[:, NETWORK] = 0.1
    for _ in range(20):
        i = policy.choose(
            f, {"work": 1.0, "min_capability": 1.0, "min_capacity": 4.0, "max_network": 0.5}
        )
        assert i == 9
    f[:, MEMORY] = 0.9
    assert policy.choose(f, {"memory": 0.5}) == -1


def test_learned_model_learns_a_slow_node_and_avoids_it() -> None:
    n = 10
    model = PlacementModel(n, seed=0)
    true_speed = np.ones(n)
    true_speed[4] = 1.0 / 3.0
    f = features(n)
    f[:, QUEUE] = 0.0  # idle cluster: the choice is about speed only
    rng = np.random.default_rng(5)
    for _ in range(300):
        i = model.choose(f, {"work": 1.0})
        work = float(rng.exponential(1.0))
        model.observe(i, {"work": work}, work / true_speed[i])
    assert model.speed[4] == pytest.approx(1.0 / 3.0, rel=0.05)
    assert np.delete(model.speed, 4) == pytest.approx(1.0, rel=0.05)
    picks = [model.choose(f, {"work": 1.0}) for _ in range(50)]
    assert 4 not in picks
    why = model.explain(4, f, {"work": 1.0})
    assert why["speed_estimate"] == pytest.approx(1.0 / 3.0, rel=0.05)
    assert why["rank"] == n - 1  # the slow node ranks last


def test_learned_model_tracks_a_slowdown_and_a_recovery() -> None:
    model = PlacementModel(2, seed=0)
    for _ in range(20):
        model.observe(0, {"work": 2.0}, 2.0)
    for _ in range(8):
        model.observe(0, {"work": 2.0}, 6.0)  # slowed 3x
    assert model.speed[0] == pytest.approx(1.0 / 3.0, rel=0.1)
    for _ in range(8):
        model.observe(0, {"work": 2.0}, 2.0)  # recovered
    assert model.speed[0] == pytest.approx(1.0, rel=0.1)


def test_exploration_tries_unobserved_nodes() -> None:
    n = 6
    model = PlacementModel(n, seed=0)
    f = features(n)
    f[:, QUEUE] = 0.0
    tried = set()
    for _ in range(n):
        i = model.choose(f, {"work": 1.0})
        tried.add(i)
        model.observe(i, {"work": 1.0}, 1.0)  # every node as fast as the prior
    assert tried == set(range(n))  # optimism: each unknown node looks better than a known one


def test_predicted_completion_uses_backlog_and_speed() -> None:
    model = PlacementModel(2, seed=0, optimism=0.0)
    for _ in range(5):
        model.observe(0, {"work": 1.0}, 0.5)  # node 0: speed 2
        model.observe(1, {"work": 1.0}, 1.0)  # node 1: speed 1
    f = np.zeros((2, len(NODE_FEATURES)))
    f[:, CAPACITY] = 1.0
    f[:, CAPABILITY] = 1.0
    f[0, QUEUE] = 1.0
    f[0, BACKLOG] = 10.0  # node 0 busy with 10 s of work at speed 2 -> waits 5 s
    s = model.scores(f, {"work": 2.0})
    assert s[0] == pytest.approx(5.0 + 1.0, rel=0.01)
    assert s[1] == pytest.approx(2.0, rel=0.01)
    assert model.choose(f, {"work": 2.0}) == 1
    f[0, BACKLOG] = 0.5
    assert model.choose(f, {"work": 2.0}) == 0  # short wait on the fast node wins


def test_network_cost_counts_in_the_score() -> None:
    model = PlacementModel(2, seed=0, optimism=0.0)
    f = features(2)
    f[:, QUEUE] = 0.0
    f[0, NETWORK] = 1.0
    assert model.choose(f, {"work": 1.0, "network_cost_s": 5.0}) == 1


def test_weighted_baseline_prefers_headroom() -> None:
    f = features(3)
    f[:, QUEUE] = [4.0, 0.0, 4.0]
    f[:, 0] = [1.0, 0.0, 1.0]  # load
    f[:, MEMORY] = 0.2
    assert WeightedScorePolicy(seed=0).choose(f) == 1


def test_choose_is_deterministic_with_a_seed() -> None:
    f = features(100)
    for name in POLICIES:
        a, b = make_policy(name, seed=4), make_policy(name, seed=4)
        assert [a.choose(f, {"work": 1.0}) for _ in range(20)] == [
            b.choose(f, {"work": 1.0}) for _ in range(20)
        ]


def test_unknown_policy() -> None:
    with pytest.raises(ValueError):
        make_policy("best_effort")


def test_exact_work_estimates_are_not_shrunk() -> None:
    model = PlacementModel(4, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(200):
        w = float(rng.lognormal(3.0, 1.5))
        model.observe(int(rng.integers(4)), {"work": w}, w)
    assert model.effective_work(7.0) == 7.0
    assert model.effective_work(5000.0) == 5000.0


def test_rough_work_estimates_are_shrunk_and_speeds_stay_unbiased() -> None:
    # equal nodes, estimates off by a log-normal factor (sigma 1), and a placer that sends small
    # estimates to nodes 0-3 and large ones to 4-7: small estimates are underestimates on average,
    # so without shrinkage nodes 0-3 would look slow and 4-7 fast
    n = 8
    model = PlacementModel(n, seed=1)
    rng = np.random.default_rng(2)
    for _ in range(4000):
        work = float(rng.lognormal(5.0, 1.2))
        estimate = work * float(np.exp(rng.standard_normal()))
        i = int(rng.integers(4)) + (4 if estimate > np.exp(5.0) else 0)
        model.observe(i, {"work": estimate}, work)
    assert 0.4 < model.noise_var < 1.5
    big = model.effective_work(np.exp(9.0))
    assert np.exp(5.0) < big < np.exp(9.0)  # pulled toward the typical task
    log_speed = np.log(model.speed)
    # no systematic split between the two groups (about -1.0 without shrinkage), only noise
    assert abs(log_speed[:4].mean() - log_speed[4:].mean()) < 0.35
    assert np.abs(log_speed).max() < 0.7


def test_learned_placer_books_tasks_and_learns_from_reports() -> None:
    from dspex_cluster.skills.placement import LearnedPlacer

    placer = LearnedPlacer([1, 1, 1], seed=0)
    # node 2 is slow (speed 0.25); teach it through finished runs
    where = {k: placer.place(0.0, ("warm", k), 1.0) for k in range(3)}
    assert sorted(where.values()) == [0, 1, 2]  # idle nodes, optimism: each unknown one tried
    for k, i in where.items():
        placer.finished(i, ("warm", k), 4.0 if i == 2 else 1.0)
    placer.sync(4.0, started=lambda i: {})
    assert placer.model.speed[2] == pytest.approx(0.25, rel=0.05)
    assert all(placer.outstanding(i) == 0 for i in range(3))
    # two long tasks fill nodes 0 and 1; a third goes behind one of them, not to the slow node
    a = placer.place(10.0, "a", 10.0)
    b = placer.place(10.0, "b", 10.0)
    assert {a, b} == {0, 1}
    assert placer.place(10.0, "c", 10.0) in (0, 1)  # waits 10 s + runs 10 s < 40 s on node 2
    assert placer.place(10.0, "d", 1.0) == 2  # 4 s on the idle slow node beats waiting 10 s
    mask = np.array([False, False, True])
    assert placer.place(10.0, "e", 1.0, feasible_mask=mask) == 2
    assert placer.place(10.0, "f", 1.0, feasible_mask=np.zeros(3, dtype=bool)) == -1


def test_equal_nodes_measured_roughly_share_one_speed() -> None:
    # rough work estimates make every node's own estimate noisy; pooling toward the cluster mean
    # (the real spread between nodes is ~0 here) removes the noise that would herd tasks
    n = 12
    model = PlacementModel(n, seed=0)
    rng = np.random.default_rng(4)
    for _ in range(6000):
        work = float(rng.exponential(600.0))
        estimate = work * float(np.exp(rng.standard_normal()))
        model.observe(int(rng.integers(n)), {"work": estimate}, work)
    raw_spread = float(np.std(model._log_speed))
    pooled_spread = float(np.std(np.log(model.speed)))
    assert raw_spread > 0.1
    assert pooled_spread < 0.5 * raw_spread


def test_a_task_running_past_its_predicted_end_caps_the_speed_estimate() -> None:
    model = PlacementModel(3, seed=0, optimism=0.0)
    for i in range(3):
        model.observe_run(i, 1.0, 1.0)  # every node looks like speed 1
    model.bound_speed(1, 10.0, 5.0)  # 10 s of work, still running after 5 s: no news
    assert model.speed[1] == pytest.approx(1.0, rel=0.01)
    model.bound_speed(1, 10.0, 40.0)  # still running after 40 s: speed < 0.25 (+ margin)
    assert model.speed[1] < 0.27
    assert model.finish_by_ready(np.zeros(3), 0.0, 1.0).argmax() == 1
    model.observe_run(1, 1.0, 1.0)  # a finished run replaces the bound
    assert model.speed[1] > 0.5


def test_learned_placer_notices_a_slow_node_before_anything_finishes_there() -> None:
    from dspex_cluster.skills.placement import LearnedPlacer

    placer = LearnedPlacer([1, 1], seed=0, tail_quantile=None)
    a = placer.place(0.0, "a", 10.0)  # both nodes unknown: one of them
    placer.sync(30.0, started=lambda i: {"a": 0.0} if i == a else {})  # 30 s and not done
    assert placer.model.speed[a] < 0.4
    assert placer.place(30.0, "b", 10.0) != a
    assert placer.ready_at[a] > 30.0  # a's slot is predicted busy a while longer


def learned_heterogeneous_placer(**options: float | None) -> tuple[object, np.ndarray]:
    from dspex_cluster.skills.placement import LearnedPlacer

    speeds = np.array([0.5, 0.7, 1.0, 1.4, 2.0, 0.6, 0.8, 1.8])
    placer = LearnedPlacer([1] * speeds.size, seed=0, **options)
    for i, s in enumerate(speeds):
        placer.model.observe_run(i, 1.0, 1.0 / s)  # one exact run on every node
    # many short tasks (all finished): the placer's latency history, p99 ~ 1 s
    for k in range(400):
        i = placer.place(10.0 + k, k, 1.0)
        placer.finished(i, k, 1.0 / speeds[i])
        placer.sync(11.0 + k, started=lambda i: {})
    return placer, speeds


def test_a_task_bound_for_the_tail_anyway_leaves_the_fast_nodes_free() -> None:
    placer, speeds = learned_heterogeneous_placer(tail_quantile=0.99)
    assert placer.tail_latency_s < 2.0
    before = placer.tail_placements  # ~1 % of the short tasks were in the tail too
    i = placer.place(500.0, "huge", 50.0)  # >= 25 s anywhere: in the tail whatever happens
    assert speeds[i] <= np.median(speeds)
    assert 50.0 / speeds[i] <= 3.0 * 50.0 / speeds.max()  # within tail_stretch of its best
    assert placer.tail_placements == before + 1
    j = placer.place(500.0, "small", 1.0)  # a task that can meet the p99 gets the fastest
    assert speeds[j] == speeds.max()
    off, _ = learned_heterogeneous_placer()  # the default: earliest finish for every task
    assert speeds[off.place(500.0, "huge", 50.0)] == speeds.max()


def test_learned_placer_refuses_bad_tail_options() -> None:
    from dspex_cluster.skills.placement import LearnedPlacer

    with pytest.raises(ValueError):
        LearnedPlacer([1], tail_quantile=1.0)
    with pytest.raises(ValueError):
        LearnedPlacer([1], tail_stretch=0.5)


def test_short_tasks_explore_unknown_nodes_long_ones_do_not() -> None:
    from dspex_cluster.skills.placement import LearnedPlacer

    placer = LearnedPlacer([4, 4], seed=0)
    for _ in range(5):
        placer.model.observe_run(0, 1.0, 1.0 / 1.1)  # node 0: speed 1.1, node 1 never seen
    assert placer.place(0.0, "short", 1.0) == 1  # optimism: the unknown node may be faster
    assert placer.place(0.0, "long", 20.0) == 0  # the known speed beats the prior's 1.0
    explorer = LearnedPlacer([4, 4], seed=0, explore_work=100.0)
    for _ in range(5):
        explorer.model.observe_run(0, 1.0, 1.0 / 1.1)
    assert explorer.place(0.0, "long", 20.0) == 1


def test_tasks_placed_blind_are_spread_over_the_nodes() -> None:
    from dspex_cluster.skills.placement import LearnedPlacer

    placer = LearnedPlacer([4] * 5, seed=0)
    picks = [placer.place(float(k), k, 100.0) for k in range(10)]  # nothing known yet
    assert np.bincount(picks, minlength=5).tolist() == [2] * 5
    placer.finished(picks[0], 0, 100.0)
    assert placer.outstanding(picks[0]) == 1


def test_equal_latencies_are_no_tail() -> None:
    from dspex_cluster.skills.placement import LearnedPlacer

    placer = LearnedPlacer([4] * 50, seed=0, tail_quantile=0.99)
    for k in range(1000):
        placer.place(k * 0.01, k, 2.0)  # every task alike: none is beyond the p99 of the others
    assert placer.tail_latency_s == pytest.approx(2.0)
    assert placer.tail_placements == 0


def test_assumed_speeds_are_a_starting_point_not_a_constraint() -> None:
    model = PlacementModel(3, seed=0, optimism=0.0)
    model.assume_speeds([0.5, 1.0, 2.0])
    assert model.speed == pytest.approx([0.5, 1.0, 2.0], rel=1e-3)
    for _ in range(30):
        model.observe_run(2, 1.0, 2.0)  # node 2 turns out to run at 0.5
    assert model.speed[2] == pytest.approx(0.5, rel=0.1)
    with pytest.raises(ValueError):
        model.assume_speeds([1.0, 0.0, 1.0])
