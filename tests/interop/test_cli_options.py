"""`python -m dspex_cluster node|agent-node`: --join for `node`, --net-ticktime for both."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from otp import Epmd, ErlNode, beval, unique

from dspex_cluster.cli import main

COOKIE = "dspex-test-cookie"


@pytest.fixture
def lone_beam(epmd: Epmd) -> Iterator[ErlNode]:
    """A BEAM node of this test's own: the tests freeze it (SIGSTOP)."""
    node = ErlNode(epmd.port, "otp25", cookie=COOKIE)
    try:
        yield node
    finally:
        os.kill(node.proc.pid, signal.SIGCONT)
        node.stop()


async def start_cli(epmd: Epmd, tmp_path: Path, *args: str) -> asyncio.subprocess.Process:
    cookie_file = tmp_path / "cookie"
    cookie_file.write_text(COOKIE)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dspex_cluster",
        *args,
        "--cookie-file",
        str(cookie_file),
        "--epmd-port",
        str(epmd.port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def read_until(proc: asyncio.subprocess.Process, text: str, timeout: float) -> str:
    """Output lines up to and including the first that contains `text`."""
    assert proc.stdout is not None
    seen = ""

    async def lines() -> str:
        nonlocal seen
        while line := (await proc.stdout.readline()).decode():  # type: ignore[union-attr]
            seen += line
            if text in line:
                return seen
        raise AssertionError(f"exited before {text!r}; output:\n{seen}")

    try:
        return await asyncio.wait_for(lines(), timeout)
    except TimeoutError:
        raise AssertionError(f"no {text!r} within {timeout} s; output:\n{seen}") from None


async def stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return proc.returncode if proc.returncode is not None else -1


async def frozen_peer_is_dropped(proc: asyncio.subprocess.Process, beam: ErlNode) -> str:
    """Freeze the BEAM node and wait for the Python side to give up on it."""
    os.kill(beam.proc.pid, signal.SIGSTOP)
    try:
        # 2 s of silence, checked every 0.5 s; the default (60 s) would say nothing here
        return await read_until(proc, "net_tick_timeout (nothing heard for 2.0 s)", 8)
    finally:
        os.kill(beam.proc.pid, signal.SIGCONT)


async def test_node_joins_at_start_and_drops_a_silent_peer_after_net_ticktime(
    lone_beam: ErlNode, epmd: Epmd, tmp_path: Path
) -> None:
    name = f"{unique('clijoin')}@127.0.0.1"
    args = ["node", "--name", name, "--join", lone_beam.name, "--net-ticktime", "2"]
    proc = await start_cli(epmd, tmp_path, *args)
    try:
        await read_until(proc, f"{name} up", 20)
        # connected by the Python node at start: the BEAM node never dialled it
        assert await beval(lone_beam, f"lists:member('{name}', nodes(hidden))") is True
        output = await frozen_peer_is_dropped(proc, lone_beam)
        assert f"closing the connection to {lone_beam.name}" in output
    finally:
        assert await stop(proc) == 0


async def test_node_logs_a_join_it_cannot_make_and_runs_on(epmd: Epmd, tmp_path: Path) -> None:
    name = f"{unique('clinojoin')}@127.0.0.1"
    absent = f"{unique('absent')}@127.0.0.1"
    proc = await start_cli(epmd, tmp_path, "node", "--name", name, "--join", absent)
    try:
        output = await read_until(proc, f"{name} up", 20)
        assert f"could not join {absent}; running without it" in output
    finally:
        assert await stop(proc) == 0


async def test_agent_node_drops_a_silent_peer_after_net_ticktime(
    lone_beam: ErlNode, epmd: Epmd, tmp_path: Path
) -> None:
    name = f"{unique('cliagent')}@127.0.0.1"
    args = ["agent-node", "--name", name, "--join", lone_beam.name, "--net-ticktime", "2"]
    proc = await start_cli(epmd, tmp_path, *args)
    try:
        await read_until(proc, "up with the clustering agents", 20)
        for _ in range(100):  # the agents' bus connects in the background
            if await beval(lone_beam, f"lists:member('{name}', nodes(hidden))"):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"{name} never connected to {lone_beam.name}")
        await frozen_peer_is_dropped(proc, lone_beam)
    finally:
        assert await stop(proc) == 0


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_net_ticktime_must_be_positive_seconds(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["node", "--name", "x@127.0.0.1", "--cookie", "c", "--net-ticktime", value])
    assert exited.value.code == 2
    assert "--net-ticktime" in capsys.readouterr().err
