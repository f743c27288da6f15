"""The BEAM's phi-accrual detector computes what the Python reference computes (exact normal tail).

Python's `PhiAccrualDetector(cdf="normal")` is the reference (skills/failure_phi.py documents the
formula); the Elixir `DSPEx.Clustering.PhiAccrualDetector` runs inside every BEAM node's
membership. Both are evaluated on the same inputs: the formula over a grid that crosses the
asymptotic branch, and a detector fed the same heartbeats.
"""

from __future__ import annotations

import subprocess

import pytest
from beam_app import compiled_paths

from dspex_cluster.skills.failure import PhiAccrualDetector, phi_from_stats

# (elapsed, mean, std) in ms; phi depends only on their ratios, so Python gets them in seconds.
GRID = [
    (1000.0, 1000.0, 100.0),
    (1200.0, 1000.0, 100.0),
    (1500.0, 1000.0, 100.0),
    (1561.2, 1000.0, 100.0),  # near phi = 8, where the logistic and normal forms part
    (500.0, 1000.0, 100.0),
    (2000.0, 1000.0, 500.0),
    (600.0, 200.0, 100.0),
    (800.0, 200.0, 100.0),
    (4500.0, 200.0, 100.0),  # x > 25: the asymptotic branch
    (10000.0, 200.0, 100.0),
]
HEARTBEATS_MS = [0, 1000, 2000, 3000]
PROBES_MS = [3500, 4000, 4500, 5000]


def run_elixir_phi() -> tuple[list[float], list[float]]:
    """Evaluates the Elixir detector in a plain `erl` (no distribution) and reads the floats."""
    fmt = 'io:format("~s~n", [float_to_list(float(P), [{scientific, 17}])])'
    formula = ", ".join(
        f"P{i} = 'Elixir.DSPEx.Clustering.PhiAccrualDetector':phi({e}, {m}, {s}), "
        + fmt.replace("P)", f"P{i})")
        for i, (e, m, s) in enumerate(GRID)
    )
    beats = "".join(
        f"D{i + 1} = 'Elixir.DSPEx.Clustering.PhiAccrualDetector':heartbeat(D{i}, {t}), "
        for i, t in enumerate(HEARTBEATS_MS)
    )
    last = f"D{len(HEARTBEATS_MS)}"
    probes = ", ".join(
        f"Q{j} = 'Elixir.DSPEx.Clustering.PhiAccrualDetector':phi({last}, {t}), "
        + fmt.replace("P)", f"Q{j})")
        for j, t in enumerate(PROBES_MS)
    )
    expr = (
        f"{formula}, D0 = 'Elixir.DSPEx.Clustering.PhiAccrualDetector':new("
        "[{window, 100}, {min_std_ms, 100}, {pause_ms, 0}, {expected_ms, 1000}]), "
        f"{beats}{probes}, halt()."
    )
    args = ["erl", "-noshell"]
    for path in compiled_paths():
        args += ["-pa", path]
    out = subprocess.run(
        [*args, "-eval", expr], capture_output=True, text=True, timeout=120, check=True
    ).stdout.split()
    values = [float(v) for v in out]
    return values[: len(GRID)], values[len(GRID) :]


@pytest.fixture(scope="module")
def elixir_values() -> tuple[list[float], list[float]]:
    return run_elixir_phi()


def test_the_formula_agrees(elixir_values: tuple[list[float], list[float]]) -> None:
    formula, _ = elixir_values
    for (e, m, s), beam in zip(GRID, formula, strict=True):
        ours = phi_from_stats(e / 1000, m / 1000, s / 1000, cdf="normal")
        assert beam == pytest.approx(ours, rel=1e-9), (e, m, s)


def test_a_detector_fed_the_same_heartbeats_agrees(
    elixir_values: tuple[list[float], list[float]],
) -> None:
    _, probes = elixir_values
    det = PhiAccrualDetector(
        max_sample_size=100, min_std_dev_s=0.1, first_heartbeat_estimate_s=1.0, cdf="normal"
    )
    for t in HEARTBEATS_MS:
        det.heartbeat(t / 1000)
    for t, beam in zip(PROBES_MS, probes, strict=True):
        assert beam == pytest.approx(det.phi(t / 1000), rel=1e-9), t
    assert probes[-1] > 8.0 > probes[1]  # suspected by both within two missed intervals
