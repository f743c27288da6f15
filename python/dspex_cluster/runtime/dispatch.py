"""Incoming control messages: one handler per opcode, O(1) table lookups, no task per message."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dspex_cluster.dist import control as C
from dspex_cluster.dist import flags as F
from dspex_cluster.dist.framing import encode_frame
from dspex_cluster.etf import NO_MESSAGE, Atom, Pid, Reference
from dspex_cluster.etf.brief import brief
from dspex_cluster.runtime.atoms import NOPROC
from dspex_cluster.runtime.rpc import serve_spawn_request

if TYPE_CHECKING:
    from dspex_cluster.runtime.connection import DistConnection
    from dspex_cluster.runtime.node import Node


class ProtocolViolation(Exception):
    """A control message we cannot accept; the connection closes."""


Handler = Callable[["DistConnection", tuple, Any], None]


class ControlDispatcher:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.handlers: dict[int, Handler] = {
            C.SEND: self._send,
            C.SEND_TT: self._send,
            C.SEND_SENDER: self._send,
            C.SEND_SENDER_TT: self._send,
            C.REG_SEND: self._reg_send,
            C.REG_SEND_TT: self._reg_send,
            C.ALIAS_SEND: self._alias_send,
            C.ALIAS_SEND_TT: self._alias_send,
            C.LINK: self._link,
            C.UNLINK: self._unlink,
            C.UNLINK_ID: self._unlink_id,
            C.UNLINK_ID_ACK: self._ignore,
            C.EXIT: self._exit,
            C.EXIT_TT: self._exit,
            C.PAYLOAD_EXIT: self._exit,
            C.PAYLOAD_EXIT_TT: self._exit,
            C.EXIT2: self._exit2,
            C.EXIT2_TT: self._exit2,
            C.PAYLOAD_EXIT2: self._exit2,
            C.PAYLOAD_EXIT2_TT: self._exit2,
            C.MONITOR_P: self._monitor,
            C.DEMONITOR_P: self._demonitor,
            C.MONITOR_P_EXIT: self._monitor_exit,
            C.PAYLOAD_MONITOR_P_EXIT: self._monitor_exit,
            C.SPAWN_REQUEST: self._spawn_request,
            C.SPAWN_REQUEST_TT: self._spawn_request,
            C.SPAWN_REPLY: self._spawn_reply,
            C.SPAWN_REPLY_TT: self._spawn_reply,
            C.GROUP_LEADER: self._ignore,
            C.NODE_LINK: self._ignore,
        }

    def dispatch(self, conn: DistConnection, ctrl: tuple, message: Any) -> None:
        handler = self.handlers.get(ctrl[0])
        if handler is None:
            raise ProtocolViolation(f"unknown control opcode {ctrl[0]}")
        handler(conn, ctrl, message)

    # -- messages ------------------------------------------------------------------------------

    def _send(self, conn: DistConnection, ctrl: tuple, message: Any) -> None:
        ep = self.node._procs.get(ctrl[2])
        if ep is not None:
            ep._deliver(message)
        elif not isinstance(ctrl[2], Pid):
            raise ProtocolViolation("SEND to something that is not a pid")

    def _reg_send(self, conn: DistConnection, ctrl: tuple, message: Any) -> None:
        ep = self.node._named.get(ctrl[3])
        if ep is not None:
            ep._deliver(message)
        elif not isinstance(ctrl[3], Atom):
            raise ProtocolViolation("REG_SEND to something that is not an atom")

    def _alias_send(self, conn: DistConnection, ctrl: tuple, message: Any) -> None:
        ep = self.node._aliases.get(ctrl[2])
        if ep is not None:
            ep._deliver(message)

    # -- links and exits -----------------------------------------------------------------------

    def _link(self, conn: DistConnection, ctrl: tuple, message: Any) -> None:
        sender, to = _peer_pid(conn, ctrl[1], "LINK sender"), self._local_pid(ctrl[2], "LINK")
        ep = self.node._procs.get(to)
        if ep is None:
            self._noproc_exit(conn, to, sender)
        else:
            ep._links.add(sender)

    def _noproc_exit(self, conn: DistConnection, dead: Pid, to: Pid) -> None:
        if conn.flags & F.EXIT_PAYLOAD:
            self._reply(conn, C.payload_exit(dead, to), NOPROC)
        else:
            self._reply(conn, C.exit_(dead, to, NOPROC))

    def _unlink(self, conn: DistConnection, ctrl: tuple, message: Any) -> None:
        sender, to = _peer_pid(conn, ctrl[1], "UNLINK sender"), self._local_pid(ctrl[2], "UNLINK")
        ep = self.node._procs.get(to)
        if ep is not None:
            ep._links.discard(sender)

    def _unlink_id(self, conn: DistConnection, ctrl: tuple, message: Any) -> None:
        unlink_id = ctrl[1]
        if type(unlink_id) is not int:
            raise ProtocolViolation("UNLINK_ID id is not an integer")
        sender = _peer_pid(conn, ctrl[2], "UNLINK_ID sender")
        to = self._local_pid(ctrl[3], "UNLINK_ID")
        ep = self.node._procs.get(to)
        if ep is not None:
            ep._links.discard(sender)
        self._reply(conn, C.unlink_id_ack(unlink_id, to, sender))

    def _exit(self, conn: DistConnection, ctrl: tuple, message: Any) -> None:
        reason = _reason(ctrl, message, (C.EXIT, C.EXIT_TT))
        sender, to = _peer_pid(conn, ctrl[1], "EXIT sender"), self._local_pid(ctrl[2], "EXIT")
        ep = self.node._procs.get(to)
        if ep is not None and sender in ep._links:
            ep._links.discard(sender)
            ep._exit_signal(sender, reason, True)

    def _exit2(self, conn: DistConnection, ctrl: tuple, message: Any) -> None:
        reason = _reason(ctrl, message, (C.EXIT2, C.EXIT2_TT))
        sender, to = _peer_pid(conn, ctrl[1], "EXIT2 sender"), self._local_pid(ctrl[2], "EXIT2")
        ep = self.node._procs.get(to)
        if ep is not None:
            ep._exit_signal(sender, reason, False)

    # -- monitors ------------------------------------------------------------------------------

    def _monitor(self, conn: DistConnection, ctrl: tuple, message: Any) -> None:
        watcher, target, ref = _peer_pid(conn, ctrl[1], "MONITOR_P watcher"), ctrl[2], ctrl[3]
        node = self.node
        if type(ref) is not Reference:
            raise ProtocolViolation("MONITOR_P without a reference")
        if isinstance(target, Pid):
            pid = self._local_pid(target, "MONITOR_P")
        elif isinstance(target, Atom):
            pid = node._names.get(target)
        else:
            raise ProtocolViolation("MONITOR_P of something that is neither pid nor name")
        ep = node._procs.get(pid) if pid is not None else None
        if ep is None or not ep._alive:
            node._send_down(ref, target, watcher, NOPROC)  # answered right away
        else:
            ep._monitored_by[ref] = (watcher, target)

    def _demonitor(self, conn: DistConnection, ctrl: tuple, message: Any) -> None:
        _peer_pid(conn, ctrl[1], "DEMONITOR_P watcher")
        target, ref = ctrl[2], ctrl[3]
        node = self.node
        pid = target if isinstance(target, Pid) else node._names.get(target)
        ep = node._procs.get(pid) if pid is not None else None
        if ep is not None:
            ep._monitored_by.pop(ref, None)
        elif isinstance(target, Atom):
            for candidate in node._procs.values():  # the name moved: rare, scan once
                if candidate._monitored_by.pop(ref, None) is not None:
                    break

    def _monitor_exit(self, conn: DistConnection, ctrl: tuple, message: Any) -> None:
        reason = message if ctrl[0] == C.PAYLOAD_MONITOR_P_EXIT else ctrl[4]
        target, watcher, ref = ctrl[1], self._local_pid(ctrl[2], "MONITOR_P_EXIT"), ctrl[3]
        if not isinstance(target, Atom):
            _peer_pid(conn, target, "MONITOR_P_EXIT target")
        ep = self.node._procs.get(watcher)
        if ep is None:
            return
        target = ep._monitors.pop(ref, None)
        if target is not None:
            ep._down(ref, target, reason)

    # -- spawn ---------------------------------------------------------------------------------

    def _spawn_request(self, conn: DistConnection, ctrl: tuple, message: Any) -> None:
        # Everything is checked before anything is attached: a refused request leaves nothing.
        if len(ctrl) != (6 if ctrl[0] == C.SPAWN_REQUEST else 7):
            raise ProtocolViolation(f"SPAWN_REQUEST of {len(ctrl)} elements")
        req_id, _caller, group_leader, mfa, opts = ctrl[1:6]
        if type(req_id) is not Reference:
            raise ProtocolViolation("SPAWN_REQUEST id is not a reference")
        _peer_pid(conn, ctrl[2], "SPAWN_REQUEST caller")
        if type(group_leader) is not Pid:
            raise ProtocolViolation("SPAWN_REQUEST group leader is not a pid")
        if not (
            type(mfa) is tuple
            and len(mfa) == 3
            and type(mfa[0]) is Atom
            and type(mfa[1]) is Atom
            and type(mfa[2]) is int
        ):
            raise ProtocolViolation("SPAWN_REQUEST {Module, Function, Arity} is malformed")
        if type(opts) is not list or type(message) is not list or len(message) != mfa[2]:
            raise ProtocolViolation("SPAWN_REQUEST options or arguments are not proper lists")
        serve_spawn_request(self.node, conn, ctrl, message)

    def _spawn_reply(self, conn: DistConnection, ctrl: tuple, message: Any) -> None:
        req_id, flags, result = ctrl[1], ctrl[3], ctrl[4]
        to = self._local_pid(ctrl[2], "SPAWN_REPLY")
        if type(flags) is not int:
            raise ProtocolViolation("SPAWN_REPLY flags are not an integer")
        if not isinstance(result, Atom):
            _peer_pid(conn, result, "SPAWN_REPLY result")
        node = self.node
        ep = node._procs.get(to)
        if ep is not None:
            if isinstance(result, Pid) and flags & C.SPAWN_FLAG_LINK:
                ep._links.add(result)
            ep._spawn_reply(req_id, flags, result)
        elif isinstance(result, Pid) and flags & C.SPAWN_FLAG_MONITOR:
            self._reply(conn, C.demonitor_p(to, result, req_id))

    def _ignore(self, conn: DistConnection, ctrl: tuple, message: Any) -> None:
        return

    def _local_pid(self, value: Any, what: str) -> Pid:
        """The pid a control message addresses must be one of this node's names (maybe of an
        earlier incarnation, which then gets noproc); anything else is invalid, as in dist.c."""
        if type(value) is not Pid or value.node != self.node.name:
            raise ProtocolViolation(f"{what} to {brief(value, 80)}, not a pid of this node")
        return value

    def _reply(self, conn: DistConnection, ctrl: tuple, message: Any = NO_MESSAGE) -> None:
        """An answer goes back on the connection the request came in on, never anywhere else."""
        conn.send_frame(encode_frame(ctrl, message, self.node._control_encodings))


def _peer_pid(conn: DistConnection, value: Any, what: str) -> Pid:
    """A sender, watcher or linker must be a pid of the node at the other end of `conn` (same
    name and creation): OTP's dist.c refuses anything else as an invalid message. Otherwise a
    peer could attach links and monitors in another node's name that outlive its connection,
    and make us dial wherever it likes to deliver the answers."""
    if (
        type(value) is not Pid
        or value.node != conn.peer_name
        or value.creation != conn.peer_creation
    ):
        raise ProtocolViolation(f"{what} {brief(value, 80)} is not a pid of {conn.peer_name}")
    return value


def _reason(ctrl: tuple, message: Any, in_tuple: tuple[int, int]) -> Any:
    return ctrl[-1] if ctrl[0] in in_tuple else message
