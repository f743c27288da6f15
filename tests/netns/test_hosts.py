"""The namespace fixture itself: hosts reach each other only over the bridge, a cut port
isolates one host, and namespaces left by a dead session are cleaned up by name."""

from __future__ import annotations

import subprocess

import pytest
from hosts import Network, clean_stale_namespaces, ip, namespaces

pytestmark = pytest.mark.netns


def reachable(network: Network, src: int, dst: int) -> bool:
    """A TCP connection from host `src` to the epmd of host `dst` (1 s deadline)."""
    target = network.hosts[dst]
    probe = f"exec 3<>/dev/tcp/{target.address}/{target.epmd_port}"
    done = subprocess.run(
        network.hosts[src].command("timeout", "1", "bash", "-c", probe),
        capture_output=True,
        timeout=10,
    )
    return done.returncode == 0


def test_hosts_reach_each_other_over_the_bridge_only(network: Network) -> None:
    assert all(reachable(network, 0, i) for i in range(1, len(network.hosts)))
    # none of the addresses exists in the root namespace: traffic stays between our namespaces
    root_addresses = ip("-o", "addr").stdout
    assert all(f" {h.address}/" not in root_addresses for h in network.hosts)
    network.hosts[1].link_down()
    try:
        assert not reachable(network, 0, 1)
        assert reachable(network, 0, 2)
    finally:
        network.hosts[1].link_up()
    assert reachable(network, 1, 0)


def test_stale_namespaces_of_a_dead_session_are_deleted(network: Network) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # its PID now names a session that no longer runs
    stale = f"dxn{gone.pid}-abcdef-h0"
    ip("netns", "add", stale)
    try:
        assert stale in clean_stale_namespaces()
        assert stale not in namespaces()
        assert network.switch in namespaces()  # a live session's namespaces stay
    finally:
        if stale in namespaces():
            ip("netns", "delete", stale)
