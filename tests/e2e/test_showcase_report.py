"""The main job's pure parts: the workload plan and the report (no cluster needed)."""

from __future__ import annotations

import json
from pathlib import Path

from dspex_cluster.showcase.report import write_reports
from dspex_cluster.showcase.scenario import PhaseResult, Timeline, make_plan


def test_the_same_round_gives_the_same_workload_whatever_the_placement() -> None:
    t = Timeline()
    learned, fallback = make_plan(t, 15, "L0", 0), make_plan(t, 15, "F0", 0)
    assert [(o, c) for o, _, c in learned] == [(o, c) for o, _, c in fallback]
    assert {i for _, i, _ in learned}.isdisjoint({i for _, i, _ in fallback})
    other_round = make_plan(t, 15, "L1", 1)
    assert [c for *_, c in other_round] != [c for *_, c in learned]
    # about rate x duration tasks, uneven costs within the bounds, sorted arrivals
    assert abs(len(learned) - t.rate_per_s * 15) < 4 * (t.rate_per_s * 15) ** 0.5
    costs = [c for *_, c in learned]
    assert min(costs) >= 5.0 and max(costs) <= t.max_cost_ms and max(costs) > 5 * min(costs)
    offsets = [o for o, *_ in learned]
    assert offsets == sorted(offsets) and offsets[-1] < 15_000


def _task(i: int, latency: float | None) -> dict:  # type: ignore[type-arg]
    return {"id": f"x{i}", "cost_ms": 10.0, "arrived_ms": i, "latency_ms": latency, "node": "b1"}


def test_a_phase_counts_unfinished_tasks_as_lost() -> None:
    p = PhaseResult(
        "learned", [_task(i, 10.0 + i) for i in range(99)] + [_task(99, None)], {}, {}, 1.0
    )
    s = p.summary()
    assert (s["tasks"], s["completed"], s["lost"]) == (100, 99, 1)
    assert s["p50_ms"] == 59.0


def test_reports_are_written_with_the_required_keys_and_figures(tmp_path: Path) -> None:
    samples = [
        {
            "t": float(t),
            "phase": "degrade",
            "placements": {"b1": t, "b2": t, "b3": min(t, 3)},
            "running": {"b1": 1},
            "anomaly": {"b1": 0.0, "b3": t / 10},
            "p_fail": {"b3": t / 10},
        }
        for t in range(10)
    ]
    report = {
        "tasks_completed": 3,
        "tasks_submitted": 3,
        "tasks_lost": 0,
        "prediction_lead_s": 4.0,
        "detection_ms": 50.0,
        "p50_learned_ms": 10.0,
        "p99_learned_ms": 30.0,
        "p50_fallback_ms": 20.0,
        "p99_fallback_ms": 90.0,
        "victim": "b3_1@127.0.0.1",
        "marks_s": {"degrade": 2.0, "prediction": 4.0, "drain": 4.5, "kill": 8.0},
        "phases": {},
        "events": [{"t": 8.0, "text": "kill -9 b3 <pid>"}],
        "samples": samples,
        "latencies_ms": {"learned": [10.0, 20.0, 30.0], "fallback": [20.0, None, 90.0]},
        "machine": {"cpu": "test", "cores": 2, "date": "today"},
        "total_s": 1.0,
    }
    write_reports(report, tmp_path)
    back = json.loads((tmp_path / "report.json").read_text())
    assert back["tasks_lost"] == 0 and back["p99_fallback_ms"] == 90.0
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "kill -9 b3 &lt;pid&gt;" in page  # event text is escaped
