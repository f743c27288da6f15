"""The README's "a node of your own" example runs as written (names, cookie file and epmd port
swapped for the test's) against a BEAM node running the app: it joins, is called over :erpc and
GenServer.call, its supervised counter is restarted after a crash, and SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from beam_app import COOKIE, start_app_node
from otp import ErlNode, unique

pytestmark = pytest.mark.otp

REPO = Path(__file__).resolve().parents[2]


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## From Python: a node of your own") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def beam(epmd) -> Iterator[ErlNode]:  # type: ignore[no-untyped-def]
    node = start_app_node(epmd.port, COOKIE, "readme")
    try:
        yield node
    finally:
        node.stop()


def test_the_readme_example_runs(beam: ErlNode, epmd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cookie = tmp_path / "cookie"
    cookie.write_text(COOKIE)
    py = f"{unique('py')}@127.0.0.1"
    code = (
        readme_example()
        .replace("py3@127.0.0.1", py)
        .replace("beam1@127.0.0.1", beam.name)
        .replace("/tmp/cookie", str(cookie))
    )
    script = tmp_path / "example.py"
    script.write_text(code)
    env = dict(os.environ, ERL_EPMD_PORT=str(epmd.port))
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first == beam.name, first + (proc.stdout.read() if proc.poll() is not None else "")
        assert proc.stdout.readline().strip() == "{}"  # the relay's subscriptions (a map)
        assert beam.eval(f"erpc:call('{py}', pymath, sqrt, [16.0])") == 4.0
        call = f"gen_server:call({{counter, '{py}'}}, hi, 5000)"
        assert beam.eval(call) == 1 and beam.eval(call) == 2
        # a crash: the supervisor starts a fresh counter under the same name
        beam.eval(f"catch gen_server:call({{counter, '{py}'}}, crash, 5000)")
        deadline = time.monotonic() + 5
        while beam.eval(f"catch {call}") != 1:
            assert time.monotonic() < deadline, "the counter was not restarted"
            time.sleep(0.1)
        members = beam.eval(
            "[{maps:get(node, M), maps:get(kind, M)} || M <- 'Elixir.DSPEx.Clustering':members()]"
        )
        assert (py, "python") in [(str(n), str(k)) for n, k in members]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
