"""The strong store across hosts (network namespaces): three BEAM nodes started by the launcher
with `--profile production --discovery epmd` on hosts 1-3 form the three-replica group by
themselves; Python clients on host 0 work throughout while a host is cut off the network.

* the leader's host isolated (a minority of one): a write started on it answers
  `{:error, :no_quorum}` within its timeout; the majority elects a new leader and goes on;
* a follower's host isolated, then healed: it catches up;
* repeated short blips (link down 0.4 s, up 0.6 s, five times).
Every key's history is checked for linearizability and the counter for lost or doubled
increments (tests/state/history.py).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_nodes import Control, launch_nodes, wait_for
from hosts import Host, LauncherNode, Network, ip

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "state"))

from history import check_counter, check_register  # noqa: E402
from strong_cluster import Workload  # noqa: E402

from dspex_cluster import Atom  # noqa: E402
from dspex_cluster.state import State  # noqa: E402

pytestmark = [pytest.mark.netns, pytest.mark.otp, pytest.mark.slow]

STATE = "Elixir.DSPEx.Clustering.State"


@pytest.fixture(scope="module")
def beams(
    network: Network, control: Control, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[LauncherNode]]:
    hosts = network.hosts[1:4]
    token = network.token
    logs = tmp_path_factory.mktemp("strong_logs")
    # the nodes' Ra data go to this test's directory (DSPEX_STATE_DIR, read by config/runtime.exs)
    old = os.environ.get("DSPEX_STATE_DIR")
    os.environ["DSPEX_STATE_DIR"] = str(tmp_path_factory.mktemp("strong_state"))
    try:
        specs: list[tuple[Host, str, list[str]]] = []
        for i, host in enumerate(hosts):
            others = ",".join(h.address for h in hosts if h is not host)
            args = ["--profile", "production", "--discovery", "epmd", "--hosts", others]
            specs.append((host, f"st{i}{token}", args))
        with launch_nodes(control, specs, logs) as nodes:
            names = sorted(n.name for n in nodes)
            wait_for("the strong group formed", lambda: formed(control, nodes[0].name, names), 60)
            yield nodes
        # the launcher's clean-up watchers (tail --pid, polling each second) end after the nodes
        wait_for("nothing left running on the hosts", lambda: not leftovers(hosts), 10)
    finally:
        if old is None:
            os.environ.pop("DSPEX_STATE_DIR", None)
        else:
            os.environ["DSPEX_STATE_DIR"] = old


def leftovers(hosts: list[Host]) -> list[str]:
    out = []
    for host in hosts:
        pids = ip("netns", "pids", host.netns, check=False).stdout.split()
        epmd = host.epmd.pid if host.epmd else None
        out += [p for p in pids if p.isdigit() and int(p) != epmd]
    return out


def status(control: Control, beam: str) -> dict[str, Any]:
    raw = control.rpc(beam, STATE, "status", [], timeout=5)
    return {str(k): v for k, v in raw.items()}


def formed(control: Control, beam: str, names: list[str]) -> bool:
    s = status(control, beam)
    return s["leader"] is not None and sorted(str(m) for m in s["members"]) == names


def healthy(control: Control, nodes: list[LauncherNode]) -> bool:
    """Every node sees the same leader and the leader sees every member caught up."""
    views = [status(control, n.name) for n in nodes]
    leaders = {str(v["leader"]) for v in views}
    if len(leaders) != 1 or "None" in leaders:
        return False
    lag = views[0]["lag"]
    return len(lag) == len(nodes) and all(v == 0 for v in lag.values())


def host_of(network: Network, node: LauncherNode) -> Host:
    return next(h for h in network.hosts if node.name.endswith("@" + h.address))


def start_probe(control: Control, beam: str, key: str, delay_ms: int, timeout_ms: int) -> None:
    """On `beam` itself: after `delay_ms`, a strong put with `timeout_ms`; the result and how long
    it took are kept in a persistent term (read back after the heal)."""
    put = f'DSPEx.Clustering.State.put("{key}", 1, consistency: :strong, timeout: {timeout_ms})'
    took = "System.monotonic_time(:millisecond) - t0"
    keep = f':persistent_term.put({{:probe, "{key}"}}, {{r, {took}}})'
    code = (
        f"spawn(fn -> Process.sleep({delay_ms}); t0 = System.monotonic_time(:millisecond); "
        f"r = {put}; {keep} end)"
    )
    control.rpc(beam, "Elixir.Code", "eval_string", [code])


def probe_result(control: Control, beam: str, key: str) -> Any:
    return control.rpc(beam, "persistent_term", "get", [(Atom("probe"), key.encode())])


def run_workload(
    control: Control, nodes: list[LauncherNode], seconds: float
) -> tuple[Workload, threading.Thread]:
    state = State(control.node, beams=[n.name for n in nodes], timeout=2.0)
    workload = Workload(state, keys=["r1", "r2"], registers=3, counters=2)
    thread = threading.Thread(target=control.run, args=(workload.run(seconds), seconds + 30))
    thread.start()
    return workload, thread


def check(control: Control, nodes: list[LauncherNode], workload: Workload) -> None:
    for key, ops in workload.by_key().items():
        if key != workload.counter_key:
            if not check_register(ops):
                dump = Path(os.environ.get("TMPDIR", "/tmp")) / f"strong_history_{key}.txt"
                dump.write_text("\n".join(repr(op) for op in ops))
            assert check_register(ops), f"history of {key} is not linearizable (ops in {dump})"
    state = State(control.node, beams=[n.name for n in nodes])
    final = control.run(state.get(workload.counter_key))
    assert final is not None
    ok, why = check_counter(final.value, workload.acked_increments, workload.unknown_increments)
    assert ok, why
    print(
        f"history {workload.history.counts()}, increments acked {len(workload.acked_increments)} "
        f"unknown {workload.unknown_increments}"
    )


def test_isolated_leader_answers_no_quorum_and_the_majority_goes_on(
    network: Network, control: Control, beams: list[LauncherNode]
) -> None:
    wait_for("healthy", lambda: healthy(control, beams), 30)
    leader = str(status(control, beams[0].name)["leader"])
    old_leader = next(n for n in beams if n.name == leader)
    host = host_of(network, old_leader)
    workload, thread = run_workload(control, beams, 10.0)
    time.sleep(1.5)
    start_probe(control, leader, "iso_probe", delay_ms=1500, timeout_ms=3000)
    host.link_down()
    cut_at = time.monotonic()
    try:
        time.sleep(6.0)
        others = [n for n in beams if n is not old_leader]
        new_leader = wait_for(
            "a new leader on the majority side",
            lambda: (
                (s := status(control, others[0].name))["leader"] not in (None, Atom(leader))
                and s["leader"]
            ),
            10,
        )
        assert str(new_leader) in {n.name for n in others}
    finally:
        host.link_up()
    thread.join(60)
    assert not thread.is_alive()
    writes_during = [
        op
        for op in workload.history.ops
        if op.result == "ok" and op.f != "get" and cut_at + 3 < op.invoke < cut_at + 6
    ]
    assert writes_during, "the majority committed nothing while the leader was cut off"
    wait_for("healed and caught up", lambda: healthy(control, beams), 60)
    result, elapsed = wait_for(
        "the isolated node's probe", lambda: probe_result(control, leader, "iso_probe"), 10
    )
    assert result == (Atom("error"), Atom("no_quorum")), result
    assert elapsed <= 3000 + 500, f"no_quorum after {elapsed} ms, timeout 3000 ms"
    check(control, beams, workload)


def test_isolated_follower_catches_up_and_short_blips(
    network: Network, control: Control, beams: list[LauncherNode]
) -> None:
    wait_for("healthy", lambda: healthy(control, beams), 60)
    leader = str(status(control, beams[0].name)["leader"])
    follower = next(n for n in beams if n.name != leader)
    host = host_of(network, follower)
    workload, thread = run_workload(control, beams, 12.0)
    time.sleep(1.0)
    host.link_down()
    time.sleep(4.0)
    host.link_up()
    # repeated short blips on another host
    blipped = host_of(network, next(n for n in beams if n is not follower))
    for _ in range(5):
        blipped.link_down()
        time.sleep(0.4)
        blipped.link_up()
        time.sleep(0.6)
    thread.join(60)
    assert not thread.is_alive()
    wait_for("healed and caught up", lambda: healthy(control, beams), 60)
    check(control, beams, workload)
    assert len(workload.acked_increments) > 5
