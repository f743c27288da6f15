"""The fitted (training-reference) anomaly detector on ASD and NAB beside a robust z-score.

ASD (../shared/data/asd, 12 server machines x 19 metrics, labelled incidents): for each machine,
`AnomalyDetector(19).fit(train)` then `score_series(test)`; best-F1 over thresholds and F1 at the
detector's own calibrated threshold, without point adjustment, beside
- robust z (median / MAD x 1.4826 of `train`, score = max |z| over metrics), and
- the online views (the detector's scores without fit, warmed up on `train`: the previous default).
The fitted detector's settings were chosen on omi-1..omi-8 only; omi-9..omi-12 are HELD OUT and
reported separately.

NAB (24 univariate files): fit on each file's probationary rows (the first 15%, which NAB does not
score), score the rest; row-level F1 against the labelled windows at the calibrated threshold beside
the best-F1 of the same scores. (The NAB score itself is the unfitted online path, unchanged.)

Speed at 38 metrics (score_series rows/s, update rows/s) beside robust z's rows/s in the same run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dspex_cluster.skills import nab_scoring as ns
from dspex_cluster.skills.anomaly import AnomalyDetector
from dspex_cluster.skills.anomaly_reference import CALIBRATED_MIN_ROWS

TUNING = tuple(range(1, 9))  # omi-1..omi-8: settings chosen on these
HELD_OUT = (9, 10, 11, 12)  # omi-9..omi-12: never looked at while tuning


def best_f1(scores: NDArray[np.float64], labels: NDArray[np.int_]) -> float:
    """The best F1 over all thresholds (each distinct score as a threshold)."""
    order = np.argsort(-scores, kind="stable")
    s, lab = scores[order], labels[order]
    tp = np.cumsum(lab)
    k = np.arange(1, s.size + 1)
    last = np.r_[s[1:] != s[:-1], True]  # a threshold takes every row with an equal score
    tp, k = tp[last], k[last]
    pos = max(int(labels.sum()), 1)
    f1 = np.where(tp > 0, 2 * tp / (k + pos), 0.0)
    return float(f1.max(initial=0.0))


def f1_at(scores: NDArray[np.float64], labels: NDArray[np.int_], threshold: float) -> float:
    pred = scores >= threshold
    tp = int((pred & (labels == 1)).sum())
    return 2 * tp / (int(pred.sum()) + int(labels.sum())) if tp else 0.0


class RobustZ:
    """Per-metric robust z against the training part; score = max |z| over metrics."""

    def fit(self, train: NDArray[np.float64]) -> RobustZ:
        self.median = np.median(train, axis=0)
        mad = np.median(np.abs(train - self.median), axis=0) * 1.4826
        self.scale = np.maximum(mad, 1e-6)
        return self

    def score_series(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.max(np.abs(x - self.median) / self.scale, axis=1)


def asd(asd_dir: Path) -> dict[str, Any]:
    machines = []
    for i in TUNING + HELD_OUT:
        d = np.load(asd_dir / f"omi-{i}.npz")
        train, test, labels = d["train"], d["test"], d["test_label"].astype(int)
        t0 = time.perf_counter()
        det = AnomalyDetector(train.shape[1]).fit(train)
        fit_s = time.perf_counter() - t0
        s = det.score_series(test)
        online = AnomalyDetector(train.shape[1])
        online_s = online.score_series(np.concatenate((train, test)))[train.shape[0] :]
        rz = RobustZ().fit(train).score_series(test)
        machines.append(
            {
                "machine": f"omi-{i}",
                "held_out": i in HELD_OUT,
                "best_f1": best_f1(s, labels),
                "f1_at_threshold": f1_at(s, labels, det.threshold),
                "robust_z_best_f1": best_f1(rz, labels),
                "online_views_best_f1": best_f1(online_s, labels),
                "online_views_f1_at_threshold": f1_at(online_s, labels, online.threshold),
                "season_rows": det._reference.period if det._reference else 0,
                "fit_s": fit_s,
            }
        )

    def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if "f1" in k}
        mean["calibrated_over_best"] = mean["f1_at_threshold"] / mean["best_f1"]
        mean["best_over_robust_z"] = mean["best_f1"] / mean["robust_z_best_f1"]
        mean["machines_below_robust_z"] = [
            r["machine"] for r in rows if r["best_f1"] < r["robust_z_best_f1"]
        ]
        return mean

    return {
        "tuning_machines": [f"omi-{i}" for i in TUNING],
        "held_out_machines": [f"omi-{i}" for i in HELD_OUT],
        "all": summary(machines),
        "tuning": summary([m for m in machines if not m["held_out"]]),
        "held_out": summary([m for m in machines if m["held_out"]]),
        "machines": machines,
    }


def nab_calibrated(files: list[ns.NabFile]) -> dict[str, Any]:
    """Fit on each file's probationary rows, score the rest: F1 at threshold vs best-F1."""
    rows = []
    for f in files:
        prob = max(int(0.15 * f.values.size), CALIBRATED_MIN_ROWS)
        labels = np.zeros(f.values.size, dtype=int)
        for a, b in f.layout.windows:
            labels[a : b + 1] = 1
        labels = labels[prob:]
        if labels.sum() == 0:
            continue
        det = AnomalyDetector().fit(f.values[:prob])
        s = det.score_series(f.values[prob:])
        rows.append(
            {
                "file": f.key,
                "best_f1": best_f1(s, labels),
                "f1_at_threshold": f1_at(s, labels, det.threshold),
            }
        )
    best = float(np.mean([r["best_f1"] for r in rows]))
    at = float(np.mean([r["f1_at_threshold"] for r in rows]))
    return {
        "files": len(rows),
        "best_f1": best,
        "f1_at_threshold": at,
        "calibrated_over_best": at / best if best else 0.0,
        "per_file": rows,
    }


def speed(features: int = 38, repeats: int = 3) -> dict[str, Any]:
    """Rows per second of CPU time at ``features`` metrics (random walks), best of ``repeats``."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24_000, features)).cumsum(axis=0)
    train, test = x[:12_000], x[12_000:20_000]

    def best_rate(fn: Any, rows: int) -> float:
        best = float("inf")
        for _ in range(repeats):
            c0 = time.process_time()
            fn()
            best = min(best, time.process_time() - c0)
        return rows / best

    det = AnomalyDetector(features).fit(train)
    rz = RobustZ().fit(train)
    series = best_rate(lambda: det.score_series(test), test.shape[0])
    rz_series = best_rate(lambda: rz.score_series(test), test.shape[0])
    rows = x[20_000:21_000]

    def stream() -> None:
        for r in rows:
            det.update(r)

    def rz_stream() -> None:
        for r in rows:
            rz.score_series(r[None, :])

    update = best_rate(stream, rows.shape[0])
    rz_update = best_rate(rz_stream, rows.shape[0])
    return {
        "features": features,
        "clock": "CPU time of this process, one pinned core",
        "score_series_rows_per_s": series,
        "robust_z_rows_per_s": rz_series,
        "update_rows_per_s": update,
        "robust_z_update_rows_per_s": rz_update,
    }
