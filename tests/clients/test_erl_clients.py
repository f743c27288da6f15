"""erl_call and a C node on erl_interface (`ei_rpc`) against a Python node and against a BEAM node
running the app: every call is answered, nothing hangs, and the BEAM app sends nothing unasked to
a node that never announced itself as a cluster member (ei_rpc returns -1 if the first message it
gets is not the rex reply)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agents"))

from beam_app import COOKIE, start_app_node  # noqa: E402
from otp import ErlNode, unique  # noqa: E402

from dspex_cluster import Atom, Node  # noqa: E402
from dspex_cluster.etf import decode  # noqa: E402

pytestmark = pytest.mark.otp

# erl_call and the C node get at most this long; the bug they guard against is a hang
CLIENT_TIMEOUT_S = 15
# long enough for anything a peer sends on nodeup (heartbeats, pings, hellos) to arrive first
SETTLE_MS = 1500


@pytest_asyncio.fixture
async def py(epmd) -> AsyncIterator[Node]:  # type: ignore[no-untyped-def]
    node = Node(f"{unique('py')}@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port)
    await node.start()
    node.expose("pymath", math)
    try:
        yield node
    finally:
        await node.stop()


@pytest.fixture(scope="module")
def app_beam(epmd) -> Iterator[ErlNode]:  # type: ignore[no-untyped-def]
    node = start_app_node(epmd.port, COOKIE, "capp")
    try:
        yield node
    finally:
        node.stop()


def run_client(argv: list[str], epmd_port: int, stdin: str | None = None) -> str:
    env = dict(os.environ, ERL_EPMD_PORT=str(epmd_port))
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, env=env, timeout=CLIENT_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{Path(argv[0]).name} hung (no answer in {CLIENT_TIMEOUT_S} s): {argv[1:]}")
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return done.stdout.strip()


def cnode_rpc(cnode: str, epmd_port: int, target: str, module: str, fun: str, args: str) -> object:
    """One ei_rpc from a fresh C node; the decoded reply."""
    own = f"{unique('cn')}@127.0.0.1"
    out = run_client([cnode, COOKIE, own, target, str(SETTLE_MS), module, fun, args], epmd_port)
    assert out.startswith("OK "), out
    return decode(b"\x83" + bytes.fromhex(out[3:]))


def erl_call_argv(erl_call: str, target: str, *rest: str) -> list[str]:
    return [erl_call, "-c", COOKIE, "-n", target, "-r", *rest]


# -- against a Python node ---------------------------------------------------------------------


async def test_erl_call_apply_on_python(erl_call: str, py: Node, epmd) -> None:  # type: ignore[no-untyped-def]
    out = await _run(erl_call_argv(erl_call, py.name, "-a", "pymath sqrt [2.0]"), epmd.port)
    assert float(out) == pytest.approx(math.sqrt(2.0), rel=1e-5)
    # -h names erl_call's own node; -fetch_stdout sends a different group leader
    argv = [erl_call, "-c", COOKIE, "-n", py.name, "-h", unique("caller")]
    assert float(await _run([*argv, "-a", "pymath sqrt [4.0]"], epmd.port)) == 2.0
    argv = erl_call_argv(erl_call, py.name, "-fetch_stdout", "-a", "pymath floor [2.5]")
    assert await _run(argv, epmd.port) == "2"


async def test_erl_call_errors_on_python_are_answered(erl_call: str, py: Node, epmd) -> None:  # type: ignore[no-untyped-def]
    out = await _run(erl_call_argv(erl_call, py.name, "-a", 'os system ["ls"]'), epmd.port)
    assert out.startswith("{badrpc, {'EXIT', {undef, [{os, system, [\"ls\"], []}]}}}"), out
    out = await _run(erl_call_argv(erl_call, py.name, "-a", "pymath sqrt [-1.0]"), epmd.port)
    assert "python_exception" in out and "ValueError" in out
    # -e: Erlang expressions cannot be evaluated here; the answer says so
    out = await _run(erl_call_argv(erl_call, py.name, "-e"), epmd.port, stdin="1 + 1.\n")
    assert out.startswith('{error, "a Python node') and "erl_call -e" in out
    # -q asks the node to halt: not exposed, so refused, and the node lives on
    await _run(erl_call_argv(erl_call, py.name, "-q"), epmd.port)
    out = await _run(erl_call_argv(erl_call, py.name, "-a", "pymath sqrt [9.0]"), epmd.port)
    assert float(out) == 3.0


async def test_c_node_ei_rpc_to_python(cnode: str, py: Node, epmd) -> None:  # type: ignore[no-untyped-def]
    reply = await _cnode(cnode, epmd.port, py.name, "pymath", "sqrt", "[2.0]")
    assert reply == pytest.approx(math.sqrt(2.0))
    reply = await _cnode(cnode, epmd.port, py.name, "nomod", "nofun", "[1, two]")
    assert reply == (
        Atom("badrpc"),
        (Atom("EXIT"), (Atom("undef"), [(Atom("nomod"), Atom("nofun"), [1, Atom("two")], [])])),
    )


# -- against a BEAM node running the app --------------------------------------------------------


async def test_c_node_ei_rpc_to_app_beam(cnode: str, app_beam: ErlNode, epmd) -> None:  # type: ignore[no-untyped-def]
    """The C node waits after connecting: a heartbeat, ping or hello from membership or
    discovery would arrive before the rex reply and make ei_rpc fail."""
    reply = await _cnode(cnode, epmd.port, app_beam.name, "erlang", "node", "[]")
    assert reply == Atom(app_beam.name)
    members = app_beam.eval(
        "[maps:get(node, M) || M <- 'Elixir.DSPEx.Clustering':members(), not maps:get(local, M)]"
    )
    assert not [m for m in members if str(m).startswith("cn")], members


async def test_erl_call_on_app_beam(erl_call: str, app_beam: ErlNode, epmd) -> None:  # type: ignore[no-untyped-def]
    argv = erl_call_argv(erl_call, app_beam.name, "-a", "erlang node []")
    assert await _run(argv, epmd.port) == f"'{app_beam.name}'"
    out = await _run(erl_call_argv(erl_call, app_beam.name, "-e"), epmd.port, stdin="1 + 1.\n")
    assert out == "{ok, 2}"


async def _run(argv: list[str], epmd_port: int, stdin: str | None = None) -> str:
    import asyncio

    return await asyncio.to_thread(run_client, argv, epmd_port, stdin)


async def _cnode(cnode: str, port: int, target: str, module: str, fun: str, args: str) -> object:
    import asyncio

    return await asyncio.to_thread(cnode_rpc, cnode, port, target, module, fun, args)
