"""The Python Supervisor: strategies, restart types, restart intensity and ordered shutdown, on a
real node (its private epmd), with exits as the runtime delivers them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dspex_cluster import Atom, Exit, GenServer, Node
from dspex_cluster.runtime import Caller, ChildSpec, Supervisor


class Worker(GenServer):
    """Registered child; `crash` raises, `stop` ends normally; notes its start and stop."""

    def __init__(self, log: list[tuple[str, str]], name: str) -> None:
        self.log, self.name = log, name

    async def init(self) -> None:
        self.log.append(("start", self.name))

    async def handle_call(self, request: Any, caller: Caller) -> Any:
        if request == "crash":
            raise RuntimeError(f"{self.name} crashed")
        if request == "stop":
            raise Exit(Atom("normal"))
        return Atom(self.name)

    async def _main(self) -> None:
        try:
            await super()._main()
        finally:
            self.log.append(("stop", self.name))


def specs(log: list[tuple[str, str]], restart: str = "permanent") -> list[ChildSpec]:
    return [
        ChildSpec(n, lambda n=n: Worker(log, n), restart=restart, name=n)  # type: ignore[arg-type]
        for n in ("a", "b", "c")
    ]


async def crash(node: Node, name: str) -> None:
    with pytest.raises(Exit):
        await node.call(name, "crash", timeout=2)


async def until(probe: Any, timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not probe():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [("one_for_one", ["b"]), ("one_for_all", ["a", "b", "c"]), ("rest_for_one", ["b", "c"])],
)
async def test_strategies(py: Node, strategy: str, restarted: list[str]) -> None:
    log: list[tuple[str, str]] = []
    sup = Supervisor(specs(log), strategy=strategy)  # type: ignore[arg-type]
    await py.spawn(sup, name="sup")
    assert log == [("start", "a"), ("start", "b"), ("start", "c")]
    before = {n: py.whereis(n) for n in "abc"}
    log.clear()
    await crash(py, "b")
    await until(lambda: all(py.whereis(n) is not None for n in "abc") and sup.restarts == 1)
    await until(lambda: len([e for e in log if e[0] == "start"]) == len(restarted))
    assert [n for kind, n in log if kind == "start"] == restarted  # restarted in start order
    # those stopped by the supervisor went last-started first; the crashed one just ended
    stopped_by_sup = [n for kind, n in log if kind == "stop" and n != "b"]
    assert stopped_by_sup == sorted(stopped_by_sup, reverse=True)
    for n in "abc":
        assert (py.whereis(n) != before[n]) == (n in restarted)
        assert await py.call(n, "hi") == Atom(n)  # the name answers again


async def test_restart_types(py: Node) -> None:
    log: list[tuple[str, str]] = []
    children = [
        ChildSpec("t", lambda: Worker(log, "t"), restart="transient", name="t"),
        ChildSpec("tmp", lambda: Worker(log, "tmp"), restart="temporary", name="tmp"),
    ]
    sup = Supervisor(children)
    await py.spawn(sup, name="sup")
    with pytest.raises(Exit):
        await py.call("t", "stop", timeout=2)  # a normal exit: a transient child stays down
    await crash(py, "tmp")  # a temporary child is never restarted and leaves the children
    await until(lambda: sup.which_children() == [("t", None)])
    assert py.whereis("t") is None and py.whereis("tmp") is None and sup.restarts == 0


async def test_restart_intensity_stops_the_supervisor(py: Node) -> None:
    log: list[tuple[str, str]] = []
    sup = Supervisor(specs(log), max_restarts=2, max_seconds=10.0)
    sup_pid = await py.spawn(sup, name="sup")
    for _ in range(2):
        await crash(py, "a")
        await until(lambda: py.whereis("a") is not None)
    assert sup.restarts == 2 and py.is_alive(sup_pid)
    await crash(py, "a")  # the third within 10 s: more than max_restarts
    await until(lambda: not py.is_alive(sup_pid))
    assert sup._exit_reason == "shutdown"  # type: ignore[attr-defined]
    assert all(py.whereis(n) is None for n in "abc")  # every child stopped with it
    assert log[-2:] == [("stop", "c"), ("stop", "b")]  # in reverse start order


async def test_ordered_shutdown_and_kill_after_the_timeout(py: Node) -> None:
    log: list[tuple[str, str]] = []

    class Stubborn(Worker):
        async def _main(self) -> None:
            try:
                await super()._main()
            except asyncio.CancelledError:
                await asyncio.sleep(0.3)  # ignores the first request to stop for a while
                raise

    children = [
        ChildSpec("a", lambda: Worker(log, "a"), name="a"),
        ChildSpec("slow", lambda: Stubborn(log, "slow"), name="slow", shutdown=0.05),
        ChildSpec("c", lambda: Worker(log, "c"), name="c"),
    ]
    sup_pid = await py.spawn(Supervisor(children), name="sup")
    py.exit(sup_pid, Atom("kill"))
    await until(lambda: all(py.whereis(n) is None for n in ("a", "slow", "c")))
    assert [n for kind, n in log if kind == "stop"] == ["c", "slow", "a"]


async def test_a_child_that_cannot_start_stops_the_others(py: Node) -> None:
    log: list[tuple[str, str]] = []

    class Broken(Worker):
        async def init(self) -> None:
            raise ValueError("no config")

    children = [
        ChildSpec("a", lambda: Worker(log, "a"), name="a"),
        ChildSpec("broken", lambda: Broken(log, "broken"), name="broken"),
    ]
    with pytest.raises(Exit) as failed:
        await py.spawn(Supervisor(children), name="sup")
    assert failed.value.reason[1][:2] == (Atom("failed_to_start_child"), Atom("broken"))
    assert py.whereis("a") is None and ("stop", "a") in log


def test_bad_specs_are_refused() -> None:
    with pytest.raises(ValueError):
        Supervisor([], strategy="one_for_some")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ChildSpec("x", lambda: Worker([], "x"), restart="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Supervisor([ChildSpec("x", lambda: Worker([], "x"))] * 2)
