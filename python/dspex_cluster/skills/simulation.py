"""Discrete-event simulation of tasks placed on nodes by a placement policy.

Model. Each node has ``cores`` parallel servers, one FIFO queue and a speed; a task of ``work``
seconds runs ``work / speed`` seconds on one server. A ``slowdown`` event divides the node's speed
(``speedup`` multiplies it, ``set_speed`` sets it); tasks already running keep the work they have
done and finish their remaining work at the new speed. Tasks never move once placed.

What policies see. The true speeds are hidden. Every ``report_interval_s`` seconds each node reports
its task count, busy servers and the run times of the tasks that finished since the last report (as
a kubelet reports pod status); between reports a policy sees the last report. The learned policy
also uses what a placer knows without any report: the tasks it placed itself, with their work
estimates. ``report_interval_s=0`` gives every policy fresh state (used to validate the simulator
against the supermarket model's closed form).

The event loop is a heapq of completions merged with the sorted arrivals and speed events; reports
are taken lazily (state is constant between events, so one snapshot, stamped with the latest report
time, stands for every report time that passed since the previous event).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from heapq import heappop, heappush
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .placement import (
    CAPABILITY,
    CAPACITY,
    LATENCY,
    LOAD,
    MEMORY,
    POLICIES,
    QUEUE,
    LearnedPlacer,
    make_policy,
)

# Extra simulator-only reference policies (not in POLICIES): ablations for the benchmark.
# ``learned_known_speeds``: the learned placer told every node's true initial speed (no cold
# start; it still learns, e.g. a later slowdown) -- what learning the speeds costs.
EXTRA_POLICIES = ("least_loaded_tracked", "learned_known_speeds")

Completion = tuple[int, int, float, float]  # (node, task, work estimate, run time in seconds)
FloatArray = NDArray[np.float64]


class _StaticAdapter:
    """Feeds a baseline policy the node feature matrix built from the latest reports."""

    def __init__(self, policy: Any, cores: Sequence[int], fresh: bool) -> None:
        self.policy = policy
        n = len(cores)
        self.cores = np.asarray(cores, dtype=float)
        self.features = np.zeros((n, 7))
        self.features[:, CAPACITY] = self.cores
        self.features[:, CAPABILITY] = 1.0
        self.uses_reports = policy.name not in ("round_robin", "random")
        self.live = fresh and self.uses_reports  # fresh mode: the simulator writes state directly
        self.report_each_decision = False

    def on_report(
        self,
        t: float,
        counts: FloatArray,
        busy: FloatArray,
        elapsed: FloatArray,
        done: list[Completion],
        running: Callable[[int], dict[int, float]],
    ) -> None:
        f = self.features
        f[:, QUEUE] = counts
        f[:, LOAD] = busy / self.cores
        f[:, MEMORY] = f[:, LOAD]  # memory is not modelled: it follows the slots in use
        if done:
            arr = np.asarray(done)
            nodes = arr[:, 0].astype(int)
            cnt = np.bincount(nodes, minlength=f.shape[0])
            tot = np.bincount(nodes, weights=arr[:, 3], minlength=f.shape[0])
            seen = cnt > 0
            f[seen, LATENCY] = tot[seen] / cnt[seen]

    def set_live(self, i: int, count: int, busy: int) -> None:
        self.features[i, QUEUE] = count
        self.features[i, LOAD] = busy / self.cores[i]

    def choose(self, t: float, k: int, work: float) -> int:
        return int(self.policy.choose(self.features))


class _TrackedLeastLoaded:
    """Least tasks per slot, counting the placer's own placements since the last report."""

    def __init__(self, cores: Sequence[int], seed: int) -> None:
        self.cores = np.asarray(cores, dtype=float)
        self.count = np.zeros(len(cores))
        self.rng = np.random.default_rng(seed)
        self.uses_reports = True
        self.live = False
        self.report_each_decision = False
        self._jitter = self.rng.random(len(cores)) * 0.5 / self.cores.max()

    def on_report(
        self,
        t: float,
        counts: FloatArray,
        busy: FloatArray,
        elapsed: FloatArray,
        done: list[Completion],
        running: Callable[[int], dict[int, float]],
    ) -> None:
        self.count = counts.copy()
        self._jitter = self.rng.random(counts.shape[0]) * 0.5 / self.cores.max()

    def choose(self, t: float, k: int, work: float) -> int:
        i = int(np.argmin(self.count / self.cores + self._jitter))
        self.count[i] += 1.0
        return i


class _LearnedAdapter:
    """Runs ``LearnedPlacer``: finished runs and start times reach it with each report."""

    def __init__(
        self, cores: Sequence[int], seed: int, options: Mapping[str, Any], fresh: bool
    ) -> None:
        self.placer = LearnedPlacer(cores, seed=seed, **options)
        self.uses_reports = True
        self.live = False
        self.report_each_decision = fresh

    def on_report(
        self,
        t: float,
        counts: FloatArray,
        busy: FloatArray,
        elapsed: FloatArray,
        done: list[Completion],
        running: Callable[[int], dict[int, float]],
    ) -> None:
        finished = self.placer.finished
        for i, k, w, run_s in done:
            finished(i, k, run_s, w)  # the raw estimate: the model calibrates it
        self.placer.sync(t, running, busy)

    def choose(self, t: float, k: int, work: float) -> int:
        return self.placer.place(t, k, work)


def _adapter(
    name: str,
    cores: Sequence[int],
    seed: int,
    options: Mapping[str, Any],
    fresh: bool,
    speeds: Sequence[float],
) -> Any:
    if name == "learned":
        return _LearnedAdapter(cores, seed, options, fresh)
    if name == "learned_known_speeds":
        return _LearnedAdapter(cores, seed, {**options, "known_speeds": list(speeds)}, fresh)
    if name == "least_loaded_tracked":
        return _TrackedLeastLoaded(cores, seed)
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES + EXTRA_POLICIES)}")
    return _StaticAdapter(make_policy(name, seed=seed, **options), cores, fresh)


_SPEED_EVENTS = ("slowdown", "speedup", "set_speed")


def simulate(
    policy: str,
    nodes: Sequence[Mapping[str, float]],
    tasks: Iterable[tuple[float, float]] | NDArray[np.float64],
    events: Iterable[tuple[float, int, str, float]] = (),
    seed: int = 0,
    *,
    report_interval_s: float = 1.0,
    warmup_fraction: float = 0.0,
    work_estimate_noise: float = 0.0,
    policy_options: Mapping[str, Any] | None = None,
    return_latencies: bool = False,
) -> dict[str, Any]:
    """Run every task to completion under ``policy``; latency statistics in seconds.

    ``nodes``: ``{"speed": float, "cores": int}`` each (defaults 1.0 and 1). ``tasks``:
    ``(arrival_s, work_s)`` pairs, any order. ``events``: ``(t_s, node_index, kind, value)`` with
    kind ``slowdown`` (speed /= value), ``speedup`` (speed *= value) or ``set_speed``.
    ``warmup_fraction``: share of the earliest-arriving tasks left out of the statistics.
    ``work_estimate_noise``: the placer sees ``work * exp(sigma * z)`` instead of the true work.

    Returns ``mean_s``, ``p50_s``, ``p99_s`` (time from arrival to completion), ``max_queue`` (the
    most tasks ever waiting, not yet started, at one node), ``tasks`` (how many were measured),
    ``p99_stretch`` (99th percentile of latency / work) and, with ``return_latencies``,
    ``latencies_s`` (per measured task, in arrival order).
    """
    speed = [float(nd.get("speed", 1.0)) for nd in nodes]
    cores = [int(nd.get("cores", 1)) for nd in nodes]
    n_nodes = len(speed)
    if n_nodes == 0 or min(cores) < 1 or min(speed) <= 0.0:
        raise ValueError("need at least one node, each with cores >= 1 and speed > 0")
    tk = np.asarray(tasks, dtype=float).reshape(-1, 2)
    order = np.argsort(tk[:, 0], kind="stable")
    arrivals: list[float] = tk[order, 0].tolist()
    work: list[float] = tk[order, 1].tolist()
    n_tasks = len(arrivals)
    if n_tasks == 0:
        raise ValueError("no tasks")
    if min(work) <= 0.0:
        raise ValueError("every task needs work > 0")

    policy_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)
    )
    policy_seed = int(policy_rng.integers(2**31))
    if work_estimate_noise > 0.0:
        est = (
            tk[order, 1] * np.exp(work_estimate_noise * noise_rng.standard_normal(n_tasks))
        ).tolist()
    else:
        est = work

    ev = sorted((float(t), int(i), str(kind), float(v)) for t, i, kind, v in events)
    for _, i, kind, v in ev:
        if kind not in _SPEED_EVENTS or not 0 <= i < n_nodes or v <= 0.0:
            raise ValueError(f"bad event for node {i}: {kind} {v}")

    fresh = report_interval_s <= 0.0
    adapter = _adapter(policy, cores, policy_seed, policy_options or {}, fresh, speed)
    interval = float(report_interval_s)
    reporting = adapter.uses_reports and not adapter.live
    live = adapter.live
    collect = reporting or adapter.report_each_decision  # someone will read the finished runs
    choose = adapter.choose

    busy = [0] * n_nodes
    in_system = [0] * n_nodes
    start_sum = [0.0] * n_nodes  # sum of start times of running tasks: elapsed = busy*t - start_sum
    queues: list[deque[int]] = [deque() for _ in range(n_nodes)]
    running: list[set[int]] = [set() for _ in range(n_nodes)]
    node_of = [0] * n_tasks
    start = [0.0] * n_tasks
    seg_start = [0.0] * n_tasks  # when the current speed segment of a running task began
    remaining = list(work)
    version = [0] * n_tasks  # bumped when a speed change re-times a running task
    latency = np.empty(n_tasks)
    done: list[Completion] = []
    heap: list[tuple[float, int, int]] = []
    max_queue = 0
    next_report = 0.0 if reporting and not fresh else math.inf

    def running_starts(i: int) -> dict[int, float]:
        return {k: start[k] for k in running[i]}

    def report(t: float) -> None:
        nonlocal done
        b = np.array(busy, dtype=float)
        elapsed = b * t - np.array(start_sum)
        adapter.on_report(t, np.array(in_system, dtype=float), b, elapsed, done, running_starts)
        done = []

    inf = math.inf
    j = 0
    e = 0
    n_ev = len(ev)
    while True:
        ta = arrivals[j] if j < n_tasks else inf
        tc = heap[0][0] if heap else inf
        te = ev[e][0] if e < n_ev else inf
        if tc <= ta and tc <= te:
            if tc == inf:
                break
            t, k, v = heappop(heap)
            if v != version[k]:
                continue  # superseded by a re-timing after a speed change
            if t >= next_report:
                last = next_report + math.floor((t - next_report) / interval) * interval
                report(last)
                next_report = last + interval
            i = node_of[k]
            latency[k] = t - arrivals[k]
            running[i].discard(k)
            start_sum[i] -= start[k]
            if collect:
                done.append((i, k, est[k], t - start[k]))
            q = queues[i]
            if q:
                k2 = q.popleft()
                start[k2] = seg_start[k2] = t
                start_sum[i] += t
                running[i].add(k2)
                heappush(heap, (t + work[k2] / speed[i], k2, 0))
            else:
                busy[i] -= 1
            in_system[i] -= 1
            if live:
                adapter.set_live(i, in_system[i], busy[i])
        elif te <= ta:
            t, i, kind, v = ev[e]
            e += 1
            old = speed[i]
            new = old / v if kind == "slowdown" else old * v if kind == "speedup" else v
            for k in running[i]:
                remaining[k] -= (t - seg_start[k]) * old
                seg_start[k] = t
                version[k] += 1
                heappush(heap, (t + max(remaining[k], 0.0) / new, k, version[k]))
            speed[i] = new
        else:
            t = ta
            k = j
            j += 1
            if t >= next_report:
                last = next_report + math.floor((t - next_report) / interval) * interval
                report(last)
                next_report = last + interval
            elif adapter.report_each_decision:
                report(t)
            i = choose(t, k, est[k])
            node_of[k] = i
            in_system[i] += 1
            if busy[i] < cores[i]:
                busy[i] += 1
                start[k] = seg_start[k] = t
                start_sum[i] += t
                running[i].add(k)
                heappush(heap, (t + work[k] / speed[i], k, 0))
            else:
                queues[i].append(k)
                if len(queues[i]) > max_queue:
                    max_queue = len(queues[i])
            if live:
                adapter.set_live(i, in_system[i], busy[i])

    skip = int(warmup_fraction * n_tasks)
    measured = latency[skip:]
    p50, p99 = np.percentile(measured, [50.0, 99.0])
    out: dict[str, Any] = {
        "mean_s": float(measured.mean()),
        "p50_s": float(p50),
        "p99_s": float(p99),
        "max_queue": int(max_queue),
        "tasks": int(measured.size),
        # latency per second of work: how much longer than alone on a speed-1 slot
        "p99_stretch": float(np.percentile(measured / tk[order, 1][skip:], 99.0)),
    }
    if return_latencies:
        out["latencies_s"] = measured
    return out
