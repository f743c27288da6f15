"""`make run` keeps its logs after the run; its cookie must not be among them."""

from __future__ import annotations

import stat
from pathlib import Path

from dspex_cluster.showcase.processes import LocalCluster


def test_the_run_cookie_is_private_and_removed_when_the_run_stops(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "logs")
    path = cluster.write_cookie("not-for-the-logs")
    assert path.read_text() == "not-for-the-logs"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert cluster.workdir not in path.parents
    cluster.stop_all()
    assert not path.exists() and not path.parent.exists()
    for kept in cluster.workdir.rglob("*"):
        assert b"not-for-the-logs" not in kept.read_bytes()
