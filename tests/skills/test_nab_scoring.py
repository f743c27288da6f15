"""The NAB scorer: rules on hand-made files, and NAB's published per-file scores reproduced."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dspex_cluster.skills import nab_scoring as ns

STD = ns.STANDARD_PROFILE


def test_probationary_length_is_15_percent_capped_at_750() -> None:
    assert ns.probationary_length(1000) == 150
    assert ns.probationary_length(1243) == 186
    assert ns.probationary_length(22695) == 750


def test_window_rewards_earliest_detection_only() -> None:
    lay = ns.layout_file("f", 1000, [(400, 499)])
    early = np.zeros(1000, bool)
    early[400] = True
    assert ns.score_detections(lay, early).score == pytest.approx(1.0)
    both = early.copy()
    both[480] = True  # a later detection in the same window adds nothing
    assert ns.score_detections(lay, both).score == pytest.approx(1.0)
    late = np.zeros(1000, bool)
    late[499] = True  # last row of the window: scaled sigmoid of -1/width, close to 0
    assert 0.0 < ns.score_detections(lay, late).score < 0.05
    middle = np.zeros(1000, bool)
    middle[450] = True  # halfway: 2*sigmoid(2.5)-1 over 2*sigmoid(5)-1
    assert ns.score_detections(lay, middle).score == pytest.approx(0.8598, abs=1e-3)


def test_false_positives_and_misses() -> None:
    lay = ns.layout_file("f", 1000, [(400, 499)])
    none = np.zeros(1000, bool)
    assert ns.score_detections(lay, none).score == pytest.approx(-1.0)  # one missed window
    fp = none.copy()
    fp[300] = True  # before the first window: the full FP weight
    assert ns.score_detections(lay, fp).score == pytest.approx(-1.0 - STD["fpWeight"])
    just_after = none.copy()
    just_after[500] = True  # right after the window: almost free
    assert -1.0 - 0.01 < ns.score_detections(lay, just_after).score < -1.0
    probation = none.copy()
    probation[10] = True  # inside the probationary period: not scored at all
    assert ns.score_detections(lay, probation).score == pytest.approx(-1.0)


def test_threshold_curve_matches_scoring_each_threshold() -> None:
    rng = np.random.default_rng(0)
    lays = [ns.layout_file("a", 800, [(300, 360), (600, 660)]), ns.layout_file("b", 500, [])]
    scores = [rng.random(800).round(2), rng.random(500).round(2)]
    curve = ns.threshold_curve(lays, scores)
    for thr, total in zip(curve.thresholds, curve.totals, strict=True):
        direct = sum(ns.score_file(lay, s, thr).score for lay, s in zip(lays, scores, strict=True))
        assert total == pytest.approx(direct, abs=1e-9)


def test_normalisation_null_zero_perfect_hundred() -> None:
    lays = [ns.layout_file("a", 1000, [(400, 499), (700, 799)])]
    assert ns.normalise(-2.0, lays) == pytest.approx(0.0)
    assert ns.normalise(2.0, lays) == pytest.approx(100.0)


FILES = [
    "realKnownCause/ec2_request_latency_system_failure.csv",
    "realAWSCloudwatch/rds_cpu_utilization_cc0c53.csv",
    "realKnownCause/rogue_agent_key_hold.csv",
]


@pytest.mark.parametrize("detector", ["numenta", "windowedGaussian"])
def test_reproduces_published_per_file_scores(fixture_data: Path, detector: str) -> None:
    nab = fixture_data / "nab"
    windows = json.loads((nab / "labels" / "combined_windows.json").read_text())
    published = ns.read_published_scores(nab / "results" / f"{detector}_standard_scores.csv", FILES)
    for key in FILES:
        cat, fname = key.split("/")
        stamps, _ = ns.read_series(nab / "data" / cat / fname)
        lay = ns.layout_file(key, len(stamps), ns.window_rows(stamps, windows[key]))
        threshold, want = published[key]
        got = ns.score_file(lay, ns.read_published_output(nab, detector, key), threshold).score
        assert got == pytest.approx(want, abs=0.01), key
