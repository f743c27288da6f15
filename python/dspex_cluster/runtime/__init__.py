"""asyncio runtime: Node, processes, GenServer, links, monitors, :erpc/:rpc serving."""

from dspex_cluster.runtime.genserver import NOREPLY, Caller, GenServer
from dspex_cluster.runtime.node import Node, read_cookie
from dspex_cluster.runtime.process import Exit, Process
from dspex_cluster.runtime.rpc import CallTimeout, RpcError
from dspex_cluster.runtime.supervisor import ChildSpec, Supervisor

__all__ = [
    "NOREPLY",
    "CallTimeout",
    "Caller",
    "ChildSpec",
    "Exit",
    "GenServer",
    "Node",
    "Process",
    "RpcError",
    "Supervisor",
    "read_cookie",
]
