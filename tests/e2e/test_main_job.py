"""The main job (`make run`) in its short form: the report's invariants."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.otp

REPO = Path(__file__).resolve().parents[2]


def test_quick_main_job_loses_nothing_and_writes_the_reports(tmp_path: Path) -> None:
    out = tmp_path / "latest"
    proc = subprocess.run(
        [sys.executable, "-m", "dspex_cluster", "platform", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    for key in (
        "tasks_completed",
        "tasks_lost",
        "prediction_lead_s",
        "detection_ms",
        "p99_learned_ms",
        "p99_fallback_ms",
    ):
        assert key in report
    assert report["tasks_lost"] == 0
    assert report["tasks_completed"] == report["tasks_submitted"] > 0
    # the same workload ran under both placements
    assert report["phases"]["learned"]["tasks"] == report["phases"]["fallback"]["tasks"]
    assert report["p99_learned_ms"] > 0 and report["p99_fallback_ms"] > 0
    # the kill was seen (a closed connection: well under a second)
    assert report["detection_ms"] is not None and report["detection_ms"] < 1000
    assert "kill" in report["marks_s"]
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3
    # the live display printed status lines and the events
    assert "kill -9" in proc.stdout and "learned" in proc.stdout
