"""LANL records: the loader's date handling, and a small real-data sanity check of the predictor."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import rankdata

from dspex_cluster.skills.failure import FailurePredictor
from dspex_cluster.skills.failure_lanl import (
    DAY_S,
    load_lanl,
    node_day_grid,
    parse_event_time,
    parse_month,
    rack_groups,
)


def _csv(fixture_data: Path) -> Path:
    return fixture_data / "lanl" / "lanl_failures_systems_16_21.csv"


def test_month_formats() -> None:
    assert parse_month("Nov-96") == (1996, 11)
    assert parse_month("2-Mar") == (2002, 3)  # Y-Mon: the year came out as a day number
    assert parse_month("Dec-99") == (1999, 12)
    assert parse_month("before tracking") is None and parse_month("current") is None
    expected = (datetime(2005, 6, 21, 10, 54) - datetime(1970, 1, 1)).total_seconds()
    assert parse_event_time("6/21/2005 10:54") == expected


def test_system_16_population(fixture_data: Path) -> None:
    data = load_lanl(_csv(fixture_data), systems={16})
    assert data.n_nodes == 16 and data.fail_node.size == 2680
    # production Dec-96 .. Sep-02 (decommissioned): every failure inside it
    start = datetime(1996, 12, 1) - datetime(1970, 1, 1)
    assert np.all(data.prod_start_s == start.total_seconds())
    assert np.all(data.fail_start_s >= data.prod_start_s[data.fail_node])
    assert np.all(data.fail_start_s < data.prod_end_s[data.fail_node])
    grid = node_day_grid(data)
    # a node-day is positive iff one of that node's failures starts inside it
    pairs = zip(data.fail_node, data.fail_start_s, strict=True)
    n_fail_days = len({(n, int(t // DAY_S)) for n, t in pairs})
    assert int(grid.label.sum()) == n_fail_days


def test_unlisted_nodes_fill_the_system(fixture_data: Path) -> None:
    data = load_lanl(_csv(fixture_data), systems={21})
    assert data.n_nodes == 128  # 48 nodes appear in the records, 80 never failed
    assert sum("unlisted" in s for s in data.node_label) == 80
    assert np.all(rack_groups(data)[[("unlisted" in s) for s in data.node_label]] == -1)


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    r = rankdata(score)
    n_pos = int(label.sum())
    return float((r[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (label.size - n_pos)))


def test_predictor_beats_chance_on_system_21(fixture_data: Path) -> None:
    """128 nodes over four months, every node-day predicted from the history before it."""
    data = load_lanl(_csv(fixture_data), systems={21})
    groups = rack_groups(data)
    fp = FailurePredictor(horizon_s=DAY_S, refit_interval_s=30 * DAY_S)
    names = data.node_label
    for i, name in enumerate(names):
        grp = None if groups[i] < 0 else int(groups[i])
        fp.add_node(name, system="21", group=grp, since_ts=float(data.prod_start_s[i]))
    for n, start, end in zip(data.fail_node, data.fail_start_s, data.fail_end_s, strict=True):
        fp.observe_failure(names[n], float(start), float(end))  # all at once: causality is ours
    grid = node_day_grid(data)
    days = np.unique(grid.day_start_s)
    p = np.empty(grid.node.size)
    for d in days:
        rows = np.flatnonzero(grid.day_start_s == d)
        p[rows] = fp.predict_many([names[k] for k in grid.node[rows]], float(d))
    assert np.all((p >= 0) & (p <= 1))
    score = _auc(p, grid.label)
    assert score > 0.6, score
    # and it is informative beyond the system's average: Brier below the constant rate's
    rate = grid.label.mean()
    assert np.mean((p - grid.label) ** 2) < np.mean((rate - grid.label) ** 2) * 1.05


@pytest.mark.parametrize("system", [16])
def test_renewal_alone_ranks_recent_failers_higher(fixture_data: Path, system: int) -> None:
    """The history-only renewal model on a real system: AUC well above chance."""
    data = load_lanl(_csv(fixture_data), systems={system})
    fp = FailurePredictor(horizon_s=DAY_S, refit_interval_s=365 * DAY_S, learner="renewal")
    for i, name in enumerate(data.node_label):
        fp.add_node(name, since_ts=float(data.prod_start_s[i]))
    for n, start, end in zip(data.fail_node, data.fail_start_s, data.fail_end_s, strict=True):
        fp.observe_failure(data.node_label[n], float(start), float(end))
    grid = node_day_grid(data)
    keep = grid.day_start_s >= grid.day_start_s.min() + 365 * DAY_S  # after a year of history
    p = np.empty(int(keep.sum()))
    days = grid.day_start_s[keep]
    nodes = grid.node[keep]
    for d in np.unique(days):
        rows = np.flatnonzero(days == d)
        p[rows] = fp.predict_many([data.node_label[k] for k in nodes[rows]], float(d))
    assert _auc(p, grid.label[keep]) > 0.65
