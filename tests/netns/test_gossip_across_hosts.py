"""Gossip discovery between hosts: UDP multicast (239.255.42.42, the default group) over the
bridge. Two BEAM nodes on hosts 3 and 4 started with `--discovery gossip` and nothing else (no
host list, no node names) find each other and join; a stranger on host 2 (another cookie)
gossips on the same group and is ignored: its packets fail authentication."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from cluster_nodes import ERL_FLAGS, Control, launch_nodes, wait_for
from hosts import LauncherNode, Network

from dspex_cluster import Atom

pytestmark = [pytest.mark.netns, pytest.mark.otp, pytest.mark.slow]

GOSSIP_STRATEGY = "Elixir.DSPEx.Clustering.Discovery.Gossip"


@pytest.fixture(scope="module")
def gossip_pair(
    network: Network, control: Control, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[LauncherNode]]:
    host3, host4 = network.hosts[3:5]
    logs = tmp_path_factory.mktemp("gossip_logs")
    specs = [
        (host3, f"gossip3{network.token}", ["--discovery", "gossip"]),
        (host4, f"gossip4{network.token}", ["--discovery", "gossip"]),
    ]
    with launch_nodes(control, specs, logs) as nodes:
        yield nodes


@pytest.fixture(scope="module")
def stranger(
    network: Network, gossip_pair: list[LauncherNode], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LauncherNode]:
    """A gossiping node with another cookie on host 2, registered with its epmd."""
    logs = tmp_path_factory.mktemp("stranger_logs")
    cookie = logs / "other-cookie"
    cookie.write_text(secrets.token_hex(16))
    cookie.chmod(0o600)
    host = network.hosts[2]
    node = LauncherNode(
        host, f"stranger{network.token}", cookie, ["--discovery", "gossip"], logs, ERL_FLAGS
    )
    try:
        alive = node.name.split("@")[0]
        wait_for(f"{node.name} registered", lambda: f"name {alive} " in host.epmd_names(), 60)
        yield node
    finally:
        node.stop()


def gossip_found(control: Control, observer: str, other: str) -> dict[Any, Any] | None:
    """`observer`'s topology once its gossip strategy proposes `other` and it is a member."""
    topology = control.rpc(observer, "Elixir.DSPEx.Clustering.NodeDiscovery", "topology", [])
    strategies = {str(k[1]): v for k, v in topology[Atom("strategies")].items()}
    if set(strategies) != {GOSSIP_STRATEGY}:
        raise AssertionError(f"strategies other than gossip configured: {set(strategies)}")
    member = topology[Atom("members")].get(Atom(other))
    found = strategies[GOSSIP_STRATEGY][Atom("last")] == (Atom("ok"), 1)
    return topology if found and member and member[Atom("status")] == "member" else None


def test_gossip_nodes_find_each_other_across_hosts(
    gossip_pair: list[LauncherNode], control: Control
) -> None:
    a, b = (node.name for node in gossip_pair)
    wait_for(f"{a} connected to {b}", lambda: control.connected(a, b), 20)
    assert control.connected(b, a)

    found_by_gossip: list[str] = []
    for observer, other in ((a, b), (b, a)):
        topology = wait_for(
            f"{observer} heard {other} by gossip",
            partial(gossip_found, control, observer, other),
            8,
        )
        member = topology[Atom("members")][Atom(other)]
        found_by_gossip += [str(k[1]) for k in member[Atom("discovered_by")]]
        m = control.members(observer)[other]
        assert m["status"] == "up" and m["kind"] == "beam"
    # whichever side dialled first, at least one side joined the other through gossip
    assert GOSSIP_STRATEGY in found_by_gossip


def gossip_state(control: Control, beam: str) -> dict[Any, Any]:
    """The gossip strategy's state on `beam` (from its discovery runner, via :sys.get_state)."""
    children = control.rpc(beam, "supervisor", "which_children", [Atom("dspex_node_discovery_sup")])
    runners = [
        pid for child_id, pid, _type, _mods in children if str(child_id[0]).endswith(".Runner")
    ]
    (runner,) = runners
    return dict(control.rpc(beam, "sys", "get_state", [runner])[Atom("strategy")])


def test_a_stranger_with_another_cookie_is_ignored(
    gossip_pair: list[LauncherNode], stranger: LauncherNode, control: Control
) -> None:
    a, b = (node.name for node in gossip_pair)

    def rejected_packets() -> int:
        return int(gossip_state(control, a)[Atom("dropped")][Atom("bad_mac")])

    # its multicast heartbeats reach host 3 and fail the MAC (key derived from the cookie)
    wait_for("a stranger's gossip dropped as bad_mac", lambda: rejected_packets() >= 2, 15)
    for observer in (a, b):
        assert Atom(stranger.name) not in control.rpc(observer, "erlang", "nodes", [])
    topology = control.rpc(a, "Elixir.DSPEx.Clustering.NodeDiscovery", "topology", [])
    assert Atom(stranger.name) not in topology[Atom("members")]
    assert {str(k[1]): v for k, v in topology[Atom("strategies")].items()}[GOSSIP_STRATEGY][
        Atom("last")
    ] == (Atom("ok"), 1)  # only b is proposed
    assert stranger.proc.poll() is None  # it was gossiping all along, not dead
