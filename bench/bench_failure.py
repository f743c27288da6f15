"""Failure prediction on the LANL HPC records (1996-2005): AUC and Brier score, strictly causal.

For every node and calendar day of its production period, predict at midnight, from failures that
started before that midnight only, whether a failure of the node starts within the next 24 h.
Scored side by side in one run:
- model: what `dspex_cluster.skills.failure.FailurePredictor` computes (renewal + frailty, boosted
  trees over history features, a stack over their scores), refitted every `--refit-days` on the
  time-ordered prefix: the fit at cutoff c uses node-days whose 24 h window ends by c and
  failures that started before c, and scores the days in [c, c + refit); its stack (Platt
  scaling over the trees' log-odds at two ensemble sizes and the renewal model's) is fitted on
  the earlier fits' out-of-sample scores of the days in [c - k * refit, c), k = 4;
- ablations: the same without the stack (the trees' raw probability), the renewal-with-frailty
  model alone, and the logistic layer instead of trees;
- baseline "system rate": the system's failure-day rate over all its node-days before the day;
- baseline "recency": days since the node's last failure (never failed = least risky); its
  probability (for the Brier score) is the observed rate of earlier node-days in the same
  recency bin.

Usage: .venv/bin/python bench/bench_failure.py --out reports/bench
Writes DIR/failure.json (machine facts, figures) and DIR/failure.png (ROC + reliability).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from datasets import data_root, require
from dspex_cluster.skills.failure.history import FailureHistory, NodeTable
from dspex_cluster.skills.failure.lanl import DAY_S, load_lanl, node_day_grid, rack_groups
from dspex_cluster.skills.failure.model import apply_stack, fit_hazard_model, fit_stack

REPO = Path(__file__).resolve().parent.parent
# reliability-plot bin edges as fractions of the rows sorted by predicted probability
RELIABILITY_FRACTIONS = np.array(
    [0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.96, 0.98, 0.99, 0.995, 0.998, 0.999, 1.0]
)


# ---- metrics -------------------------------------------------------------------------------------
def auc(score: np.ndarray, label: np.ndarray) -> float:
    """ROC AUC by ranks (ties count one half)."""
    r = rankdata(score)
    n_pos = int(label.sum())
    n_neg = label.size - n_pos
    return float((r[label].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def brier(p: np.ndarray, label: np.ndarray) -> float:
    return float(np.mean((p - label) ** 2))


def log_loss(p: np.ndarray, label: np.ndarray) -> float:
    q = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(np.where(label, np.log(q), np.log1p(-q))))


def roc_points(score: np.ndarray, label: np.ndarray, n: int = 400) -> tuple[np.ndarray, ...]:
    order = np.argsort(-score, kind="stable")
    tp = np.cumsum(label[order])
    fp = np.cumsum(~label[order])
    pick = np.unique(np.linspace(0, score.size - 1, n).astype(int))
    return fp[pick] / max(fp[-1], 1), tp[pick] / max(tp[-1], 1)


# ---- causal baselines ----------------------------------------------------------------------------
def cumulative_rate_before_day(
    key: np.ndarray, day: np.ndarray, label: np.ndarray, prior_n: float, prior_rate: np.ndarray
) -> np.ndarray:
    """For each row: (positives + prior) / (rows + prior_n) over rows with the same key and an
    earlier day (strictly before: a day's own labels are unknown at its midnight)."""
    uk, kinv = np.unique(key, return_inverse=True)
    ud, dinv = np.unique(day, return_inverse=True)
    cell = kinv * ud.size + dinv
    n = np.bincount(cell, minlength=uk.size * ud.size).reshape(uk.size, ud.size)
    pos = np.bincount(cell, weights=label, minlength=uk.size * ud.size).reshape(uk.size, ud.size)
    n_before = np.cumsum(n, axis=1) - n
    pos_before = np.cumsum(pos, axis=1) - pos
    return (pos_before[kinv, dinv] + prior_n * prior_rate) / (n_before[kinv, dinv] + prior_n)


def global_rate_before_day(day: np.ndarray, label: np.ndarray) -> np.ndarray:
    ud, dinv = np.unique(day, return_inverse=True)
    n = np.bincount(dinv)
    pos = np.bincount(dinv, weights=label)
    rate = (np.cumsum(pos) - pos + 1.0) / (np.cumsum(n) - n + 200.0)
    return rate[dinv]


# ---- machine facts -------------------------------------------------------------------------------
def machine_facts() -> dict[str, object]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "load_average_1m_at_start": os.getloadavg()[0],
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "bench")
    ap.add_argument("--refit-days", type=float, default=90.0)
    ap.add_argument("--neg-rate", type=float, default=0.03, help="negative subsampling for fits")
    ap.add_argument("--max-neg", type=int, default=60_000, help="cap on negatives per fit")
    ap.add_argument("--rack-size", type=int, default=32, help="node numbers per neighbourhood")
    ap.add_argument("--platt-intervals", type=int, default=4, help="refit intervals for Platt")
    ap.add_argument("--systems", type=str, default="", help="comma-separated subset")
    ap.add_argument("--dump", type=Path, default=None, help="save per-row scores (npz)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    facts = machine_facts()
    t_start = time.perf_counter()

    csv_path = require("lanl") / "lanl_failures_1996_2005_dev.csv"
    systems = {int(s) for s in args.systems.split(",") if s} or None
    data = load_lanl(csv_path, systems)
    grid = node_day_grid(data)
    y = grid.label
    yf = y.astype(np.float64)
    day = grid.day_start_s
    _, sys_index = np.unique(data.system, return_inverse=True)
    groups = rack_groups(data, args.rack_size)
    nodes = NodeTable(system=sys_index, group=groups, prod_start_s=data.prod_start_s)
    history = FailureHistory(nodes, data.fail_node, data.fail_start_s, data.fail_end_s)
    base = history.base_features(grid.node, day)
    t_features = time.perf_counter() - t_start

    # ---- the model, refitted on the time-ordered prefix
    rng = np.random.default_rng(0)
    u = rng.random(y.size)
    cutoffs = np.arange(day.min(), day.max() + args.refit_days * DAY_S + 1, args.refit_days * DAY_S)
    names = ("model", "model_uncalibrated", "renewal", "logistic")
    scores = {k: np.zeros(y.size) for k in names}
    components: np.ndarray | None = None  # the model's component log-odds, for its stacks
    fits = []
    prev_blocks: list[np.ndarray] = []
    for c0, c1 in zip(cutoffs[:-1], cutoffs[1:], strict=True):
        block = (day >= c0) & (day < c1)
        if not block.any():
            continue
        known = day + DAY_S <= c0
        n_neg = int((known & ~y).sum())
        rate = min(args.neg_rate, args.max_neg / max(n_neg, 1))
        train = known & (y | (u < rate))
        weight = np.where(y[train], 1.0, 1.0 / rate)
        t0 = time.perf_counter()
        row: dict[str, object] = {
            "cutoff": dt.datetime.fromtimestamp(c0, dt.UTC).date().isoformat()
        }
        for name, learner in (("model", "auto"), ("logistic", "logistic"), ("renewal", "renewal")):
            kind = learner
            if learner == "logistic" and y[train].sum() < 200:
                kind = "renewal"
            m = fit_hazard_model(
                history,
                c0,
                grid.node[train],
                day[train],
                y[train],
                train_weight=weight,
                base=base[train],
                learner=kind,  # type: ignore[arg-type]
            )
            if name != "model":
                scores[name][block] = m.predict_raw(
                    history, grid.node[block], day[block], base[block]
                )
                row[name] = m.kind
                continue
            comp = m.components(history, grid.node[block], day[block], base[block])
            if components is None:
                components = np.zeros((y.size, comp.shape[1]))
            components[block] = comp
            row[name] = m.kind
            scores["model_uncalibrated"][block] = 1.0 / (1.0 + np.exp(-comp[:, -2]))
            stack = None  # as FailurePredictor: on earlier fits' out-of-sample scores
            if m.learner is not None and prev_blocks:
                recent = np.logical_or.reduce(prev_blocks[-args.platt_intervals :])
                stack = fit_stack(components[recent], yf[recent])
            if stack is None:
                scores["model"][block] = scores["model_uncalibrated"][block]
            else:
                scores["model"][block] = apply_stack(stack, comp)
            row["stack"] = (
                None if stack is None else [round(float(v), 3) for v in (stack[0], *stack[1])]
            )
        row.update(train_rows=int(train.sum()), positives=int(y[train].sum()))
        row["fit_s"] = round(time.perf_counter() - t0, 2)
        fits.append(row)
        prev_blocks.append(block)
        print(row, flush=True)

    # ---- baselines
    g_rate = global_rate_before_day(day, yf)
    sys_rate = cumulative_rate_before_day(data.system[grid.node], day, yf, 1000.0, g_rate)
    has = base[:, 0] > 0
    tau_days = np.where(has, np.exp(base[:, 1]) - 1.0 / 24.0, np.inf)
    recency_score = np.where(has, -tau_days, -1e12)
    bins = np.where(has, np.clip(np.floor(np.log2(tau_days + 1.0)), 0, 15), 16).astype(int)
    recency_p = cumulative_rate_before_day(bins, day, yf, 200.0, g_rate)

    entries = {
        "baseline_system_rate": (sys_rate, sys_rate),
        "baseline_recency": (recency_score, recency_p),
        **{k: (v, v) for k, v in scores.items()},
    }
    results = {}
    for name, (score, prob) in entries.items():
        results[name] = {
            "auc": round(auc(score, y), 4),
            "brier": round(brier(prob, yf), 6),
            "log_loss": round(log_loss(prob, y), 5),
            "mean_p": round(float(prob.mean()), 6),
        }
        print(name, results[name], flush=True)
    best = "model"
    best_brier_baseline = min(results[k]["brier"] for k in results if k.startswith("baseline"))
    wall = time.perf_counter() - t_start
    report = {
        "benchmark": "failure prediction, LANL 1996-2005 (dev file), node-day, 24 h horizon",
        "machine": facts,
        "data": {
            "csv": str(csv_path.relative_to(data_root())),
            "systems": sorted(int(s) for s in np.unique(data.system)),
            "nodes": data.n_nodes,
            "nodes_never_failed": sum("unlisted" in lbl for lbl in data.node_label),
            "failures": int(data.fail_node.size),
            "node_days": int(y.size),
            "positive_node_days": int(y.sum()),
            "first_day": dt.datetime.fromtimestamp(day.min(), dt.UTC).date().isoformat(),
            "last_day": dt.datetime.fromtimestamp(day.max(), dt.UTC).date().isoformat(),
        },
        "evaluation": {
            "causality": "refit on the time-ordered prefix every refit_days; fit at cutoff c uses "
            "node-days ending by c and failures started before c; features of day d use only "
            "failures started before d's midnight (and whether the last one was repaired by then)",
            "refit_days": args.refit_days,
            "rack_size": args.rack_size,
            "neg_rate": args.neg_rate,
            "max_neg": args.max_neg,
            "calibration": "each learned fit's stack (logistic regression on the log-odds of its "
            "boosted layer at 100 and 200 trees and of the renewal model) is fitted on the "
            f"out-of-sample scores of the previous {args.platt_intervals} fits (as "
            "FailurePredictor does)",
            "fits": fits,
        },
        "results": results,
        "reported_model": best,
        "targets": {
            "auc_ge_0.85": results[best]["auc"] >= 0.85,
            "brier_better_than_every_baseline": results[best]["brier"] < best_brier_baseline,
            "recency_auc_near_0.79": abs(results["baseline_recency"]["auc"] - 0.79) < 0.01,
        },
        "timing_s": {"features": round(t_features, 1), "total": round(wall, 1)},
    }
    (args.out / "failure.json").write_text(json.dumps(report, indent=2))
    plot(args.out / "failure.png", entries, y, results)
    if args.dump:
        np.savez_compressed(
            args.dump,
            y=y,
            day=day,
            node=grid.node,
            system=data.system[grid.node],
            **{k: v[1] for k, v in entries.items()},
        )
    print(json.dumps(report["targets"]), f"total {wall:.0f} s")


def plot(path: Path, entries: dict, y: np.ndarray, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    show = ["model", "renewal", "baseline_recency", "baseline_system_rate"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5.2))
    for name in show:
        score, prob = entries[name]
        fpr, tpr = roc_points(score, y)
        ax1.plot(fpr, tpr, label=f"{name}  AUC {results[name]['auc']:.3f}")
        # reliability: bins of sorted predictions, finer towards the risky top
        order = np.argsort(prob, kind="stable")
        cuts = (RELIABILITY_FRACTIONS * order.size).astype(int)
        chunks = [order[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]
        pm = [prob[c].mean() for c in chunks]
        om = [y[c].mean() for c in chunks]
        ax2.plot(pm, om, "o-", ms=3, label=f"{name}  Brier {results[name]['brier']:.5f}")
    ax1.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax1.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title="ROC: node fails within 24 h (LANL, causal)",
    )
    ax1.legend(loc="lower right", fontsize=8)
    lim = [1e-4, 1.0]
    ax2.plot(lim, lim, "k:", lw=0.8)
    ax2.set(
        xscale="log",
        yscale="log",
        xlim=lim,
        ylim=lim,
        xlabel="predicted probability",
        ylabel="observed frequency",
        title="Reliability (bins of sorted predictions)",
    )
    ax2.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
