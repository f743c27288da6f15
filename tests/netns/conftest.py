"""Fixtures for tests across hosts made of network namespaces (see hosts.py).

One `Network` per session (five hosts on a bridge, each with its own epmd), and one Python
control node living in host 0 (its event loop runs on a thread inside that namespace). Modules
start the BEAM nodes they need with `cluster_nodes.launch_nodes`; those stop by process group.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cluster_nodes import NET_TICKTIME, Control  # noqa: E402
from hosts import (  # noqa: E402
    NamespaceLoop,
    Network,
    clean_stale_namespaces,
    netns_unavailable_reason,
)

from dspex_cluster import Node  # noqa: E402

HOST_COUNT = 5


@pytest.fixture(scope="session")
def network() -> Iterator[Network]:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    clean_stale_namespaces()
    net = Network(HOST_COUNT)
    net.create()
    try:
        yield net
    finally:
        strays = net.destroy()
        assert not net.leftovers(), f"namespaces left behind: {net.leftovers()}"
        assert not strays, f"processes still running in our namespaces (killed): {strays}"


@pytest.fixture(scope="session")
def cookie_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("netns") / "cookie"
    path.write_text(secrets.token_hex(16))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def control(network: Network, cookie_file: Path) -> Iterator[Control]:
    """The test's own Python node, on host 0 (hidden, short net_ticktime like the BEAM nodes)."""
    loop = NamespaceLoop(network.hosts[0].netns)
    try:
        node = Node(
            f"ctl{network.token}@{network.hosts[0].address}",
            cookie=cookie_file.read_text(),
            epmd_port=network.epmd_port,
            net_ticktime=NET_TICKTIME,
        )
        loop.run(node.start())
        try:
            yield Control(loop, node, cookie_file)
        finally:
            loop.run(node.stop())
    finally:
        loop.close()
