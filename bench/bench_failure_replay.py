"""Failure prediction used online: a time-ordered replay of the LANL log through FailurePredictor.

The whole log (or `--systems`) is replayed in time order: every failure is observed when it starts
(`observe_failure(node, start, end)`), and every week, at midnight, every node in production is
asked for P(a failure starts within 24 h) (`predict_many`). Nothing is fitted ahead: the predictor
fits a cutoff when a prediction first needs it, and an observation at time t drops only the fits
at cutoffs > t (in time order: none that was used), so each cutoff is fitted once.
Scored on those weekly rows: AUC beside recency (days since the node's last failure, causal) on
the same rows, and the wall time beside the batch benchmark's (bench_failure.py, reports/bench/
failure.json of the same `make bench` run, when present).

Leave-systems-out (`--held-out`, sets separated by ';', default 9,10;3,4,5;11,13;14,21): the same
replay on each set of systems alone (fitted on their own causal history only; no setting of the
model was chosen on them in this work), AUC beside recency; the target applies to the first set.

  .venv/bin/python bench/bench_failure_replay.py --out reports/bench
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench_failure import auc
from datasets import require
from dspex_cluster.skills.failure import FailurePredictor
from dspex_cluster.skills.failure.lanl import DAY_S, LanlNodes, load_lanl, rack_groups
from machine_facts import machine_facts

REPO = Path(__file__).resolve().parent.parent
WEEK_S = 7 * DAY_S


def replay(data: LanlNodes, refit_days: float, max_train_rows: int) -> dict[str, Any]:
    """Replay `data` in time order; returns the weekly rows' scores, labels and timings."""
    t0 = time.perf_counter()
    fp = FailurePredictor(
        horizon_s=DAY_S, refit_interval_s=refit_days * DAY_S, max_train_rows=max_train_rows
    )
    groups = rack_groups(data)
    for i in range(data.system.size):
        fp.add_node(
            i, system=int(data.system[i]), group=int(groups[i]), since_ts=data.prod_start_s[i]
        )
    order = np.argsort(data.fail_start_s, kind="stable")
    f_node = data.fail_node[order]
    f_start = data.fail_start_s[order]
    f_end = data.fail_end_s[order]
    first = np.ceil(data.prod_start_s.min() / WEEK_S) * WEEK_S
    last = min(float(data.records_end_s), float(data.prod_end_s.max())) - DAY_S
    last_failure = np.full(data.system.size, -np.inf)
    scores, labels, recency, weeks = [], [], [], 0
    seen = 0
    predict_s = 0.0
    for now in np.arange(first, last, WEEK_S):
        while seen < f_start.size and f_start[seen] < now:  # failures that started before now
            fp.observe_failure(int(f_node[seen]), f_start[seen], f_end[seen])
            last_failure[f_node[seen]] = f_start[seen]
            seen += 1
        live = np.flatnonzero((data.prod_start_s <= now) & (data.prod_end_s > now))
        if live.size == 0:
            continue
        p0 = time.perf_counter()
        p = fp.predict_many(list(live), float(now))
        predict_s += time.perf_counter() - p0
        lo = np.searchsorted(f_start, now, "left")
        hi = np.searchsorted(f_start, now + DAY_S, "left")
        failing = np.zeros(data.system.size, dtype=bool)
        failing[f_node[lo:hi]] = True
        scores.append(p)
        labels.append(failing[live])
        recency.append(last_failure[live] - now)  # later last failure = riskier; never = -inf
        weeks += 1
    y = np.concatenate(labels)
    s = np.concatenate(scores)
    r = np.concatenate(recency)
    r = np.where(np.isfinite(r), r, -1e15)
    return {
        "weeks": weeks,
        "rows": int(y.size),
        "positives": int(y.sum()),
        "auc": auc(s, y),
        "recency_auc": auc(r, y),
        "fits": len(fp._models),
        "predict_and_fit_s": round(predict_s, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "bench")
    ap.add_argument("--refit-days", type=float, default=90.0, help="as bench_failure.py")
    ap.add_argument(
        "--max-train-rows", type=int, default=80_000, help="about bench_failure.py's 60k negatives"
    )
    ap.add_argument("--systems", type=str, default="", help="comma-separated subset to replay")
    ap.add_argument(
        "--held-out", type=str, default="9,10;3,4,5;11,13;14,21", help="leave-systems-out sets"
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = require("lanl") / "lanl_failures_1996_2005_dev.csv"
    started = time.perf_counter()
    systems = {int(s) for s in args.systems.split(",") if s} or None
    held_sets = [
        {int(s) for s in part.split(",") if s} for part in args.held_out.split(";") if part
    ]
    held = held_sets[0]
    whole = replay(load_lanl(csv_path, systems), args.refit_days, args.max_train_rows)
    print("replay", whole, flush=True)
    out_of_sets = []
    for h in held_sets:
        r = replay(load_lanl(csv_path, h), args.refit_days, args.max_train_rows)
        out_of_sets.append({"systems": sorted(h), **r})
        print("held-out systems", sorted(h), r, flush=True)
    out_of = out_of_sets[0]
    batch_path = args.out / "failure.json"
    batch: dict[str, Any] = {}
    if batch_path.exists():
        rep = json.loads(batch_path.read_text())
        batch = {"wall_s": rep["timing_s"]["total"], "auc": rep["results"]["model"]["auc"]}
    result = {
        "machine": machine_facts(),
        "refit_days": args.refit_days,
        "max_train_rows": args.max_train_rows,
        "replay": whole,
        "held_out_systems": sorted(held),
        "leave_systems_out": out_of,
        "leave_systems_out_sets": out_of_sets,
        "batch_bench": batch or "reports/bench/failure.json absent: run bench_failure.py first",
        "targets": {
            "replay_auc>=0.845": whole["auc"] >= 0.845,
            "held_out_auc>=recency+0.05": out_of["auc"] >= out_of["recency_auc"] + 0.05,
            **({"replay_wall<=2x_batch": whole["wall_s"] <= 2 * batch["wall_s"]} if batch else {}),
        },
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    (args.out / "failure_replay.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result["targets"]), f"batch {batch or 'absent'}")


if __name__ == "__main__":
    main()
