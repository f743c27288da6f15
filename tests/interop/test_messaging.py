"""Messages, gen_server calls, :erpc/:rpc and aliases between real OTP nodes and a Python node,
in both directions (each test runs against OTP 25 and OTP 28)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from otp import ErlError, ErlNode, beval

from dspex_cluster import Atom, Exit, GenServer, Node, Pid, Process
from dspex_cluster.runtime import NOREPLY, Caller, RpcError


class Counter(GenServer):
    async def init(self) -> None:
        self.n = 0
        self.parked: list[Caller] = []

    async def handle_call(self, request: Any, caller: Caller) -> Any:
        if request == "park":  # deferred: answered by the next "release"
            self.parked.append(caller)
            return NOREPLY
        if request == "release":
            released = len(self.parked)
            for waiting in self.parked:
                self.reply(waiting, Atom("released"))
            self.parked.clear()
            return released
        self.n += 1
        return (Atom("count"), self.n, request)

    async def handle_cast(self, request: Any) -> None:
        self.n += 100

    async def handle_info(self, message: Any) -> None:
        self.last_info = message


class Inbox(Process):
    def __init__(self) -> None:
        self.got: asyncio.Queue[Any] = asyncio.Queue()

    async def run(self) -> None:
        while True:
            self.got.put_nowait(await self.receive())


async def test_beam_gen_server_call_into_python(beam: ErlNode, py: Node) -> None:
    await py.spawn(Counter(), name="counter")
    got = await beval(beam, f"gen_server:call({{counter, '{py.name}'}}, hello)")
    assert got == (Atom("count"), 1, Atom("hello"))
    await beval(beam, f"gen_server:cast({{counter, '{py.name}'}}, bump)")
    got = await beval(beam, f"gen_server:call({{counter, '{py.name}'}}, [1,2])")
    assert got == (Atom("count"), 102, [1, 2])  # a list, not the string "\x01\x02"


async def test_deferred_reply(beam: ErlNode, py: Node) -> None:
    await py.spawn(Counter(), name="counter")
    expr = (
        f"Self = self(), spawn(fun() -> Self ! {{parked, gen_server:call({{counter, '{py.name}'}}, "
        f"park)}} end), timer:sleep(200), "
        f"R = gen_server:call({{counter, '{py.name}'}}, release), "
        "receive {parked, X} -> {R, X} after 5000 -> timeout end"
    )
    assert await beval(beam, expr) == (1, Atom("released"))


async def test_call_to_unknown_python_name_is_noproc_at_once(beam: ErlNode, py: Node) -> None:
    start = time.monotonic()
    got = await beval(beam, f"catch gen_server:call({{nosuch, '{py.name}'}}, hi, 10000)")
    assert time.monotonic() - start < 3
    assert got[0] == "EXIT" and got[1][0] == "noproc"


async def test_send_both_ways(beam: ErlNode, py: Node) -> None:
    inbox = Inbox()
    pid = await py.spawn(inbox, name="inbox")
    await beval(beam, f'{{inbox, \'{py.name}\'}} ! {{hello, <<"bin">>, "chars", 1.5, -7}}')
    msg = await asyncio.wait_for(inbox.got.get(), 5)
    assert msg == (Atom("hello"), b"bin", [99, 104, 97, 114, 115], 1.5, -7)
    # Erlang sends to a pid it got from us; Python sends back to an Erlang pid
    expr = (
        f"P = spawn(fun() -> receive {{From, M}} -> From ! {{echo, M}} end end), "
        f"{{inbox, '{py.name}'}} ! {{pid, P}}, ok"
    )
    await beval(beam, expr)
    _, beam_pid = await asyncio.wait_for(inbox.got.get(), 5)
    assert isinstance(beam_pid, Pid) and beam_pid.node == beam.name
    py.send(beam_pid, (pid, {Atom("k"): [1, 2, 3]}))
    assert await asyncio.wait_for(inbox.got.get(), 5) == (Atom("echo"), {Atom("k"): [1, 2, 3]})


async def test_python_calls_beam_gen_server_and_registered_send(beam: ErlNode, py: Node) -> None:
    apps = await py.call(
        (Atom("application_controller"), Atom(beam.name)), Atom("which_applications")
    )
    assert Atom("kernel") in [a[0] for a in apps]
    await beval(
        beam,
        "register(collector, spawn(fun() -> receive {from_python, _} = M -> "
        "receive {get, F} -> F ! M end end end)), ok",
    )
    py.send((Atom("collector"), Atom(beam.name)), (Atom("from_python"), 42))
    got = await beval(beam, "collector ! {get, self()}, receive M -> M after 5000 -> timeout end")
    assert got == (Atom("from_python"), 42)


async def test_python_call_to_unknown_beam_name(beam: ErlNode, py: Node) -> None:
    with pytest.raises(Exit) as err:
        await py.call((Atom("no_such_server"), Atom(beam.name)), Atom("hi"), timeout=5)
    assert err.value.reason == "noproc"


async def test_erpc_and_rpc_into_exposed_python(beam: ErlNode, py: Node) -> None:
    async def slow_add(a: int, b: int) -> int:
        await asyncio.sleep(0.01)
        return a + b

    def explode(text: bytes) -> None:
        raise ValueError(text.decode())

    py.expose("analytics", {"add": slow_add, "mul": lambda a, b: a * b, "explode": explode})
    assert await beval(beam, f"erpc:call('{py.name}', analytics, add, [2, 3])") == 5
    assert await beval(beam, f"rpc:call('{py.name}', analytics, mul, [6, 7])") == 42
    # a Python exception becomes an Erlang error naming the class and the message
    with pytest.raises(ErlError) as err:
        await beval(beam, f"erpc:call('{py.name}', analytics, explode, [<<\"bad input\">>])")
    assert err.value.cls == "error"
    kind, reason, _stack = err.value.reason
    assert kind == "exception"
    assert reason[:3] == (Atom("python_exception"), Atom("ValueError"), b"bad input")
    got = await beval(beam, f"rpc:call('{py.name}', analytics, explode, [<<\"x\">>])")
    assert got[0] == "badrpc" and got[1][1][0][1] == "ValueError"


async def test_unexposed_module_is_refused_never_imported(beam: ErlNode, py: Node) -> None:
    import sys

    assert "antigravity" not in sys.modules
    got = await beval(beam, f"rpc:call('{py.name}', antigravity, fly, [])")
    assert got == (
        Atom("badrpc"),
        (Atom("EXIT"), (Atom("undef"), [(Atom("antigravity"), Atom("fly"), [], [])])),
    )
    got = await beval(beam, f"rpc:call('{py.name}', os, system, [\"true\"])")
    assert got[0] == "badrpc"
    assert "antigravity" not in sys.modules


async def test_rpc_cast_and_block_call(beam: ErlNode, py: Node) -> None:
    seen: list[Any] = []
    py.expose("sink", {"put": seen.append})
    assert await beval(beam, f"rpc:cast('{py.name}', sink, put, [one])") is True
    assert await beval(beam, f"rpc:block_call('{py.name}', sink, put, [two])") is None
    await asyncio.sleep(0.2)
    assert seen == [Atom("one"), Atom("two")]


async def test_python_rpc_into_beam(beam: ErlNode, py: Node) -> None:
    assert await py.rpc(Atom(beam.name), "erlang", "node", []) == beam.name
    assert await py.rpc(beam.name, "lists", "seq", [1, 3]) == [1, 2, 3]
    with pytest.raises(RpcError) as err:
        await py.rpc(beam.name, "erlang", "error", [Atom("boom")])
    assert err.value.kind == "error" and err.value.reason == "boom"
    with pytest.raises(RpcError) as err:
        await py.rpc(beam.name, "erlang", "throw", [Atom("ball")])
    assert err.value.kind == "throw"
    with pytest.raises(RpcError) as err:
        await py.rpc(beam.name, "no_such_module", "f", [])
    assert err.value.reason == "undef"


async def test_alias_send_both_ways(beam: ErlNode, py: Node) -> None:
    inbox = Inbox()
    await py.spawn(inbox, name="inbox")
    # BEAM gives Python an alias; Python sends to it (ALIAS_SEND out)
    expr = (
        f"A = alias(), {{inbox, '{py.name}'}} ! {{reply_to, A}}, "
        "receive {via_alias, X} -> X after 5000 -> timeout end"
    )
    task = asyncio.create_task(beval(beam, expr))
    _, alias = await asyncio.wait_for(inbox.got.get(), 5)
    py.send(alias, (Atom("via_alias"), 7))
    assert await task == 7
    # Python creates an alias; BEAM sends to it (ALIAS_SEND in)
    my_alias = py.create_alias(inbox.pid)
    py.send((Atom("relay"), Atom(beam.name)), None)  # harmless: unregistered name is dropped
    await beval(
        beam,
        f"{{inbox, '{py.name}'}} ! ok, ok",
    )
    assert await asyncio.wait_for(inbox.got.get(), 5) == "ok"
    expr = "receive {alias, R} -> R ! via_beam_alias, ok after 5000 -> timeout end"
    task = asyncio.create_task(beval(beam, f"register(relay, self()), {expr}"))
    await asyncio.sleep(0.3)
    py.send((Atom("relay"), Atom(beam.name)), (Atom("alias"), my_alias))
    assert await task == "ok"
    assert await asyncio.wait_for(inbox.got.get(), 5) == "via_beam_alias"


async def test_exposing_a_module_exposes_only_its_own_public_functions(
    beam: ErlNode, py: Node, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "exposed_sample.py").write_text(
        "from os import system  # noqa: F401\n\n"
        "def double(x):\n    return 2 * x\n\n"
        "def _private():\n    return 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    module = importlib.import_module("exposed_sample")
    py.expose("sample", module)
    assert await beval(beam, f"erpc:call('{py.name}', sample, double, [21])") == 42
    for fun in ("system", "_private"):
        got = await beval(beam, f"rpc:call('{py.name}', sample, '{fun}', [\"true\"])")
        assert got[0] == "badrpc" and got[1][1][0] == "undef"


async def test_python_rpc_and_call_failures(beam: ErlNode, py: Node) -> None:
    from dspex_cluster.runtime import CallTimeout

    with pytest.raises(Exit) as err:
        await py.rpc("nobody_here@127.0.0.1", "erlang", "node", [], timeout=5)
    assert err.value.reason == "noconnection"
    with pytest.raises(Exit) as err:
        await py.call((Atom("x"), Atom("nobody_here@127.0.0.1")), 1, timeout=5)
    assert err.value.reason == "noconnection"
    with pytest.raises(CallTimeout):
        await py.rpc(beam.name, "timer", "sleep", [2000], timeout=0.3)
    with pytest.raises(TimeoutError):  # CallTimeout is a TimeoutError too
        sleeper = await py.rpc(beam.name, "erlang", "spawn", [Atom("timer"), Atom("sleep"), [5000]])
        await py.call(sleeper, Atom("never_answered"), timeout=0.3)
    assert await py.rpc(beam.name, "erlang", "node", []) == beam.name  # still fine


async def test_python_genserver_crash_during_beam_call(beam: ErlNode, py: Node) -> None:
    class Fragile(GenServer):
        async def handle_call(self, request: Any, caller: Caller) -> Any:
            raise RuntimeError("fell over")

    await py.spawn(Fragile(), name="fragile")
    got = await beval(beam, f"catch gen_server:call({{fragile, '{py.name}'}}, hi, 5000)")
    assert got[0] == "EXIT"
    reason, where = got[1]
    assert reason[:3] == (Atom("python_exception"), Atom("RuntimeError"), b"fell over")
    assert b'raise RuntimeError("fell over")' in reason[3]  # the Python traceback, as text
    assert where[0] == "gen_server" and where[1] == "call"
