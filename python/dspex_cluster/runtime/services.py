"""The registered processes a BEAM node expects to find on a peer: a group leader for remote
io, `net_kernel` (net_adm:ping), `rex` (rpc, erl_interface's ei_rpc and erl_call; see rex.py),
and, for visible nodes, `global_name_server`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from dspex_cluster.etf import Atom
from dspex_cluster.runtime.atoms import GEN_CALL
from dspex_cluster.runtime.genserver import Caller, reply
from dspex_cluster.runtime.process import Endpoint
from dspex_cluster.runtime.rex import Rex

if TYPE_CHECKING:
    from dspex_cluster.runtime.node import Node

log = logging.getLogger("dspex_cluster.runtime.services")
io_log = logging.getLogger("dspex_cluster.remote_io")


def _as_call(message: Any) -> tuple[Caller, Any] | None:
    """({Pid, Tag}, Request) when `message` is a gen_server call."""
    if (
        type(message) is tuple
        and len(message) == 3
        and message[0] == GEN_CALL
        and type(message[1]) is tuple
        and len(message[1]) == 2
    ):
        return Caller(message[1][0], message[1][1]), message[2]
    return None


class SystemProcess(Endpoint):
    """The node's own pid: the sender of node.send, the group leader of our remote spawns.
    As an io server it logs output and answers every request so remote io never hangs."""

    def _deliver(self, message: Any) -> None:
        if type(message) is tuple and len(message) == 4 and message[0] == "io_request":
            _, sender, reply_as, request = message
            if type(request) is tuple and request and request[0] == "put_chars":
                chars = request[-1]
                if isinstance(chars, bytes):
                    io_log.info("%s", chars.decode("utf-8", "replace").rstrip("\n"))
                elif isinstance(chars, list) and all(isinstance(c, int) for c in chars):
                    io_log.info("%s", "".join(map(chr, chars)).rstrip("\n"))
                answer: Any = Atom("ok")
            else:
                answer = (Atom("error"), Atom("enotsup"))
            self.node.send(sender, (Atom("io_reply"), reply_as, answer), sender=self.pid)


class NetKernel(Endpoint):
    """Answers net_adm:ping ({is_auth, Node} -> yes)."""

    def _deliver(self, message: Any) -> None:
        call = _as_call(message)
        if call is None:
            return
        caller, request = call
        if type(request) is tuple and request and request[0] == "is_auth":
            reply(self.node, self.pid, caller, Atom("yes"))
        else:
            reply(self.node, self.pid, caller, Atom("ignored"))


def install_services(node: Node) -> None:
    system = SystemProcess()
    node.system_pid = node._attach_endpoint(system)
    for name, service in (("net_kernel", NetKernel()), ("rex", Rex())):
        node.register(name, node._attach_endpoint(service))
    if not node.hidden:
        from dspex_cluster.runtime.global_server import GlobalNameServer

        gns = GlobalNameServer()
        node.register("global_name_server", node._attach_endpoint(gns))
        node.on_nodedown(lambda peer, _why: gns.nodedown(peer))
