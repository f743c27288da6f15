"""A visible node's `global_name_server`: enough of OTP's `global` protocol to be a synced,
well-behaved member that registers no names of its own.

What a BEAM node A does when it sees us (kernel global.erl, protocol version 5+; we echo A's
version) and what we answer:

  A -> us  cast {init_connect, {Vsn, ATag}, A, {locker, _, _, ALocker}}
  us -> A  cast {init_connect, {Vsn, OurTag}, us, {locker, no_longer_a_pid, #{}, OurLocker}}
  A -> us  {init_connect_ack, A, OurTag, ATag}                         (nothing to do)
  A -> us  call {set_lock, LockId} / {del_lock, LockId}                 -> true
  A -> us  cast {lock_set, ALocker, true, _, OurTag}
  us -> A  cast {lock_set, OurLocker, true, [], ATag}
  A -> us  cast {exchange, A, Names, _, OurTag}
  us -> A  cast {exchange, us, [], [], ATag}, then {resolved, us, [], [], unused, [], ATag}
  A -> us  cast {resolved, A, Ops, AKnown, _, _, OurTag}  -> {in_sync, us, true} to AKnown
  A -> us  cast {new_nodes, A, Ops, _, Nodes, _}          -> {in_sync, us, true} to Nodes

Locks: every lock request also covers the requesting BEAM node, so the BEAM nodes keep
arbitrating; we grant set_lock and del_lock at once. We claim to know no other node, so we never
merge partitions for anyone, and we honour `remove_connection` (prevent_overlapping_partitions).
Anything else is logged at debug level and, for calls, answered so no caller ever hangs.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from dspex_cluster.etf import Atom
from dspex_cluster.runtime.atoms import GEN_CALL, GEN_CAST
from dspex_cluster.runtime.genserver import Caller, reply
from dspex_cluster.runtime.process import Endpoint

log = logging.getLogger("dspex_cluster.runtime.global")

GNS = Atom("global_name_server")
TRUE_REPLIES = frozenset({"set_lock", "del_lock"})
CALL_REPLIES: dict[str, Any] = {
    "register": Atom("yes"),
    "register_ext": Atom("yes"),
    "unregister": Atom("ok"),
    "unregister_ext": Atom("ok"),
    "get_known": [],
    "get_synced": [],
    "get_names_ext": [],
}


class GlobalNameServer(Endpoint):
    def __init__(self) -> None:
        self.my_tags: dict[Atom, int] = {}  # our sync tag per BEAM node
        self.his_tags: dict[Atom, Any] = {}  # that node's sync tag
        self.synced: set[Atom] = set()

    # -- plumbing --------------------------------------------------------------------------

    def _cast(self, node: Atom, request: Any) -> None:
        self.node.send((GNS, node), (GEN_CAST, request), sender=self.pid)

    def _deliver(self, message: Any) -> None:
        try:
            if type(message) is tuple and len(message) == 3 and message[0] == GEN_CALL:
                self._call(Caller(message[1][0], message[1][1]), message[2])
            elif type(message) is tuple and len(message) == 2 and message[0] == GEN_CAST:
                self._handle_cast(message[1])
            else:
                self._handle_info(message)
        except (IndexError, TypeError, ValueError) as err:
            log.debug("global_name_server ignored %r: %r", message, err)

    # -- calls: always answered ------------------------------------------------------------

    def _call(self, caller: Caller, request: Any) -> None:
        kind = request[0] if type(request) is tuple and request else request
        if kind in TRUE_REPLIES:
            answer: Any = True
        elif kind == "get_protocol_version":
            answer = 6
        else:
            answer = CALL_REPLIES.get(kind, Atom("ok")) if isinstance(kind, str) else Atom("ok")
            if kind not in CALL_REPLIES:
                log.debug("global_name_server answered ok to %r", request)
        reply(self.node, self.pid, caller, answer)

    # -- the sync protocol -----------------------------------------------------------------

    def _handle_cast(self, request: Any) -> None:
        kind = request[0] if type(request) is tuple and request else None
        if kind == "init_connect":
            _, vsn, peer, _init = request
            self._init_connect(vsn, peer)
        elif kind == "lock_set" and len(request) == 5:
            _, locker, is_set, _known, tag = request
            peer = locker.node
            if is_set is True and tag == self.my_tags.get(peer):
                self._cast(peer, (Atom("lock_set"), self.pid, True, [], self.his_tags[peer]))
        elif kind == "exchange":
            _, peer, _names, _ext, tag = request
            if tag == self.my_tags.get(peer):
                his = self.his_tags[peer]
                me = self.node.name
                self._cast(peer, (Atom("exchange"), me, [], [], his))
                self._cast(peer, (Atom("resolved"), me, [], [], Atom("unused"), [], his))
        elif kind == "resolved":
            _, peer, _ops, his_known, _unused, _ext, tag = request
            if tag == self.my_tags.get(peer):
                self.synced.add(peer)
                self._in_sync_with(_node_names(his_known))
                log.debug("global: synced with %s", peer)
        elif kind == "new_nodes":
            self._in_sync_with(_node_names(request[4]))
        elif kind == "in_sync":
            self.synced.add(request[1])
        else:
            log.debug("global_name_server ignored cast %r", request)

    def _init_connect(self, vsn: Any, peer: Atom) -> None:
        if not (type(vsn) is tuple and len(vsn) >= 2):
            return
        his_vsn, his_tag = vsn[0], vsn[1]
        self.his_tags[peer] = his_tag
        my_tag = self.my_tags[peer] = secrets.randbits(48)
        locker = (Atom("locker"), Atom("no_longer_a_pid"), {}, self.pid)
        self._cast(peer, (Atom("init_connect"), (his_vsn, my_tag), self.node.name, locker))

    def _in_sync_with(self, nodes: list[Atom]) -> None:
        me = self.node.name
        for other in nodes:
            if other != me:
                self._cast(other, (Atom("in_sync"), me, True))

    def _handle_info(self, message: Any) -> None:
        kind = message[0] if type(message) is tuple and message else None
        if kind == "remove_connection":
            peer = message[1]
            log.info("global at %s asks us to disconnect (overlapping partitions)", peer)
            self.node._spawn_task(self.node.disconnect(peer), "global remove_connection")
        elif kind == "cancel_connect":
            self.my_tags.pop(message[1], None)
        elif kind in ("init_connect_ack", "lost_connection"):
            return
        else:
            log.debug("global_name_server ignored %r", message)

    def nodedown(self, peer: Atom) -> None:
        self.my_tags.pop(peer, None)
        self.his_tags.pop(peer, None)
        self.synced.discard(peer)


def _node_names(known: Any) -> list[Atom]:
    names: list[Atom] = []
    for entry in known if isinstance(known, list) else ():
        name = entry[0] if type(entry) is tuple and entry else entry
        if isinstance(name, Atom):
            names.append(name)
    return names
