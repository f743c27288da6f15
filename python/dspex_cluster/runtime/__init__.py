"""asyncio runtime: Node, processes, GenServer, links, monitors, :erpc/:rpc serving."""

from dspex_cluster.runtime.genserver import NOREPLY, Caller, GenServer
from dspex_cluster.runtime.node import Node, read_cookie
from dspex_cluster.runtime.process import Exit, Process
from dspex_cluster.runtime.rpc import CallTimeout, RpcError

__all__ = [
    "NOREPLY",
    "CallTimeout",
    "Caller",
    "Exit",
    "GenServer",
    "Node",
    "Process",
    "RpcError",
    "read_cookie",
]
