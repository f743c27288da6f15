"""run_agent_node beside a BEAM node started by beam/bin/dspex-node (as a user assembles a
cluster by hand): the BEAM node's own GenServer.call reaches the Python load balancer."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from beam_app import BEAM_DIR, COOKIE
from otp import unique

from dspex_cluster import Atom, Node
from dspex_cluster.cluster import AgentSettings, run_agent_node
from dspex_cluster.runtime import Exit, RpcError

pytestmark = pytest.mark.otp


@pytest.fixture
def launched(epmd) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A BEAM node from the launcher, stopped by SIGTERM to its PID."""
    name = f"{unique('hand')}@127.0.0.1"
    env = dict(os.environ, ERL_EPMD_PORT=str(epmd.port), DSPEX_DISCOVERY="static")
    proc = subprocess.Popen(
        [str(BEAM_DIR / "bin" / "dspex-node"), "--name", name, "--cookie", COOKIE],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield name
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


async def test_run_agent_node_serves_a_launched_beam_node(launched: str, epmd) -> None:  # type: ignore[no-untyped-def]
    client = Node(f"{unique('cli')}@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port)
    await client.start()
    agent_name = f"{unique('agents')}@127.0.0.1"
    ready = asyncio.Event()
    task = asyncio.create_task(
        run_agent_node(
            agent_name,
            COOKIE,
            join=[launched],
            epmd_port=epmd.port,
            settings=AgentSettings(host_vitals_interval_s=None),
            ready=ready,
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 10)
        place = (Atom("place"), {Atom("name"): Atom("w")}, [])
        deadline = time.monotonic() + 60  # the launcher may compile first
        answer = None
        while time.monotonic() < deadline:
            try:
                # the BEAM node itself calls the Python agent (GenServer.call from Elixir)
                answer = await client.rpc(
                    launched,
                    "Elixir.GenServer",
                    "call",
                    [(Atom("dspex_load_balancer"), Atom(agent_name)), place, 2000],
                    timeout=5,
                )
                if answer == (Atom("ok"), Atom(launched)):
                    break
            except (Exit, RpcError, ConnectionError, TimeoutError):
                pass  # not up yet, or no fresh load report yet
            await asyncio.sleep(0.3)
        assert answer == (Atom("ok"), Atom(launched))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.stop()
    assert task.cancelled()
