"""Gossip discovery between hosts: UDP multicast (239.255.42.42, the default group) over the
bridge. Two BEAM nodes on hosts 3 and 4 started with `--discovery gossip` and nothing else (no
host list, no node names) find each other and join."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from cluster_nodes import Control, launch_nodes, wait_for
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
