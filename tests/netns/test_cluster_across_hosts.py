"""A Python node and two BEAM nodes on three hosts (network namespaces on one bridge).

Host 0 runs the CLI Python node (and the test's control node), hosts 1 and 2 one BEAM node each,
started by the launcher with the EPMD strategy and the *other* hosts' addresses in `--hosts` (no
node names): each finds the other BEAM node, and the Python nodes, in the epmds there.
The partition test cuts host 2 off the bridge and puts it back.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from cluster_nodes import NET_TICKTIME, Control, cli_python_node, launch_nodes, wait_for
from hosts import Host, LauncherNode, Network

from dspex_cluster import Atom, Pid, Process
from dspex_cluster.runtime import RpcError

pytestmark = [pytest.mark.netns, pytest.mark.otp, pytest.mark.slow]

EPMD_STRATEGY = "Elixir.DSPEx.Clustering.Discovery.Epmd"


@dataclass
class Cluster:
    py_name: str
    py_proc: subprocess.Popen[str]
    beam1: LauncherNode
    beam2: LauncherNode
    py_host: Host
    host2: Host


@pytest.fixture(scope="module")
def cluster(
    network: Network, control: Control, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    py_host, host1, host2 = network.hosts[:3]
    token = network.token
    logs = tmp_path_factory.mktemp("cluster_logs")
    with cli_python_node(py_host, f"py{token}", control.cookie_file, ["statistics", "os"]) as (
        py_name,
        py_proc,
    ):
        specs: list[tuple[Host, str, list[str]]] = [
            (host1, f"beam1{token}", ["--discovery", "epmd", "--hosts", hosts(py_host, host2)]),
            (host2, f"beam2{token}", ["--discovery", "epmd", "--hosts", hosts(py_host, host1)]),
        ]
        with launch_nodes(control, specs, logs) as (beam1, beam2):
            yield Cluster(py_name, py_proc, beam1, beam2, py_host, host2)


def test_epmd_discovery_finds_the_other_host(cluster: Cluster, control: Control) -> None:
    b1, b2 = cluster.beam1.name, cluster.beam2.name
    wait_for("beam1 connected to beam2", lambda: control.connected(b1, b2), 20)
    assert control.connected(b2, b1)

    def member_up(observer: str, node: str) -> bool:
        m = control.members(observer).get(node)
        return m is not None and m["status"] == "up" and m["kind"] == "beam"

    wait_for("beam2 up in beam1's membership", lambda: member_up(b1, b2), 10)
    wait_for("beam1 up in beam2's membership", lambda: member_up(b2, b1), 10)

    # The EPMD strategy itself found the nodes: it asked the other hosts' epmds for their names
    # (the BEAM node there; the CLI and control Python nodes on host 0). A poll made before the
    # other BEAM node registered found fewer: wait for the next one (every 2 s). The dials and
    # hellos that follow the strategy's answer take a moment more, so the members are polled too.
    def epmd_found_all(observer: str, other: str) -> dict[Any, Any] | None:
        topology = control.rpc(observer, "Elixir.DSPEx.Clustering.NodeDiscovery", "topology", [])
        strategies = {str(k[1]): v for k, v in topology[Atom("strategies")].items()}
        found = strategies[EPMD_STRATEGY][Atom("last")] == (Atom("ok"), 3)
        members = topology[Atom("members")]
        status = {n: members.get(Atom(n), {}).get(Atom("status")) for n in (other, cluster.py_name)}
        # the Python node was dialled by discovery too: accepted as unmanaged (no agent there)
        settled = status == {other: "member", cluster.py_name: "unmanaged"}
        return topology if found and settled else None

    found_by_epmd = []
    for observer, other in ((b1, b2), (b2, b1)):
        topology = wait_for(
            f"{observer}'s EPMD strategy and members", partial(epmd_found_all, observer, other), 10
        )
        members = topology[Atom("members")]
        found_by_epmd += [str(k[1]) for k in members[Atom(other)][Atom("discovered_by")]]
    # whichever side dialled first, at least one side joined the other through the strategy
    assert EPMD_STRATEGY in found_by_epmd


def test_calls_both_ways_across_hosts(cluster: Cluster, control: Control) -> None:
    py = Atom(cluster.py_name)
    # BEAM -> Python: :erpc.call from each BEAM host into the CLI Python node on host 0
    mean = control.rpc(
        cluster.beam1.name, "erpc", "call", [py, Atom("statistics"), Atom("mean"), [[1, 2, 3, 4]]]
    )
    assert mean == 2.5
    pid = control.rpc(cluster.beam2.name, "erpc", "call", [py, Atom("os"), Atom("getpid"), []])
    assert pid == cluster.py_proc.pid  # answered by that very process
    with pytest.raises(RpcError) as refused:  # a module the node did not expose: undef
        control.rpc(cluster.beam1.name, "erpc", "call", [py, Atom("json"), Atom("dumps"), [1]])
    assert refused.value.reason[:2] == (Atom("exception"), Atom("undef"))

    # Python -> BEAM: node.rpc from host 0 into each BEAM host
    for beam in (cluster.beam1, cluster.beam2):
        assert control.rpc(beam.name, "erlang", "node", []) == Atom(beam.name)
        # the distribution connection really comes from host 0's address
        ok, info = control.rpc(beam.name, "net_kernel", "node_info", [control.node.name])
        net_address = dict(info)[Atom("address")]  # #net_address{address = {IP, Port}, ...}
        assert ok == "ok" and net_address[1][0] == ip_tuple(cluster.py_host.address)

    # beam1 classified the Python node it called as a Python member
    def python_member() -> bool:
        m = control.members(cluster.beam1.name).get(cluster.py_name)
        return m is not None and m["kind"] == "python" and m["status"] == "up"

    wait_for("the Python node listed as :python on beam1", python_member, 5)


def hosts(*chosen: Host) -> str:
    """A `--hosts` value."""
    return ",".join(host.address for host in chosen)


def ip_tuple(address: str) -> tuple[int, ...]:
    return tuple(int(part) for part in address.split("."))


class Recorder(Process):
    """Traps exits and keeps every message with its arrival time (read from the test thread)."""

    trap_exit = True

    def __init__(self) -> None:
        self.events: list[tuple[float, Any]] = []

    async def run(self) -> None:
        while True:
            message = await self.receive()
            self.events.append((time.monotonic(), message))


async def _watch(control: Control, beam2: str, sleeper: Pid) -> Recorder:
    watcher = Recorder()
    pid = await control.node.spawn(watcher)
    control.node.monitor(pid, (Atom("dspex_membership"), Atom(beam2)))
    control.node.link(pid, sleeper)
    return watcher


async def _subscribe(control: Control, beam: str, pattern: str) -> Recorder:
    """A Python process subscribed to `pattern` on `beam`'s signal bus (through its relay)."""
    recorder = Recorder()
    pid = await control.node.spawn(recorder)
    reply = await control.node.rpc(
        Atom(beam), "Elixir.DSPEx.Clustering", "subscribe", [pattern, pid]
    )
    assert reply == "ok"
    return recorder


def membership_signals(recorder: Recorder, observer: str, node: str) -> list[tuple[float, str]]:
    """(arrival, type) of the cluster.node.* signals `observer`'s membership published on `node`."""
    found = []
    for at, message in recorder.events:
        if message[0] != "signal":
            continue
        signal = message[1]
        source = signal[Atom("source")].decode()
        if source.startswith(f"dspex://{observer}/") and signal[Atom("data")][Atom("node")] == node:
            found.append((at, signal[Atom("type")].decode()))
    return found


def test_partition_is_suspected_then_down_then_healed(cluster: Cluster, control: Control) -> None:
    b1, b2 = cluster.beam1.name, cluster.beam2.name
    wait_for("beam1 connected to beam2", lambda: control.connected(b1, b2), 20)
    wait_for("beam2 up on beam1", lambda: control.members(b1)[b2]["status"] == "up", 10)

    # The Python side watches beam2 too: a monitor on its membership agent, a link to a sleeper.
    sleeper = control.rpc(b2, "erlang", "spawn", [Atom("timer"), Atom("sleep"), [Atom("infinity")]])
    watcher = control.run(_watch(control, b2, sleeper))
    assert control.rpc(b2, "erlang", "is_process_alive", [sleeper]) is True
    # ... and hears beam1's view on the signal bus
    signals = control.run(_subscribe(control, b1, "cluster.node.*"))

    seen: dict[str, float] = {}
    suspect_phi = 0.0
    cut = time.monotonic()
    cluster.host2.link_down()
    try:
        while "down" not in seen and time.monotonic() - cut < 4 * NET_TICKTIME:
            m = control.members(b1)[b2]
            if m["status"] != "up" and m["status"] not in seen:
                seen[m["status"]] = time.monotonic() - cut
                if m["status"] == "suspect":
                    suspect_phi = m["phi"]
            time.sleep(0.05)
        python_saw = wait_for("the Python side's DOWN and EXIT", lambda: watcher_done(watcher), 10)
    finally:
        cluster.host2.link_up()
    healed_from = time.monotonic()

    # phi-accrual: suspected long before any tick timeout, with phi over the threshold (8)
    assert "suspect" in seen, f"never suspected: {seen}"
    assert seen["suspect"] < 2.5, seen
    assert suspect_phi >= 8.0
    # the kernel's tick timeout (net_ticktime, 4 s here) ends the connection: down
    assert "down" in seen and seen["suspect"] < seen["down"] < 3 * NET_TICKTIME, seen
    assert control.members(b1)[b2]["down_reason"] in ("net_tick_timeout", "connection_closed")

    # the Python node lost its connection to beam2 too: monitor and link fire with noconnection
    down_at, exit_at = python_saw
    assert down_at - cut < 3 * NET_TICKTIME and exit_at - cut < 3 * NET_TICKTIME

    # heal: discovery (EPMD strategy) reconnects the hosts and membership reports beam2 up again
    wait_for("beam1 reconnected to beam2", lambda: control.connected(b1, b2), 30)
    wait_for("beam2 up again on beam1", lambda: control.members(b1)[b2]["status"] == "up", 10)
    reconnected = time.monotonic() - healed_from
    assert control.rpc(b2, "erlang", "node", []) == Atom(b2)  # Python reconnects on demand

    # beam1's membership told the cluster: suspect, then down, then up again
    def told() -> list[tuple[float, str]] | None:
        types = membership_signals(signals, b1, b2)
        return types if [t for _, t in types][-3:] == ["cluster.node." + s for s in TOLD] else None

    told_at = {t.rsplit(".", 1)[1]: at - cut for at, t in wait_for("the signals", told, 5)[-3:]}
    assert told_at["suspect"] < 2.5 and told_at["up"] > healed_from - cut
    print(
        f"\npartition: suspect after {seen['suspect']:.2f} s (phi {suspect_phi:.1f}; signal "
        f"{told_at['suspect']:.2f} s), down after {seen['down']:.2f} s (signal "
        f"{told_at['down']:.2f} s), Python DOWN/EXIT after {down_at - cut:.2f}/"
        f"{exit_at - cut:.2f} s; reconnected {reconnected:.2f} s after the heal"
    )


TOLD = ("suspect", "down", "up")


def watcher_done(watcher: Recorder) -> tuple[float, float] | None:
    """(DOWN time, EXIT time) once both arrived with reason noconnection, else None."""
    down = [t for t, m in watcher.events if m[0] == "DOWN" and m[4] == "noconnection"]
    exits = [t for t, m in watcher.events if m[0] == "EXIT" and m[2] == "noconnection"]
    others = [m for _, m in watcher.events if m[-1] != "noconnection"]
    assert not others, f"unexpected messages: {others}"
    return (down[0], exits[0]) if down and exits else None
