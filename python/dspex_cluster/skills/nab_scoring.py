"""NAB (Numenta Anomaly Benchmark) scoring, written from NAB's published rules.

Per file: the first ``min(floor(0.15 * rows), 750)`` rows are probationary and not scored. Inside a
labelled window only the earliest detection counts, weighted by a scaled sigmoid of its position in
the window (1.0 at the left edge, 0 just past the right edge). A detection outside every window
costs the profile's FP weight: the full weight before the first window, and after a window a share
that grows with the distance past that window's right edge (a scaled sigmoid again). A window
with no detection costs the FN weight. A detection is a row whose anomaly score is >= the threshold.

The score of a detector at one threshold is a step function of the threshold, so ``threshold_curve``
computes it exactly for every candidate threshold at once (events sorted by score, then a cumulative
sum), which is what threshold optimisation and cross-validation need.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

PROBATION_PERCENT = 0.15
STANDARD_PROFILE = {"tpWeight": 1.0, "fpWeight": 0.11, "fnWeight": 1.0}
MACHINE_CATEGORIES = ("realKnownCause", "realAWSCloudwatch")
START_THRESHOLD = 1.1  # above every score in [0, 1]: no detection at all

# Window ids given to rows that are not inside a window.
OUTSIDE = -1
PROBATIONARY = -2


def probationary_length(rows: int, percent: float = PROBATION_PERCENT) -> int:
    """Rows at the start of a file that are never scored: min(floor(0.15 * rows), 750)."""
    return int(min(math.floor(percent * rows), percent * 5000))


def scaled_sigmoid(position: NDArray[np.float64] | float) -> NDArray[np.float64]:
    """2 * sigmoid(-5 x) - 1, and -1 from x >= 3 on (far behind a window)."""
    x = np.asarray(position, dtype=np.float64)
    out = 2.0 / (1.0 + np.exp(5.0 * x)) - 1.0
    return np.where(x >= 3.0, -1.0, out)


@dataclass(frozen=True)
class FileLayout:
    """Where the windows of one file lie, and what a detection at each row is worth."""

    name: str
    rows: int
    windows: tuple[tuple[int, int], ...]  # inclusive (left, right) row indices
    window_id: NDArray[np.int64]  # per row: window index, OUTSIDE or PROBATIONARY
    weight: NDArray[np.float64]  # per row: the sweep score of a detection there (profile-weighted)
    scored_windows: tuple[int, ...]  # windows with at least one scorable row (they can be missed)
    fn_weight: float


def layout_file(
    name: str,
    rows: int,
    windows: Sequence[tuple[int, int]],
    profile: dict[str, float] | None = None,
) -> FileLayout:
    """Per-row weights of one file, following NAB's sweep rules."""
    p = profile or STANDARD_PROFILE
    idx = np.arange(rows, dtype=np.float64)
    weight = np.empty(rows, dtype=np.float64)
    window_id = np.full(rows, OUTSIDE, dtype=np.int64)
    max_tp = float(scaled_sigmoid(-1.0))
    ordered = sorted((int(a), int(b)) for a, b in windows)
    # Rows before the first window: a full FP cost.
    first_left = ordered[0][0] if ordered else rows
    weight[:first_left] = -1.0 * p["fpWeight"]
    for k, (left, right) in enumerate(ordered):
        width = float(right - left + 1)
        pos = -(right - idx[left : right + 1] + 1.0) / width
        weight[left : right + 1] = scaled_sigmoid(pos) * p["tpWeight"] / max_tp
        window_id[left : right + 1] = k
        # Rows after this window (up to the next one) are FPs discounted by distance.
        stop = ordered[k + 1][0] if k + 1 < len(ordered) else rows
        after = idx[right + 1 : stop]
        # NAB divides by (width - 1); a one-row window would divide by zero, treat it as far away.
        past = np.abs(right - after) / (width - 1.0) if width > 1 else np.full(after.shape, 3.0)
        weight[right + 1 : stop] = scaled_sigmoid(past) * p["fpWeight"]
    prob = probationary_length(rows)
    window_id[:prob] = PROBATIONARY
    scored = tuple(sorted(set(int(w) for w in window_id[window_id >= 0])))
    return FileLayout(name, rows, tuple(ordered), window_id, weight, scored, float(p["fnWeight"]))


@dataclass(frozen=True)
class FileScore:
    score: float
    tp: int  # detected rows inside windows
    fp: int  # detected rows outside windows
    fn: int  # undetected rows inside windows
    tn: int  # undetected rows outside windows
    windows_hit: int
    windows_total: int


def score_detections(layout: FileLayout, detected: NDArray[np.bool_]) -> FileScore:
    """Raw NAB score of one file for a boolean detection per row."""
    det = np.asarray(detected, dtype=bool)
    if det.shape != (layout.rows,):
        raise ValueError(f"expected {layout.rows} detections, got {det.shape}")
    wid = layout.window_id
    scorable = wid != PROBATIONARY
    inside = wid >= 0
    outside = wid == OUTSIDE
    score = float(layout.weight[det & outside].sum())
    hit = 0
    for w in layout.scored_windows:
        rows_w = np.flatnonzero(det & (wid == w))
        if rows_w.size:
            score += float(layout.weight[rows_w[0]])  # earliest detection is the largest weight
            hit += 1
        else:
            score -= layout.fn_weight
    return FileScore(
        score=score,
        tp=int((det & inside).sum()),
        fp=int((det & outside).sum()),
        fn=int((~det & inside).sum()),
        tn=int((~det & outside & scorable).sum()),
        windows_hit=hit,
        windows_total=len(layout.scored_windows),
    )


def score_file(layout: FileLayout, scores: NDArray[np.float64], threshold: float) -> FileScore:
    """Raw NAB score of one file: detections are rows with anomaly score >= threshold."""
    return score_detections(layout, np.asarray(scores, dtype=np.float64) >= threshold)


def _file_events(
    layout: FileLayout, scores: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(score level, change of total) pairs: lowering the threshold to a level adds its changes."""
    s = np.asarray(scores, dtype=np.float64)
    wid = layout.window_id
    out_rows = np.flatnonzero(wid == OUTSIDE)
    levels = [s[out_rows]]
    deltas = [layout.weight[out_rows]]
    for w in layout.scored_windows:
        rows_w = np.flatnonzero(wid == w)
        sw = s[rows_w]
        # The earliest detected row is the one that counts: only rows whose score beats every
        # earlier row of the window ever become the earliest detection.
        prev_max = np.concatenate(([-np.inf], np.maximum.accumulate(sw)[:-1]))
        rec = np.flatnonzero(sw > prev_max)
        rec_w = layout.weight[rows_w[rec]]
        # Lowering the threshold reaches records from the last (highest score) to the first.
        rec_w_desc = rec_w[::-1]
        prev = np.concatenate(([-layout.fn_weight], rec_w_desc[:-1]))
        levels.append(sw[rec][::-1])
        deltas.append(rec_w_desc - prev)
    return np.concatenate(levels), np.concatenate(deltas)


@dataclass(frozen=True)
class ThresholdCurve:
    thresholds: NDArray[np.float64]  # descending, starting at START_THRESHOLD
    totals: NDArray[np.float64]  # summed raw score of all files at each threshold

    def best(self) -> tuple[float, float]:
        """(threshold, total) with the best total; ties go to the highest threshold."""
        k = int(np.argmax(self.totals))
        return float(self.thresholds[k]), float(self.totals[k])


def threshold_curve(
    layouts: Sequence[FileLayout], scores: Sequence[NDArray[np.float64]]
) -> ThresholdCurve:
    """Summed raw score of several files at every threshold that changes it."""
    base = -sum(lay.fn_weight * len(lay.scored_windows) for lay in layouts)
    parts = [_file_events(lay, sc) for lay, sc in zip(layouts, scores, strict=True)]
    levels = np.concatenate([p[0] for p in parts]) if parts else np.empty(0)
    deltas = np.concatenate([p[1] for p in parts]) if parts else np.empty(0)
    order = np.argsort(-levels, kind="stable")
    levels, deltas = levels[order], deltas[order]
    csum = np.cumsum(deltas)
    # A threshold t detects every level >= t: take the cumulative sum at the last row of each level.
    last_of_level = np.flatnonzero(np.append(levels[1:] != levels[:-1], True))
    thresholds = np.concatenate(([START_THRESHOLD], levels[last_of_level]))
    totals = base + np.concatenate(([0.0], csum[last_of_level]))
    keep = thresholds <= START_THRESHOLD
    return ThresholdCurve(thresholds[keep], totals[keep])


def normalise(total: float, layouts: Iterable[FileLayout]) -> float:
    """NAB's normalisation: the null detector (no detection) scores 0, a perfect one 100."""
    lays = list(layouts)
    null = -sum(lay.fn_weight * len(lay.scored_windows) for lay in lays)
    perfect = float(sum(len(lay.scored_windows) for lay in lays))  # tpWeight 1 per window
    return 100.0 * (total - null) / (perfect - null)


# --- reading the NAB folder ------------------------------------------------------------------


def _to_datetime(stamps: Sequence[str]) -> NDArray[np.datetime64]:
    return np.array([s.strip().replace(" ", "T") for s in stamps], dtype="datetime64[us]")


def read_series(path: Path) -> tuple[list[str], NDArray[np.float64]]:
    """(timestamps, values) of a NAB data file."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    head = rows[0]
    ti, vi = head.index("timestamp"), head.index("value")
    return [r[ti] for r in rows[1:]], np.array([float(r[vi]) for r in rows[1:]])


def window_rows(
    timestamps: Sequence[str], windows: Sequence[Sequence[str]]
) -> list[tuple[int, int]]:
    """Inclusive row ranges of labelled windows given as (start, end) timestamps."""
    ts = _to_datetime(timestamps)
    out = []
    for start, end in windows:
        a = int(np.searchsorted(ts, _to_datetime([start])[0], side="left"))
        b = int(np.searchsorted(ts, _to_datetime([end])[0], side="right")) - 1
        out.append((a, b))
    return out


@dataclass(frozen=True)
class NabFile:
    key: str  # "category/file.csv", the key of the label files
    timestamps: list[str]
    values: NDArray[np.float64]
    layout: FileLayout

    @property
    def category(self) -> str:
        return self.key.split("/")[0]


def load_corpus(
    nab_dir: Path,
    categories: Sequence[str] = MACHINE_CATEGORIES,
    profile: dict[str, float] | None = None,
) -> list[NabFile]:
    """The data files of the given categories with their windows, sorted by key."""
    windows = json.loads((nab_dir / "labels" / "combined_windows.json").read_text())
    files = []
    for key in sorted(windows):
        cat, fname = key.split("/")
        if cat not in categories:
            continue
        ts, vals = read_series(nab_dir / "data" / cat / fname)
        lay = layout_file(key, len(ts), window_rows(ts, windows[key]), profile)
        files.append(NabFile(key, ts, vals, lay))
    return files


def read_published_scores(csv_path: Path, keys: Iterable[str]) -> dict[str, tuple[float, float]]:
    """{file key: (threshold, raw score)} from a NAB results/<detector>_<profile>_scores.csv."""
    wanted = set(keys)
    out: dict[str, tuple[float, float]] = {}
    with open(csv_path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["File"] in wanted:
                out[row["File"]] = (float(row["Threshold"]), float(row["Score"]))
    return out


def read_published_output(nab_dir: Path, detector: str, key: str) -> NDArray[np.float64]:
    """The published per-row anomaly_score of a detector on one file."""
    cat, fname = key.split("/")
    path = nab_dir / "results" / detector / cat / f"{detector}_{fname}"
    with open(path, newline="") as fh:
        return np.array([float(r["anomaly_score"]) for r in csv.DictReader(fh)])
