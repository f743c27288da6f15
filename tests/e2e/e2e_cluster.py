"""Helpers for the end-to-end tests: the Python agent node as a child OS process (so a test can
kill -9 it and start it again), polling, and what a BEAM node's Python advisor sees."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "interop"))

from otp import ErlNode  # noqa: E402

EX = "'Elixir.DSPEx.Clustering'"


class AgentNodeProcess:
    """`python -m dspex_cluster agent-node` as a child process."""

    def __init__(self, name: str, epmd_port: int, join: list[str], cookie_file: Path) -> None:
        self.name = name
        self.cookie_file = cookie_file
        self.args = [sys.executable, "-m", "dspex_cluster", "agent-node", "--name", name]
        self.args += ["--cookie-file", str(cookie_file), "--epmd-port", str(epmd_port)]
        for j in join:
            self.args += ["--join", j]
        self.log = cookie_file.parent / f"{name.split('@')[0]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while b"up with the clustering agents" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("agent node did not start:\n" + self.log.read_text())
            time.sleep(0.1)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def wait_for(probe, timeout: float = 20.0, every: float = 0.2):  # type: ignore[no-untyped-def]
    """Polls `probe` until it returns something truthy; that value (else AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {value!r})")
        time.sleep(every)


def advisor_sees(beam: ErlNode, py: str) -> bool:
    return py in [str(n) for n in beam.eval(f"{EX[:-1]}.PythonAdvisor':agent_nodes()")]


def connect(beams: list[ErlNode], py: str) -> None:
    """Each BEAM node dials the Python node (hidden nodes do not mesh by themselves; discovery
    is off in tests) and waits until its advisor counts it as a Python agent node."""
    for b in beams:
        wait_for(lambda b=b: b.eval(f"net_kernel:connect_node('{py}')") is True)
        wait_for(lambda b=b: advisor_sees(b, py))
