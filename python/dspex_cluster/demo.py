"""`make run`: one BEAM node (plain erl) and one Python node on a private epmd, calling each other.

Everything started here is a child process stopped by its PID before returning.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import statistics
from typing import Any

from dspex_cluster.etf import Atom
from dspex_cluster.runtime import GenServer, Node, Process

# The BEAM side of the session, evaluated by `erl -eval`. It prints each result on stdout.
BEAM_SCRIPT = r"""
register(demo_main, self()),
Py = list_to_atom(os:getenv("DSPEX_PY_NODE")),
Show = fun(X) -> io_lib:print(X, 1, 100000, -1) end,
Say = fun(F, A) -> io:format("[beam] " ++ F ++ "~n", [Show(X) || X <- A]) end,
true = net_kernel:connect_node(Py),
Say("connected to ~s (nodes(hidden) = ~s)", [Py, nodes(hidden)]),
Call = fun() -> gen_server:call({demo_counter, Py}, hello) end,
Say("gen_server:call({demo_counter, Py}, hello) -> ~s", [Call()]),
Say("gen_server:call({demo_counter, Py}, hello) -> ~s", [Call()]),
Say("erpc:call(Py, demo, add, [2, 40]) -> ~s", [erpc:call(Py, demo, add, [2, 40])]),
Mean = erpc:call(Py, demo, mean, [[1.0, 2.0, 6.0]]),
Say("erpc:call(Py, demo, mean, [[1.0, 2.0, 6.0]]) -> ~s", [Mean]),
try erpc:call(Py, demo, fail, [<<"bad input">>])
catch error:{exception, Reason, _Stack} ->
    Say("erpc:call(Py, demo, fail, ...) raised error ~s", [Reason])
end,
Say("rpc:call(Py, os, cmd, [\"ls\"]) (not exposed) -> ~s", [rpc:call(Py, os, cmd, ["ls"])]),
Echo = fun Echo() ->
    receive {'$gen_call', From, Req} -> gen_server:reply(From, {echo, Req}), Echo() end
end,
register(beam_echo, spawn(Echo)),
register(victim, spawn(fun() -> receive die -> exit(demo_reason) end end)),
Ref = erlang:monitor(process, {doomed, Py}),
Say("ready", []),
receive
    {'DOWN', Ref, process, Obj, Why} ->
        Say("monitor fired: 'DOWN' for ~s with reason ~s", [Obj, Why])
after 15000 -> Say("no DOWN arrived", [])
end,
receive stop -> Say("stopping", []) after 15000 -> ok end,
halt().
"""


class DemoCounter(GenServer):
    async def init(self) -> None:
        self.count = 0

    async def handle_call(self, request: Any, caller: Any) -> Any:
        self.count += 1
        return (Atom("hello_from_python"), self.count, request)


class Doomed(Process):
    async def run(self) -> None:
        await self.receive()


class Trapper(Process):
    trap_exit = True

    def __init__(self) -> None:
        self.exits: asyncio.Queue[Any] = asyncio.Queue()

    async def run(self) -> None:
        while True:
            self.exits.put_nowait(await self.receive())


def _fail(text: bytes) -> None:
    raise ValueError(text.decode())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_demo(timeout: float = 45.0) -> int:
    erl, epmd_exe = shutil.which("erl"), shutil.which("epmd")
    if erl is None or epmd_exe is None:
        print("erl/epmd not found: run `make setup` (installs Erlang/OTP)")
        return 1
    port = _free_port()
    cookie = secrets.token_hex(16)
    epmd = await asyncio.create_subprocess_exec(
        epmd_exe,
        "-port",
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    beam: asyncio.subprocess.Process | None = None
    node: Node | None = None
    try:
        await _wait_port(port)
        node = Node(f"demo_py_{port}@127.0.0.1", cookie=cookie, epmd_port=port)
        await node.start()
        print(f"[py] epmd on port {port}; Python node {node.name} up")
        await node.spawn(DemoCounter(), name="demo_counter")
        doomed = await node.spawn(Doomed(), name="doomed")
        node.expose("demo", {"add": lambda a, b: a + b, "mean": statistics.fmean, "fail": _fail})
        beam_name = f"demo_beam_{port}@127.0.0.1"
        beam = await asyncio.create_subprocess_exec(
            erl,
            "-noshell",
            "-start_epmd",
            "false",
            "-name",
            beam_name,
            "-setcookie",
            cookie,
            "-eval",
            BEAM_SCRIPT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**_env(), "ERL_EPMD_PORT": str(port), "DSPEX_PY_NODE": str(node.name)},
        )
        print(f"[py] started BEAM node {beam_name} (OS pid {beam.pid})")
        ready = asyncio.Event()
        printer = asyncio.create_task(_print_beam(beam, ready))
        ready_wait = asyncio.create_task(ready.wait())
        exited = asyncio.create_task(beam.wait())
        await asyncio.wait({ready_wait, exited}, timeout=timeout, return_when="FIRST_COMPLETED")
        if not ready.is_set():
            ready_wait.cancel()
            print("[py] the BEAM node did not get ready; see its output above")
            return 1
        await asyncio.wait_for(_python_side(node, Atom(beam_name), doomed), timeout)
        await asyncio.wait_for(beam.wait(), timeout)
        await printer
        print("[py] done: every process stopped")
        return 0 if beam.returncode == 0 else 1
    finally:
        if node is not None:
            await node.stop()
        for proc in (beam, epmd):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()


async def _python_side(node: Node, beam: Atom, doomed: Any) -> None:
    release = await node.rpc(beam, "erlang", "system_info", [Atom("otp_release")])
    print(f"[py] node.rpc(beam, erlang, system_info, [otp_release]) -> {bytes(release).decode()}")
    reply = await node.call((Atom("beam_echo"), beam), Atom("hello"))
    print(f"[py] node.call((beam_echo, beam), hello) -> {reply}")
    trapper = Trapper()
    await node.spawn(trapper)
    victim = await node.rpc(beam, "erlang", "whereis", [Atom("victim")])
    trapper.link(victim)
    await node.rpc(beam, "erlang", "send", [victim, Atom("die")])
    print(
        f"[py] linked to BEAM {victim}, told it to die; trapped: "
        f"{await asyncio.wait_for(trapper.exits.get(), 10)}"
    )
    print(f"[py] killing Python process {doomed} that BEAM monitors")
    node.exit(doomed, Atom("kill"))
    await asyncio.sleep(0.3)
    node.send((Atom("demo_main"), beam), Atom("stop"))


async def _print_beam(beam: asyncio.subprocess.Process, ready: asyncio.Event) -> None:
    assert beam.stdout is not None
    async for raw in beam.stdout:
        line = raw.decode(errors="replace").rstrip()
        if line == "[beam] ready":
            ready.set()
        elif line:
            print(line, flush=True)


async def _wait_port(port: int) -> None:
    for _ in range(100):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.03)
    raise RuntimeError(f"epmd did not start on port {port}")


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "ERL_LIBS"}
