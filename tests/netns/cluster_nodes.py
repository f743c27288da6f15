"""Nodes on the namespace hosts: the Python control node's handle, BEAM nodes started by the
launcher, and a Python node started by the CLI — each stopped by PID, also on failure."""

from __future__ import annotations

import asyncio
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hosts import Host, LauncherNode, NamespaceLoop

from dspex_cluster import Atom, Node

# Short enough that a cut link ends connections within seconds on both sides (BEAM and Python);
# heartbeats (membership, every 100 ms) keep healthy connections far busier than that.
NET_TICKTIME = 4
ERL_FLAGS = f"-kernel net_ticktime {NET_TICKTIME}"


class Control:
    """A Python node in a host namespace, driven from the test thread."""

    def __init__(self, loop: NamespaceLoop, node: Node, cookie_file: Path) -> None:
        self.loop = loop
        self.node = node
        self.cookie_file = cookie_file

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return self.loop.run(coro, timeout)

    def rpc(self, beam: str, module: str, fun: str, args: list[Any], timeout: float = 5) -> Any:
        return self.run(self.node.rpc(Atom(beam), module, fun, args, timeout=timeout), timeout + 5)

    def members(self, beam: str) -> dict[str, dict[str, Any]]:
        """`DSPEx.Clustering.members()` on `beam`, by node name."""
        members = self.rpc(beam, "Elixir.DSPEx.Clustering", "members", [])
        return {str(m[Atom("node")]): {str(k): v for k, v in m.items()} for m in members}

    def connected(self, beam: str, other: str) -> bool:
        """Whether `beam` has a visible connection to `other`."""
        return Atom(other) in self.rpc(beam, "erlang", "nodes", [])

    def wait_app(self, beam: LauncherNode, timeout: float = 90) -> None:
        """Until the :dspex_cluster app answers on `beam` (the launcher compiles, then boots)."""
        self.run(_wait_app(self.node, beam, timeout), timeout + 10)


async def _wait_app(node: Node, beam: LauncherNode, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: BaseException | None = None
    while loop.time() < deadline:
        if beam.proc.poll() is not None:
            raise RuntimeError(f"{beam.name} exited:\n{beam.log_text()[-3000:]}")
        try:
            await node.rpc(Atom(beam.name), "Elixir.DSPEx.Clustering", "members", [], timeout=2)
            return
        except Exception as exc:  # not registered yet, cookie not set yet, app starting ...
            last = exc
        await asyncio.sleep(0.25)
    raise TimeoutError(f"{beam.name} not up ({last!r}):\n{beam.log_text()[-3000:]}")


def wait_for(what: str, probe: Any, timeout: float, interval: float = 0.1) -> Any:
    """Call `probe()` until it returns something truthy; its value. Probe errors count as no."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except Exception as exc:  # e.g. a node not reachable yet
            last = exc
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


@contextmanager
def launch_nodes(
    control: Control, specs: list[tuple[Host, str, list[str]]], log_dir: Path
) -> Iterator[list[LauncherNode]]:
    """Start one launcher node per (host, alive name, launcher args), all at once; wait until
    each app answers; stop all of them (by process group) on exit, also on failure."""
    nodes: list[LauncherNode] = []
    try:
        for host, alive, args in specs:
            nodes.append(LauncherNode(host, alive, control.cookie_file, args, log_dir, ERL_FLAGS))
        for node in nodes:
            control.wait_app(node)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@contextmanager
def cli_python_node(
    host: Host, alive: str, cookie_file: Path, expose: list[str]
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`python -m dspex_cluster node ...` inside `host`, until its "up" line; stopped by PID."""
    name = f"{alive}@{host.address}"
    argv = [sys.executable, "-m", "dspex_cluster", "node", "--name", name]
    argv += ["--cookie-file", str(cookie_file), "--epmd-port", str(host.epmd_port)]
    for module in expose:
        argv += ["--expose", module]
    proc = subprocess.Popen(
        host.command(*argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        if " up " not in line:
            proc.kill()
            raise RuntimeError(f"{name} did not start: {line}{proc.stdout.read()}")
        yield name, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
