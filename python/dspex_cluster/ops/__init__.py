"""Operations: Prometheus `/metrics` for every Python node and the live dashboard of an agent
node, both served by aiohttp inside the node's own event loop (`OpsServer`)."""

from dspex_cluster.ops.server import OpsServer

__all__ = ["OpsServer"]
