"""DSPEx Cluster: Python nodes as real peers in a distributed Erlang cluster.

The API (`help(dspex_cluster.Node)` and so on):

- `Node` — a Python node: `async with Node("py1@127.0.0.1", cookie_file=...) as node`, then
  `node.spawn`, `node.send`, `node.call` (gen_server:call), `node.rpc` (erpc:call),
  `node.expose` (what :erpc/:rpc may call here), `node.join` (become a cluster member),
  `node.serve_forever()` (run until SIGTERM/SIGINT or `node.stop()`).
- `Process`, `GenServer` — processes with a mailbox, links and monitors; `Exit` ends one.
- `Supervisor`, `ChildSpec` — OTP's supervisor: one_for_one / one_for_all / rest_for_one,
  restart intensity, ordered shutdown.
- `Atom`, `Pid`, `Reference`, `Port`, `ImproperList`, `BitString` — Erlang terms (`etf`).

The clustering agents (numpy) live in `dspex_cluster.cluster`, the agent framework in
`dspex_cluster.agents`; neither is imported here, so `import dspex_cluster` stays light.
"""

from __future__ import annotations

from dspex_cluster.etf import Atom, BitString, ImproperList, Pid, Port, Reference
from dspex_cluster.runtime import ChildSpec, Exit, GenServer, Node, Process, Supervisor

__version__ = "0.1.0"

__all__ = [
    "Atom",
    "BitString",
    "ChildSpec",
    "Exit",
    "GenServer",
    "ImproperList",
    "Node",
    "Pid",
    "Port",
    "Process",
    "Reference",
    "Supervisor",
]
