"""`python -m dspex_cluster node ...` until SIGTERM, and the `demo` session (`make run`)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from otp import Epmd, ErlNode, beval, unique

COOKIE = "dspex-test-cookie"


async def test_node_command_serves_exposed_module_until_sigterm(
    beam: ErlNode, epmd: Epmd, tmp_path: Path
) -> None:
    cookie_file = tmp_path / "cookie"
    cookie_file.write_text(COOKIE)
    name = f"{unique('cli')}@127.0.0.1"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dspex_cluster",
        "node",
        "--name",
        name,
        "--cookie-file",
        str(cookie_file),
        "--hidden",
        "--expose",
        "pymath=math",
        "--epmd-port",
        str(epmd.port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert name in line.decode()
        assert await beval(beam, f"erpc:call('{name}', pymath, sqrt, [16.0])") == 4.0
        got = await beval(beam, f"rpc:call('{name}', math, sqrt, [16.0])")
        assert got[0] == "badrpc"  # exposed as pymath only
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        output = (await proc.stdout.read()).decode()
        assert COOKIE not in output
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_demo_runs_and_cleans_up() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ERL_EPMD_PORT"}
    done = subprocess.run(
        [sys.executable, "-m", "dspex_cluster", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "gen_server:call({demo_counter, Py}, hello) -> {hello_from_python,1,hello}" in out
    assert "erpc:call(Py, demo, add, [2, 40]) -> 42" in out
    assert "'DOWN' for {doomed," in out and "with reason killed" in out
    assert "Atom('demo_reason')" in out
    assert "done: every process stopped" in out
