"""Placement and load-forecast benchmark: simulator validation, trace-driven policies, timing.

Usage: ``.venv/bin/python bench/bench_placement.py --out reports/bench`` (writes placement.json and
placement.png there). Reads the Alibaba openb trace and NAB series from $DSPEX_SHARED_DATA
(default <repo>/../shared/data).

1. Simulator validation: the supermarket model (N single-core unit-speed nodes, Poisson arrivals at
   load 0.9, exponential work of mean 1, fresh queue lengths) against its closed form: mean time in
   system sum_{i>=1} lam^((d^i - d)/(d - 1)) for d choices (10.0 for d = 1, 2.6145 for d = 2).
2. Trace-driven placement (Alibaba openb, openb_pod_list_default.csv):
   - tasks: the 7,255 pods that were scheduled (the 897 never-scheduled ones never ran);
   - arrivals: the pods' creation_time order and gaps; gaps longer than 1 h are cut to 1 h (75
     gaps, 79 % of the trace's span, are idle periods of up to 16 days), then every gap is scaled
     by one factor so that offered work / cluster capacity = the target utilisation (0.7 or 0.9);
   - work: CPU core-seconds the pod reserved, (deletion_time - scheduled_time) x cpu_milli / 1000,
     with the lifetime capped at 1 day (1.2 % of pods: long-running services whose lifetime the
     trace censors); a node slot runs it at the node's speed. Heavy tailed: the top 1 % of pods
     carry 39 % of the work;
   - clusters of 16 nodes x 4 slots: homogeneous (speed 1), heterogeneous (speeds 0.5-2x,
     geometric spacing, shuffled per seed), slowing (speed 1; one node, chosen per seed, slows 3x
     when half of the tasks have arrived);
   - reports every 10 s (the kubelet's default node-status period);
   - every policy, seeds 0, 1, 2 (seed: speeds' order, slowed node, policies' random draws).
   Extra references beside the six policies: ``least_loaded_tracked`` (shortest queue counting its
   own placements since the last report: what the learned policy knows, minus speeds and sizes),
   ``learned`` given work estimates off by a log-normal factor (sigma = 1), and
   ``learned_known_speeds``: the learned placer told the true initial speeds (not a fair policy:
   a bound showing what the cold start costs; at least the trace's first 27 tasks, all long,
   arrive before any task can finish, so every policy places them blind). In this simulator
   the seed's ``weighted`` score ranks nodes exactly as ``least_loaded`` does: all its inputs
   (CPU, memory, hosted tasks) derive from the reported task count, network and capability are
   uniform.
   The learned policy runs with its defaults. They were chosen on tuning seeds 100-102 (run this
   script with --seeds 100 101 102), never on the reported seeds 0-2; the policy's design (virtual
   FIFO schedule, Kalman speed filter, calibration of rough work estimates) was revised after a
   first run on seeds 0-2. The same holds for the later additions (speed capped by a task running
   past its predicted end; the tail rule that keeps tasks bound for the p99 tail anyway off the
   faster half of the nodes): options chosen on seeds 100-102, seeds 0-2 looked at along the way.
   The tail rule (``LearnedPlacer(tail_quantile=0.99)``) trades the largest tasks' own latency
   for the p99 and pays off only when aimed at exactly the measured quantile, so it is off by
   default: ``learned`` runs without it, ``learned_tail99`` with it, both reported. Every
   scenario also reports learned / best other for the mean, the p99.9 and the maximum latency.
3. Decision time among 1,000 nodes (median of many ``PlacementModel.choose`` and
   ``LearnedPlacer.place`` calls) beside the least-loaded baseline's ``choose`` and a bare
   ``np.argmin`` in the same run.
4. Load forecasting: ``LoadForecaster`` against the naive last value, one step ahead: the 8 NAB
   EC2 CPU-utilisation series (5-min samples) as 8 nodes; and the trace's hourly requested CPU
   (sum of cpu_milli of the pods alive) with a daily season.
5. A synthetic workload beside the trace (Poisson arrivals, exponential work of mean 600 s, same
   clusters), where queueing rather than task size sets the p99 latency. ``p99_stretch`` (99th
   percentile of latency / work) is reported for every run: on the trace the p99 latency is the
   size of the largest 1 % of tasks, which no placement can shorten on speed-1 nodes.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from datasets import data_root, require
from dspex_cluster.skills.forecast import LoadForecaster
from dspex_cluster.skills.placement import (
    NODE_FEATURES,
    POLICIES,
    LearnedPlacer,
    LeastLoadedPolicy,
    PlacementModel,
    simulate,
)
from machine_facts import machine_facts

REPO = Path(__file__).resolve().parent.parent
SEEDS = (0, 1, 2)
N_NODES = 16
CORES = 4
REPORT_S = 10.0
MAX_GAP_S = 3600.0
MAX_LIFETIME_S = 86400.0
EXTRA = ("least_loaded_tracked", "learned_noisy", "learned_known_speeds", "learned_tail99")
# the extra rows that are the learned policy run differently: (work-estimate noise, options)
LEARNED_VARIANTS: dict[str, tuple[float, dict[str, Any]]] = {
    "learned_noisy": (1.0, {}),
    "learned_tail99": (0.0, {"tail_quantile": 0.99}),
}


# ---- 1. supermarket validation --------------------------------------------------------------
def supermarket_closed_form(lam: float, d: int) -> float:
    if d == 1:
        return 1.0 / (1.0 - lam)
    return float(sum(lam ** ((d**i - d) / (d - 1)) for i in range(1, 40)))


def supermarket(scale: float, seed: int) -> dict[str, Any]:
    """Random choice on 200 nodes (every queue an M/M/1: long runs per queue needed), two choices
    on 1,000 nodes (the closed form is the N -> infinity limit)."""
    lam = 0.9
    out: dict[str, Any] = {"load": lam, "warmup_fraction": 0.2}
    for policy, d, n_nodes, n_tasks in (("random", 1, 200, 2_000_000), ("p2c", 2, 1000, 1_000_000)):
        n_tasks = int(n_tasks * scale)
        rng = np.random.default_rng(seed)
        arrivals = np.cumsum(rng.exponential(1.0 / (lam * n_nodes), n_tasks))
        tasks = np.column_stack([arrivals, rng.exponential(1.0, n_tasks)])
        nodes = [{"speed": 1.0, "cores": 1}] * n_nodes
        t0 = time.perf_counter()
        r = simulate(policy, nodes, tasks, seed=seed, report_interval_s=0.0, warmup_fraction=0.2)
        wall = time.perf_counter() - t0
        exact = supermarket_closed_form(lam, d)
        out[policy] = {
            "nodes": n_nodes,
            "tasks": n_tasks,
            "mean_s": r["mean_s"],
            "closed_form_s": exact,
            "rel_error": r["mean_s"] / exact - 1.0,
            "within_5pct": abs(r["mean_s"] / exact - 1.0) <= 0.05,
            "wall_s": wall,
            "us_per_task": wall / n_tasks * 1e6,
        }
    return out


# ---- 2. trace-driven placement --------------------------------------------------------------
def load_trace(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(gaps_s, work_s) of the scheduled pods, in creation order (see the module docstring)."""
    created, lifetime, cpu = [], [], []
    with path.open() as fh:
        for row in csv.DictReader(fh):
            if not row["scheduled_time"]:
                continue
            created.append(float(row["creation_time"]))
            lifetime.append(float(row["deletion_time"]) - float(row["scheduled_time"]))
            cpu.append(float(row["cpu_milli"]))
    order = np.argsort(np.asarray(created), kind="stable")
    c = np.asarray(created)[order]
    life = np.clip(np.asarray(lifetime)[order], 1.0, MAX_LIFETIME_S)
    work = life * np.asarray(cpu)[order] / 1000.0
    gaps = np.minimum(np.diff(c, prepend=c[0]), MAX_GAP_S)
    return gaps, work


def scaled_tasks(gaps: np.ndarray, work: np.ndarray, capacity: float, util: float) -> np.ndarray:
    factor = work.sum() / (util * capacity * gaps.sum())
    return np.column_stack([np.cumsum(gaps * factor), work])


def cluster(kind: str, seed: int, tasks: np.ndarray) -> tuple[list[dict[str, float]], list[Any]]:
    rng = np.random.default_rng(1000 + seed)
    if kind == "heterogeneous":
        speeds = rng.permutation(np.geomspace(0.5, 2.0, N_NODES))
    else:
        speeds = np.ones(N_NODES)
    nodes = [{"speed": float(s), "cores": CORES} for s in speeds]
    events: list[Any] = []
    if kind == "slowing":
        events = [(float(tasks[len(tasks) // 2, 0]), int(rng.integers(N_NODES)), "slowdown", 3.0)]
    return nodes, events


def synthetic_workload(seed: int, n_tasks: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """Poisson arrivals and exponential work of mean 600 s: queueing, not task size, sets p99."""
    rng = np.random.default_rng(5000 + seed)
    return rng.exponential(1.0, n_tasks), rng.exponential(600.0, n_tasks)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "mean_s": float(np.mean([r["mean_s"] for r in runs])),
        "p50_s": float(np.mean([r["p50_s"] for r in runs])),
        "p99_s": float(np.mean([r["p99_s"] for r in runs])),
        "p999_s": float(np.mean([r["p999_s"] for r in runs])),
        "max_s": float(np.mean([r["max_s"] for r in runs])),
        "p99_stretch": float(np.mean([r["p99_stretch"] for r in runs])),
        "max_queue": int(max(r["max_queue"] for r in runs)),
        "per_seed": runs,
    }


def run_scenarios(
    workload: str, seeds: tuple[int, ...], trace: tuple[np.ndarray, np.ndarray]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every policy x cluster x utilisation on one workload; p99 = mean over seeds of each p99."""
    results: dict[str, Any] = {}
    cdf_samples: dict[str, Any] = {}
    for util in (0.7, 0.9):
        for kind in ("homogeneous", "heterogeneous", "slowing"):
            key = f"{kind}@{util:.1f}"
            per_policy: dict[str, Any] = {}
            for policy in POLICIES + EXTRA:
                runs = []
                for seed in seeds:
                    gaps, work = trace if workload == "trace" else synthetic_workload(seed)
                    nodes0, _ = cluster(kind, seed, np.zeros((2, 2)))
                    capacity = sum(nd["speed"] * nd["cores"] for nd in nodes0)
                    tasks = scaled_tasks(gaps, work, capacity, util)
                    nodes, events = cluster(kind, seed, tasks)
                    name, (noise, options) = policy, (0.0, {})
                    if policy in LEARNED_VARIANTS:
                        name, (noise, options) = "learned", LEARNED_VARIANTS[policy]
                    t0 = time.perf_counter()
                    r = simulate(
                        name,
                        nodes,
                        tasks,
                        events,
                        seed=seed,
                        report_interval_s=REPORT_S,
                        work_estimate_noise=noise,
                        policy_options=options,
                        return_latencies=True,
                    )
                    r["wall_s"] = time.perf_counter() - t0
                    lat = r.pop("latencies_s")
                    r["p999_s"] = float(np.percentile(lat, 99.9))
                    r["max_s"] = float(lat.max())
                    if seed == seeds[0]:
                        cdf_samples.setdefault(key, {})[policy] = lat
                    runs.append(r)
                per_policy[policy] = summarise(runs)
            others = [p for p in POLICIES if p != "learned"]
            best = min(others, key=lambda p: per_policy[p]["p99_s"])
            ratio = per_policy["learned"]["p99_s"] / per_policy[best]["p99_s"]
            best_all = min(others + ["least_loaded_tracked"], key=lambda p: per_policy[p]["p99_s"])
            target = 1.05 if kind == "homogeneous" else 0.7
            results[key] = {
                "policies": per_policy,
                "best_other": best,
                "learned_p99_over_best_other": ratio,
                "best_incl_tracked": best_all,
                "learned_p99_over_best_incl_tracked": per_policy["learned"]["p99_s"]
                / per_policy[best_all]["p99_s"],
                "learned_noisy_p99_over_best_other": per_policy["learned_noisy"]["p99_s"]
                / per_policy[best]["p99_s"],
                "learned_known_speeds_p99_over_best_other": per_policy["learned_known_speeds"][
                    "p99_s"
                ]
                / per_policy[best]["p99_s"],
                "target_ratio_max": target,
                "target_met": ratio <= target,
                # the opt-in tail rule: its p99 gain and what it costs the largest tasks
                "learned_tail99_p99_over_best_other": per_policy["learned_tail99"]["p99_s"]
                / per_policy[best]["p99_s"],
                "learned_tail99_p999_over_best_other": per_policy["learned_tail99"]["p999_s"]
                / per_policy[best]["p999_s"],
                "learned_mean_over_best_other": per_policy["learned"]["mean_s"]
                / per_policy[best]["mean_s"],
                "learned_p999_over_best_other": per_policy["learned"]["p999_s"]
                / per_policy[best]["p999_s"],
                "learned_max_over_best_other": per_policy["learned"]["max_s"]
                / per_policy[best]["max_s"],
            }
            # a bound on what any placement can reach: tasks that would miss the target even
            # alone on the fastest node (1 % of tasks or more -> the target is unreachable)
            target_p99 = target * per_policy[best]["p99_s"]
            shares = []
            for seed in seeds:
                gaps_w, work_w = trace if workload == "trace" else synthetic_workload(seed)
                fastest = max(nd["speed"] for nd in cluster(kind, seed, np.zeros((2, 2)))[0])
                shares.append(float(np.mean(work_w / fastest > target_p99)))
            results[key]["share_of_tasks_missing_target_even_alone_on_fastest_node"] = float(
                np.mean(shares)
            )
            if kind == "slowing":
                # same tasks and seeds without the slowdown: what any policy could at best reach
                homog = results[f"homogeneous@{util:.1f}"]["policies"]
                floor = min(v["p99_s"] for v in homog.values())
                results[key]["no_slowdown_best_p99_s"] = floor
                results[key]["no_slowdown_floor_ratio"] = floor / per_policy[best]["p99_s"]
            print(
                f"  {workload:9s} {key:18s} learned p99 / best other ({best}) = {ratio:.3f}"
                f" (target <= {target}); noisy-estimate learned: "
                f"{results[key]['learned_noisy_p99_over_best_other']:.3f}; known speeds: "
                f"{results[key]['learned_known_speeds_p99_over_best_other']:.3f}; mean "
                f"{results[key]['learned_mean_over_best_other']:.3f}, p99.9 "
                f"{results[key]['learned_p999_over_best_other']:.3f}; tail rule p99 "
                f"{results[key]['learned_tail99_p99_over_best_other']:.3f}, p99.9 "
                f"{results[key]['learned_tail99_p999_over_best_other']:.3f}"
            )
    return results, cdf_samples


# ---- 3. decision time ------------------------------------------------------------------------
def node_matrix(n: int, rng: np.random.Generator) -> np.ndarray:
    f = np.empty((n, len(NODE_FEATURES)))
    f[:, 0] = rng.random(n)
    f[:, 1] = rng.random(n)
    f[:, 2] = rng.choice([2.0, 4.0, 8.0, 16.0], n)
    f[:, 3] = rng.exponential(1.0, n)
    f[:, 4] = rng.integers(0, 20, n)
    f[:, 5] = (rng.random(n) < 0.9).astype(float)
    f[:, 6] = rng.random(n)
    f[:, 7] = f[:, 4] * rng.exponential(1.0, n)
    return f


def median_us(fn: Any, reps: int) -> float:
    for _ in range(200):
        fn()
    times = np.empty(reps)
    clock = time.perf_counter_ns
    for k in range(reps):
        t0 = clock()
        fn()
        times[k] = clock() - t0
    return float(np.median(times) / 1000.0)


def decision_timing(n: int = 1000, reps: int = 20000) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    f = node_matrix(n, rng)
    model = PlacementModel(n, seed=0)
    for _ in range(5000):  # a model that has learned something
        i = int(rng.integers(n))
        model.observe(i, {"work": 1.0}, float(rng.exponential(1.0)))
    mask = rng.random(n) < 0.95
    task = {"work": 2.0, "min_capability": 1.0}
    ll = LeastLoadedPolicy(seed=0)
    col = f[:, 4].copy()
    out = {
        "nodes": n,
        "features": list(NODE_FEATURES),
        "learned_choose_us": median_us(lambda: model.choose(f, task, mask), reps),
        "learned_choose_no_constraints_us": median_us(lambda: model.choose(f, {"work": 2.0}), reps),
        "learned_observe_us": median_us(lambda: model.observe(3, {"work": 1.0}, 0.5), reps),
        "least_loaded_choose_us": median_us(lambda: ll.choose(f, task, mask), reps),
        "numpy_argmin_us": median_us(lambda: int(np.argmin(col)), reps),
        "target_us": 50.0,
    }
    out["learned_over_least_loaded"] = out["learned_choose_us"] / out["least_loaded_choose_us"]
    out["learned_over_argmin"] = out["learned_choose_us"] / out["numpy_argmin_us"]
    # the choice after an observe (the model refreshes its optimistic speeds once per batch)
    out["learned_observe_then_choose_us"] = median_us(
        lambda: (model.observe(5, {"work": 1.0}, 0.7), model.choose(f, task, mask)), reps // 2
    )
    # the agent-facing placer: calibrate the estimate, choose by virtual schedule, book the task
    placer = LearnedPlacer([4] * n, seed=0)
    ids = iter(range(10**9))
    clock = iter(np.cumsum(rng.exponential(0.01, 10**6)).tolist())
    out["learned_placer_place_us"] = median_us(
        lambda: placer.place(next(clock), next(ids), 2.0), reps
    )
    out["target_met"] = out["learned_choose_us"] <= 50.0 and out["learned_placer_place_us"] <= 50.0
    return out


# ---- 4. load forecasting ---------------------------------------------------------------------
def forecast_errors(y: np.ndarray, season: int | None, burn_in: int) -> dict[str, Any]:
    """One-step MAE/RMSE of LoadForecaster vs the naive last value on rows after burn_in."""
    f = LoadForecaster(y.shape[1], season_length=season)
    pred = np.empty((len(y) - 1, y.shape[1]))
    t0 = time.perf_counter()
    for i in range(len(y) - 1):
        f.update(y[i])
        pred[i] = f.forecast(1)
    wall = time.perf_counter() - t0
    target = y[1:][burn_in:]
    err_f = pred[burn_in:] - target
    err_n = y[:-1][burn_in:] - target
    mae_f, mae_n = float(np.abs(err_f).mean()), float(np.abs(err_n).mean())
    rmse_f, rmse_n = float(np.sqrt((err_f**2).mean())), float(np.sqrt((err_n**2).mean()))
    return {
        "series": int(y.shape[1]),
        "points": int(y.shape[0]),
        "season_length": season,
        "mae_forecaster": mae_f,
        "mae_naive": mae_n,
        "mae_ratio": mae_f / mae_n,
        "rmse_forecaster": rmse_f,
        "rmse_naive": rmse_n,
        "rmse_ratio": rmse_f / rmse_n,
        "us_per_update_and_forecast": wall / (len(y) - 1) * 1e6,
    }


def forecasting(data: Path) -> dict[str, Any]:
    files = sorted((data / "nab" / "data").glob("*/ec2_cpu_utilization_*.csv"))
    series = []
    for p in files:
        with p.open() as fh:
            series.append([float(r["value"]) for r in csv.DictReader(fh)])
    length = min(len(s) for s in series)
    nab = np.column_stack([s[:length] for s in series])
    out: dict[str, Any] = {"nab_ec2_cpu": forecast_errors(nab, None, burn_in=288)}
    out["nab_ec2_cpu"]["files"] = [p.name for p in files]
    # the trace's requested CPU, hourly: sum of cpu_milli of the pods alive in each hour
    created, deleted, cpu = [], [], []
    with (data / "alibaba-openb" / "openb_pod_list_default.csv").open() as fh:
        for row in csv.DictReader(fh):
            created.append(float(row["creation_time"]))
            deleted.append(float(row["deletion_time"]))
            cpu.append(float(row["cpu_milli"]) / 1000.0)
    hours = int(max(deleted) // 3600) + 1
    delta = np.zeros(hours + 1)
    np.add.at(delta, (np.asarray(created) // 3600).astype(int), cpu)
    np.add.at(delta, (np.asarray(deleted) // 3600).astype(int), -np.asarray(cpu))
    alive = np.cumsum(delta)[:hours, None]
    out["alibaba_requested_cpu_hourly"] = forecast_errors(alive, 24, burn_in=24 * 7)
    return out


# ---- figure ----------------------------------------------------------------------------------
def plot(cdfs: dict[str, Any], path: Path, title: str) -> None:
    """Latency distribution per policy as 1 - CDF on log-log axes: the tail is what differs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(cdfs)
    fig, axes = plt.subplots(2, 3, figsize=(16, 9), sharey=True)
    styles = {
        "learned": ("black", 2.4, "-"),
        "learned_noisy": ("black", 1.4, "--"),
        "learned_known_speeds": ("grey", 1.4, ":"),
        "learned_tail99": ("purple", 1.4, "-."),
    }
    for ax, key in zip(axes.ravel(), keys, strict=False):
        for policy, lat in cdfs[key].items():
            x = np.sort(lat)
            tail = 1.0 - np.arange(len(x)) / len(x)
            color, width, ls = styles.get(policy, (None, 1.2, "-"))
            ax.plot(x, tail, label=policy, color=color, linewidth=width, linestyle=ls)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axhline(0.01, color="grey", linewidth=0.8, linestyle=":")
        ax.text(ax.get_xlim()[0], 0.011, " p99", color="grey", fontsize=8)
        ax.set_title(f"{key} (seed 0)")
        ax.set_xlabel("latency: arrival to completion (s)")
        ax.grid(alpha=0.3, which="both")
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction of tasks slower (1 - CDF)")
    axes[0, 0].legend(fontsize=8, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures beside their targets."""
    out: dict[str, Any] = {
        "supermarket_rel_error": {
            p: report["supermarket"][p]["rel_error"] for p in ("random", "p2c")
        },
        "decision_us_1000_nodes": report["decision_time"]["learned_choose_us"],
        "decision_target_met": report["decision_time"]["target_met"],
    }
    for workload in ("trace", "synthetic"):
        out[workload] = {
            key: {
                "learned_p99_over_best_other": v["learned_p99_over_best_other"],
                "best_other": v["best_other"],
                "target": v["target_ratio_max"],
                "met": v["target_met"],
                "learned_noisy_p99_over_best_other": v["learned_noisy_p99_over_best_other"],
                "learned_known_speeds_p99_over_best_other": v[
                    "learned_known_speeds_p99_over_best_other"
                ],
                "learned_mean_over_best_other": v["learned_mean_over_best_other"],
                "learned_p999_over_best_other": v["learned_p999_over_best_other"],
                "learned_max_over_best_other": v["learned_max_over_best_other"],
                "learned_tail99_p99_over_best_other": v["learned_tail99_p99_over_best_other"],
                "learned_tail99_p999_over_best_other": v["learned_tail99_p999_over_best_other"],
                **(
                    {"no_slowdown_floor_ratio": v["no_slowdown_floor_ratio"]}
                    if "no_slowdown_floor_ratio" in v
                    else {}
                ),
            }
            for key, v in report[workload].items()
        }
    out["forecast_mae_over_naive"] = {k: v["mae_ratio"] for k, v in report["forecast"].items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "bench")
    ap.add_argument("--quick", action="store_true", help="smaller validation run (smoke test)")
    ap.add_argument(
        "--seeds", type=int, nargs="+", default=list(SEEDS), help="use 100+ for tuning runs"
    )
    args = ap.parse_args()
    seeds = tuple(args.seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    data = data_root()
    require("alibaba-openb", data)
    require("nab", data)
    t_start = time.perf_counter()
    report: dict[str, Any] = {"benchmark": "placement", "machine": machine_facts()}

    print("supermarket validation ...")
    report["supermarket"] = supermarket(0.2 if args.quick else 1.0, seed=0)
    for p in ("random", "p2c"):
        s = report["supermarket"][p]
        print(f"  {p}: mean {s['mean_s']:.3f} s vs closed form {s['closed_form_s']:.3f} s")

    print("decision time among 1,000 nodes ...")
    report["decision_time"] = decision_timing()
    dt_ = report["decision_time"]
    print(
        f"  learned choose: {dt_['learned_choose_us']:.1f} us, LearnedPlacer.place:"
        f" {dt_['learned_placer_place_us']:.1f} us (medians)"
    )

    print("trace-driven placement ...")
    gaps, work = load_trace(data / "alibaba-openb" / "openb_pod_list_default.csv")
    report["trace_workload"] = {
        "file": "alibaba-openb/openb_pod_list_default.csv",
        "tasks": int(work.size),
        "work_mean_s": float(work.mean()),
        "work_p50_s": float(np.median(work)),
        "work_p99_s": float(np.percentile(work, 99)),
        "nodes": N_NODES,
        "slots_per_node": CORES,
        "report_interval_s": REPORT_S,
        "seeds": list(seeds),
    }
    report["trace"], cdfs = run_scenarios("trace", seeds, (gaps, work))
    print("synthetic placement (Poisson arrivals, exponential work) ...")
    report["synthetic"], cdfs_synthetic = run_scenarios("synthetic", seeds, (gaps, work))

    print("load forecasting ...")
    report["forecast"] = forecasting(data)
    for k, v in report["forecast"].items():
        print(f"  {k}: MAE {v['mae_forecaster']:.3f} vs naive {v['mae_naive']:.3f}")

    plot(
        cdfs,
        args.out / "placement.png",
        "Alibaba openb tasks on 16 nodes x 4 slots: latency tail per placement policy",
    )
    plot(
        cdfs_synthetic,
        args.out / "placement_synthetic.png",
        "Synthetic (Poisson, exponential work) on 16 nodes x 4 slots: latency tail per policy",
    )
    report["summary"] = summary(report)
    report["wall_s"] = time.perf_counter() - t_start
    (args.out / "placement.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out / 'placement.json'} and placement.png in {report['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
