"""`python -m dspex_cluster node|agent-node`: every node option, by flag and by environment
variable (the errors are in test_cli_errors.py, the launcher's options in launcher_test.exs)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from otp import Epmd, ErlNode, beval, unique

from dspex_cluster import __version__
from dspex_cluster.cli import main
from dspex_cluster.nodeconfig import CookieError, expand_node_name, read_cookie

COOKIE = "dspex-test-cookie"
LAUNCHER = Path(__file__).resolve().parents[2] / "beam" / "bin" / "dspex-node"


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


async def test_node_retries_a_join_it_cannot_make_with_backoff_logged_once_per_step(
    epmd: Epmd, tmp_path: Path
) -> None:
    name = f"{unique('clinojoin')}@127.0.0.1"
    absent = f"{unique('absent')}@127.0.0.1"
    proc = await start_cli(epmd, tmp_path, "node", "--name", name, "--join", absent)
    try:
        output = await read_until(proc, f"{name} up", 20)
        assert f"cannot join {absent}: name not registered with epmd" in output
        # 0 s, 0.5 s, 1.5 s, 3.5 s: four attempts in the first four seconds (at a fixed 0.5 s
        # there were eight), each logged once with the delay before the next
        output += await read_until(proc, "retrying in 4.0 s", 15)
        retries = [line for line in output.splitlines() if f"cannot join {absent}" in line]
        delays = [line.rsplit("retrying in ", 1)[1] for line in retries]
        assert delays == ["0.5 s", "1.0 s", "2.0 s", "4.0 s"], output
        assert "cannot connect to" not in output  # the dial itself logs at INFO only
    finally:
        assert await stop(proc) == 0


async def test_agent_node_backs_off_while_no_beam_node_answers(epmd: Epmd, tmp_path: Path) -> None:
    """The source of the ~20 "name not registered" warnings at the start of `make run`: the
    signal bus dialled its --join node every 0.5 s, each failure a warning."""
    name = f"{unique('clibus')}@127.0.0.1"
    absent = f"{unique('absent')}@127.0.0.1"
    proc = await start_cli(epmd, tmp_path, "agent-node", "--name", name, "--join", absent)
    try:
        output = await read_until(proc, "retrying in 2.0 s", 30)
        lines = [
            line for line in output.splitlines() if "no BEAM node for the signal relay" in line
        ]
        assert [line.rsplit("retrying in ", 1)[1] for line in lines] == ["0.5 s", "1.0 s", "2.0 s"]
        assert all("WARNING" in line and absent in line for line in lines), lines
        assert "cannot connect to" not in output
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
    assert main(["node", "--name", "x@127.0.0.1", "--cookie", "c", "--net-ticktime", value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--net-ticktime" in err


def python_cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSPEX_")}
    env.pop("ERLANG_COOKIE", None)
    env.update(extra)
    return env


async def spawn(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dspex_cluster",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env if env is not None else python_cli_env(),
    )


async def test_cookie_given_with_flag_is_on_no_command_line_and_works(
    lone_beam: ErlNode, epmd: Epmd
) -> None:
    name = f"{unique('clicookie')}@127.0.0.1"
    proc = await spawn(
        "node", "--name", name, "--cookie", COOKIE, "--epmd-port", str(epmd.port),
        "--expose", "pymath=math",
    )  # fmt: skip
    try:
        await read_until(proc, f"{name} up", 20)
        # the same process (exec keeps the PID), started over without the cookie in argv
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert b"--cookie-fd" in cmdline and COOKIE.encode() not in cmdline
        assert COOKIE.encode() not in Path(f"/proc/{proc.pid}/environ").read_bytes()
        # and it is the node's cookie: the BEAM node (same cookie) can call it
        assert await beval(lone_beam, f"erpc:call('{name}', pymath, sqrt, [4.0])") == 2.0
    finally:
        assert await stop(proc) == 0


@pytest.mark.parametrize("where", ["before", "after"])
async def test_verbose_before_or_after_the_subcommand(where: str, epmd: Epmd) -> None:
    name = f"{unique('cliv')}@127.0.0.1"
    node_args = ["node", "--name", name, "--epmd-port", str(epmd.port)]
    env = python_cli_env(DSPEX_COOKIE=COOKIE)
    args = ["-v", *node_args] if where == "before" else [*node_args, "-v"]
    proc = await spawn(*args, env=env)
    try:
        output = await read_until(proc, f"{name} up (hidden)", 20)
        assert f"INFO dspex_cluster.runtime.node: node {name} up on port" in output
    finally:
        assert await stop(proc) == 0


def test_version_is_the_same_on_both_kinds_of_node() -> None:
    python = subprocess.run(
        [sys.executable, "-m", "dspex_cluster", "node", "--version"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    launcher = subprocess.run(
        [str(LAUNCHER), "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    py_version = python.stdout.strip().removeprefix("dspex-cluster ")
    assert py_version == __version__
    assert launcher.stdout.strip() == f"dspex-node {py_version}"


@pytest.mark.parametrize(("profile", "debug"), [("production", False), ("development", True)])
async def test_profile_production_never_logs_at_debug(
    profile: str, debug: bool, epmd: Epmd
) -> None:
    name = f"{unique('cliprof')}@127.0.0.1"
    proc = await spawn(
        "-vv", "node", "--name", name, "--epmd-port", str(epmd.port), "--profile", profile,
        env=python_cli_env(DSPEX_COOKIE=COOKIE),
    )  # fmt: skip
    try:
        output = await read_until(proc, f"{name} up", 20)
        assert ("DEBUG" in output) is debug, output
        assert "INFO dspex_cluster.runtime.node" in output  # -vv still gives INFO
    finally:
        assert await stop(proc) == 0


async def test_every_node_setting_from_environment_variables(
    lone_beam: ErlNode, epmd: Epmd, tmp_path: Path
) -> None:
    """No flags at all: DSPEX_NAME (a bare name), DSPEX_JOIN, ERL_EPMD_PORT, DSPEX_NET_TICKTIME,
    DSPEX_COOKIE_FILE, DSPEX_HIDDEN=false."""
    cookie_file = tmp_path / "cookie"
    cookie_file.write_text(COOKIE + "\n")
    alive = unique("clienv")
    env = python_cli_env(
        DSPEX_NAME=alive,
        DSPEX_JOIN=lone_beam.name.split("@")[0],  # bare as well: @127.0.0.1
        ERL_EPMD_PORT=str(epmd.port),
        DSPEX_NET_TICKTIME="2",
        DSPEX_COOKIE_FILE=str(cookie_file),
        DSPEX_HIDDEN="false",
    )
    proc = await spawn("node", env=env)
    try:
        name = f"{alive}@127.0.0.1"
        await read_until(proc, f"{name} up (visible)", 20)
        # joined at start, visible: in the BEAM node's nodes() (not only nodes(hidden)); the
        # BEAM's 60 s ticktime is quiet for longer than our 2 s, so the link may be re-made
        for _ in range(50):
            if await beval(lone_beam, f"lists:member('{name}', nodes())"):
                break
            await asyncio.sleep(0.1)
        else:
            nodes = await beval(lone_beam, "{nodes(), nodes(hidden)}")
            raise AssertionError(f"{name} not in nodes() of {lone_beam.name}: {nodes}")
        await frozen_peer_is_dropped(proc, lone_beam)  # the 2 s ticktime
    finally:
        assert await stop(proc) == 0


async def test_epmd_discovery_joins_what_epmd_lists_on_hosts(
    lone_beam: ErlNode, epmd: Epmd, tmp_path: Path
) -> None:
    name = f"{unique('clidisc')}@127.0.0.1"
    args = ["node", "--name", name, "--discovery", "epmd", "--hosts", "127.0.0.1"]
    proc = await start_cli(epmd, tmp_path, *args)
    try:
        await read_until(proc, f"{name} up", 20)
        for _ in range(100):  # no --join: found in epmd's list
            if await beval(lone_beam, f"lists:member('{name}', nodes(hidden))"):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"{name} never connected to {lone_beam.name}")
    finally:
        assert await stop(proc) == 0


def test_cookie_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """First found: --cookie-file, --cookie, $DSPEX_COOKIE_FILE, $DSPEX_COOKIE, $ERLANG_COOKIE,
    ~/.erlang.cookie."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".erlang.cookie").write_text("from-home\n")
    flag_file = tmp_path / "flag"
    flag_file.write_text(" from-flag-file \n")
    env_file = tmp_path / "env"
    env_file.write_text("from-env-file")
    env = {
        "DSPEX_COOKIE_FILE": str(env_file),
        "DSPEX_COOKIE": "from-dspex-cookie",
        "ERLANG_COOKIE": "from-erlang-cookie",
    }
    assert read_cookie(flag_file, "from-flag", env) == "from-flag-file"
    assert read_cookie(None, "from-flag", env) == "from-flag"
    assert read_cookie(None, None, env) == "from-env-file"
    del env["DSPEX_COOKIE_FILE"]
    assert read_cookie(None, None, env) == "from-dspex-cookie"
    del env["DSPEX_COOKIE"]
    assert read_cookie(None, None, env) == "from-erlang-cookie"
    del env["ERLANG_COOKIE"]
    assert read_cookie(None, None, env) == "from-home"
    (tmp_path / ".erlang.cookie").unlink()
    with pytest.raises(CookieError, match="no cookie given"):
        read_cookie(None, None, env)


@pytest.mark.parametrize(
    ("given", "full"),
    [
        ("py1", "py1@127.0.0.1"),
        ("py1@host", "py1@host"),
        ("py-1_a@h.example.com", "py-1_a@h.example.com"),
    ],
)
def test_name_expansion(given: str, full: str) -> None:
    assert expand_node_name(given) == full
