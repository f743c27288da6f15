"""Process semantics inside one Python node: mailbox, selective receive, links, monitors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dspex_cluster import Atom, Exit, GenServer, Node, Process


class Idle(Process):
    async def run(self) -> None:
        await self.receive()


async def test_selective_receive_keeps_order_and_skips(py: Node) -> None:
    seen: list[Any] = []

    class Picky(Process):
        async def run(self) -> None:
            seen.append(await self.receive(match=lambda m: m == "b"))
            seen.append(await self.receive())
            seen.append(await self.receive(match=lambda m: m == "late"))
            seen.append(await self.receive())
            with pytest.raises(TimeoutError):
                await self.receive(timeout=0.05)

    proc = Picky()
    pid = await py.spawn(proc)
    for m in ("a", "b", "c"):
        py.send(pid, m)
    await asyncio.sleep(0.05)
    py.send(pid, "late")
    await asyncio.wait_for(proc._task, 2)  # type: ignore[arg-type]
    assert seen == ["b", "a", "late", "c"]
    assert proc._exit_reason == "normal"  # type: ignore[attr-defined]


async def test_waiting_selective_receive_examines_each_message_once(py: Node) -> None:
    calls = 0

    def wanted(message: Any) -> bool:
        nonlocal calls
        calls += 1
        return message == "needle"

    class Seeker(Process):
        async def run(self) -> None:
            self.found = await self.receive(match=wanted)

    proc = Seeker()
    pid = await py.spawn(proc)
    await asyncio.sleep(0.01)  # now parked with its predicate
    box = proc._mailbox
    for i in range(5000):
        py.send(pid, i)
    py.send(pid, "needle")
    await asyncio.wait_for(proc._task, 2)  # type: ignore[arg-type]
    assert proc.found == "needle"
    assert calls == 5001  # each arrival tested once, no rescans
    assert proc._mailbox is box and len(box) == 5000  # skipped messages stay, in order
    assert box[0] == 0 and box[-1] == 4999


async def test_local_links_kill_and_trap(py: Node) -> None:
    got: asyncio.Queue[Any] = asyncio.Queue()

    class Trap(Process):
        trap_exit = True

        async def run(self) -> None:
            while True:
                got.put_nowait(await self.receive())

    trap, a, b = Trap(), Idle(), Idle()
    tpid = await py.spawn(trap)
    apid = await py.spawn(a)
    bpid = await py.spawn(b)
    py.link(tpid, apid)
    py.link(apid, bpid)
    py.exit(bpid, Atom("kill"))  # b killed -> a gets 'killed' via link and dies -> trap sees it
    msg = await asyncio.wait_for(got.get(), 2)
    assert msg == (Atom("EXIT"), apid, Atom("killed"))
    assert not a.alive and not b.alive and trap.alive


async def test_local_monitor_noproc_and_real_reason(py: Node) -> None:
    got: asyncio.Queue[Any] = asyncio.Queue()

    class Watcher(Process):
        async def run(self) -> None:
            while True:
                got.put_nowait(await self.receive())

    watcher = Watcher()
    await py.spawn(watcher)
    victim = Idle()
    vpid = await py.spawn(victim, name="victim")
    r1 = watcher.monitor(vpid)
    r2 = watcher.monitor("victim")
    r3 = watcher.monitor("nobody")
    assert await asyncio.wait_for(got.get(), 1) == (
        Atom("DOWN"),
        r3,
        Atom("process"),
        (Atom("nobody"), py.name),
        Atom("noproc"),
    )
    py.exit(vpid, Atom("bye"))
    downs = [await asyncio.wait_for(got.get(), 1) for _ in range(2)]
    assert {(d[1], d[4]) for d in downs} == {(r1, Atom("bye")), (r2, Atom("bye"))}
    r4 = watcher.monitor(vpid)
    assert (await asyncio.wait_for(got.get(), 1))[1:] == (r4, Atom("process"), vpid, Atom("noproc"))


async def test_genserver_local_call_errors(py: Node) -> None:
    class Crashy(GenServer):
        async def handle_call(self, request: Any, caller: Any) -> Any:
            if request == "crash":
                raise RuntimeError("nope")
            return request

    await py.spawn(Crashy(), name="crashy")
    assert await py.call("crashy", 5) == 5
    with pytest.raises(Exit) as err:
        await py.call("crashy", "crash")
    assert err.value.reason[1] == "RuntimeError"
    with pytest.raises(Exit) as err:
        await py.call("crashy", 1)
    assert err.value.reason == "noproc"


async def test_genserver_init_failure_is_reported(py: Node) -> None:
    class BadInit(GenServer):
        async def init(self) -> None:
            raise Exit(Atom("no_config"))

    with pytest.raises(Exit) as err:
        await py.spawn(BadInit())
    assert err.value.reason == "no_config"


def test_cookie_is_read_from_file_and_never_shown(tmp_path: Any) -> None:
    cookie = tmp_path / "cookie"
    cookie.write_text("file-cookie-value\n")
    node = Node("x@127.0.0.1", cookie_file=cookie, epmd_port=1)
    assert node._cookie == "file-cookie-value"
    assert "file-cookie-value" not in repr(node)
    with pytest.raises(ValueError, match="bad node name"):
        Node("two@at@signs", cookie="c")
    # a bare name means name@127.0.0.1, as on the command line of both kinds of node
    assert Node("bare", cookie="c").name == "bare@127.0.0.1"
