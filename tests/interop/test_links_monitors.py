"""Links, monitors and exit semantics across a real OTP node and inside the Python node."""

from __future__ import annotations

import asyncio
from typing import Any

from otp import ErlNode, beval

from dspex_cluster import Atom, Exit, Node, Pid, Process


class Sleeper(Process):
    """Waits for a message; `stop` ends it with the reason it carries."""

    async def run(self) -> None:
        message = await self.receive()
        raise Exit(message[1])


class Trapper(Process):
    trap_exit = True

    def __init__(self) -> None:
        self.got: asyncio.Queue[Any] = asyncio.Queue()

    async def run(self) -> None:
        while True:
            self.got.put_nowait(await self.receive())


async def _beam_trapper(beam: ErlNode, name: str) -> None:
    """A registered BEAM process that traps exits and reports what it sees to `report`."""
    await beval(
        beam,
        f"register({name}, spawn(fun() -> process_flag(trap_exit, true), "
        "L = fun L(Acc) -> receive {link_to, P} -> link(P), L(Acc); "
        "{monitor, T} -> erlang:monitor(process, T), L(Acc); "
        "{get, F} -> F ! lists:reverse(Acc), L(Acc); M -> L([M | Acc]) end end, L([]) end)), ok",
    )


async def _beam_seen(beam: ErlNode, name: str, count: int) -> list[Any]:
    for _ in range(100):
        got = await beval(beam, f"{name} ! {{get, self()}}, receive M -> M after 2000 -> [] end")
        if len(got) >= count:
            return got
        await asyncio.sleep(0.05)
    return got


async def test_beam_link_sees_python_exit_reasons(beam: ErlNode, py: Node) -> None:
    await _beam_trapper(beam, "tl1")
    a = await py.spawn(Sleeper())
    b = await py.spawn(Sleeper())
    c = await py.spawn(Sleeper())
    for pid in (a, b, c):
        await beval(beam, f"tl1 ! {{link_to, {_pid_expr(pid)}}}, ok")
    await asyncio.sleep(0.3)
    py.send(a, (Atom("stop"), Atom("custom_reason")))
    py.exit(b, Atom("kill"))
    py.send(c, (Atom("stop"), Atom("normal")))
    got = await _beam_seen(beam, "tl1", 3)
    reasons = {m[1]: m[2] for m in got}
    assert reasons == {a: Atom("custom_reason"), b: Atom("killed"), c: Atom("normal")}


async def test_python_link_to_beam_process(beam: ErlNode, py: Node) -> None:
    assert await py.connect(beam.name)
    trapper = Trapper()
    await py.spawn(trapper, name="trapper")
    victim = await beval(beam, "spawn(fun() -> receive die -> exit(went_away) end end)")
    plain = Sleeper()
    await py.spawn(plain)
    trapper.link(victim)
    plain.link(victim)
    await asyncio.sleep(0.2)
    await beval(beam, f"{_pid_expr(victim)} ! die, ok")
    msg = await asyncio.wait_for(trapper.got.get(), 5)
    assert msg == (Atom("EXIT"), victim, Atom("went_away"))
    await asyncio.sleep(0.2)
    assert not plain.alive and plain._exit_reason == "went_away"


async def test_normal_exit_does_not_kill_a_non_trapping_python_process(
    beam: ErlNode, py: Node
) -> None:
    plain = Sleeper()
    await py.spawn(plain)
    victim = await beval(beam, "spawn(fun() -> receive die -> ok end end)")
    plain.link(victim)
    await asyncio.sleep(0.2)
    await beval(beam, f"{_pid_expr(victim)} ! die, ok")
    await asyncio.sleep(0.3)
    assert plain.alive


async def test_unlink_uses_unlink_id(beam: ErlNode, py: Node) -> None:
    plain = Sleeper()
    await py.spawn(plain)
    victim = await beval(beam, "spawn(fun() -> receive die -> exit(boom) end end)")
    plain.link(victim)
    await asyncio.sleep(0.2)
    links = await beval(beam, f"element(2, process_info({_pid_expr(victim)}, links))")
    assert links == [plain.pid]
    plain.unlink(victim)
    await asyncio.sleep(0.2)
    assert await beval(beam, f"element(2, process_info({_pid_expr(victim)}, links))") == []
    await beval(beam, f"{_pid_expr(victim)} ! die, ok")
    await asyncio.sleep(0.2)
    assert plain.alive


async def test_beam_exit2_kill_and_trapped_exit(beam: ErlNode, py: Node) -> None:
    trapper = Trapper()
    tpid = await py.spawn(trapper)
    victim = Sleeper()
    vpid = await py.spawn(victim)
    await beval(beam, f"exit({_pid_expr(tpid)}, please_stop), exit({_pid_expr(vpid)}, kill), ok")
    msg = await asyncio.wait_for(trapper.got.get(), 5)
    assert msg[0] == "EXIT" and msg[2] == "please_stop" and isinstance(msg[1], Pid)
    await asyncio.sleep(0.2)
    assert victim._exit_reason == "killed"
    assert trapper.alive


async def test_beam_monitors_python_process_and_name(beam: ErlNode, py: Node) -> None:
    await _beam_trapper(beam, "tm1")
    pid = await py.spawn(Sleeper(), name="watched")
    await beval(
        beam,
        f"tm1 ! {{monitor, {_pid_expr(pid)}}}, tm1 ! {{monitor, {{watched, '{py.name}'}}}}, ok",
    )
    await beval(beam, f"tm1 ! {{monitor, {{nobody, '{py.name}'}}}}, ok")
    await asyncio.sleep(0.3)
    py.send(pid, (Atom("stop"), Atom("real_reason")))
    got = await _beam_seen(beam, "tm1", 3)
    downs = sorted((repr(m[3]), m[4]) for m in got if m[0] == "DOWN")
    assert (
        sorted(
            [
                (repr(pid), Atom("real_reason")),
                (repr((Atom("watched"), py.name)), Atom("real_reason")),
                (repr((Atom("nobody"), py.name)), Atom("noproc")),
            ]
        )
        == downs
    )


async def test_python_monitors_beam(beam: ErlNode, py: Node) -> None:
    assert await py.connect(beam.name)  # so the monitor is in place before the victim dies
    trapper = Trapper()
    await py.spawn(trapper)
    victim = await beval(beam, "spawn(fun() -> receive die -> exit(bye) end end)")
    dead = await beval(beam, "P = spawn(fun() -> ok end), timer:sleep(50), P")
    ref1 = trapper.monitor(victim)
    ref2 = trapper.monitor(dead)
    ref3 = trapper.monitor((Atom("nosuch"), Atom(beam.name)))
    await beval(beam, f"{_pid_expr(victim)} ! die, ok")
    got = [await asyncio.wait_for(trapper.got.get(), 5) for _ in range(3)]
    by_ref = {m[1]: (m[3], m[4]) for m in got}
    assert by_ref[ref1] == (victim, Atom("bye"))
    assert by_ref[ref2] == (dead, Atom("noproc"))
    assert by_ref[ref3] == ((Atom("nosuch"), beam.name), Atom("noproc"))
    # demonitor: nothing arrives afterwards
    other = await beval(beam, "spawn(fun() -> receive die -> exit(bye) end end)")
    ref4 = trapper.monitor(other)
    await asyncio.sleep(0.1)
    trapper.demonitor(ref4)
    await beval(beam, f"{_pid_expr(other)} ! die, ok")
    await asyncio.sleep(0.3)
    assert trapper.got.empty()


async def test_nodedown_fires_links_and_monitors_with_noconnection(beam: ErlNode, py: Node) -> None:
    trapper = Trapper()
    await py.spawn(trapper)
    plain = Sleeper()
    await py.spawn(plain)
    victim = await beval(beam, "spawn(fun() -> receive die -> ok end end)")
    trapper.link(victim)
    plain.link(victim)
    ref = trapper.monitor(victim)
    await asyncio.sleep(0.2)
    await beval(beam, f"erlang:disconnect_node('{py.name}')")
    got = [await asyncio.wait_for(trapper.got.get(), 5) for _ in range(2)]
    assert (Atom("EXIT"), victim, Atom("noconnection")) in got
    assert (Atom("DOWN"), ref, Atom("process"), victim, Atom("noconnection")) in got
    await asyncio.sleep(0.1)
    assert plain._exit_reason == "noconnection"


def _pid_expr(pid: Pid) -> str:
    """An Erlang expression for a pid (works for local and remote pids)."""
    from dspex_cluster.etf import encode

    return f"binary_to_term(<<{','.join(str(b) for b in encode(pid))}>>)"
