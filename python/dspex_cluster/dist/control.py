"""Control message opcodes ([dist.h] enum dop) and builders for the tuples we send."""

from __future__ import annotations

from typing import Any

from dspex_cluster.etf import Atom

LINK = 1
SEND = 2
EXIT = 3
UNLINK = 4
NODE_LINK = 5
REG_SEND = 6
GROUP_LEADER = 7
EXIT2 = 8
SEND_TT = 12
EXIT_TT = 13
REG_SEND_TT = 16
EXIT2_TT = 18
MONITOR_P = 19
DEMONITOR_P = 20
MONITOR_P_EXIT = 21
SEND_SENDER = 22
SEND_SENDER_TT = 23
PAYLOAD_EXIT = 24
PAYLOAD_EXIT_TT = 25
PAYLOAD_EXIT2 = 26
PAYLOAD_EXIT2_TT = 27
PAYLOAD_MONITOR_P_EXIT = 28
SPAWN_REQUEST = 29
SPAWN_REQUEST_TT = 30
SPAWN_REPLY = 31
SPAWN_REPLY_TT = 32
ALIAS_SEND = 33
ALIAS_SEND_TT = 34
UNLINK_ID = 35
UNLINK_ID_ACK = 36

# Opcodes whose payload term (Reason or Args or Msg) follows the control tuple.
WITH_PAYLOAD = frozenset(
    {
        SEND,
        REG_SEND,
        SEND_TT,
        REG_SEND_TT,
        SEND_SENDER,
        SEND_SENDER_TT,
        PAYLOAD_EXIT,
        PAYLOAD_EXIT_TT,
        PAYLOAD_EXIT2,
        PAYLOAD_EXIT2_TT,
        PAYLOAD_MONITOR_P_EXIT,
        SPAWN_REQUEST,
        SPAWN_REQUEST_TT,
        ALIAS_SEND,
        ALIAS_SEND_TT,
    }
)

# Spawn reply flags
SPAWN_FLAG_LINK = 1
SPAWN_FLAG_MONITOR = 2

EMPTY = Atom("")


def send(to: Any) -> tuple:
    return (SEND, EMPTY, to)


def send_sender(sender: Any, to: Any) -> tuple:
    return (SEND_SENDER, sender, to)


def reg_send(sender: Any, name: Atom) -> tuple:
    return (REG_SEND, sender, EMPTY, name)


def alias_send(sender: Any, alias: Any) -> tuple:
    return (ALIAS_SEND, sender, alias)


def link(sender: Any, to: Any) -> tuple:
    return (LINK, sender, to)


def unlink_id(unlink_id: int, sender: Any, to: Any) -> tuple:
    return (UNLINK_ID, unlink_id, sender, to)


def unlink_id_ack(unlink_id: int, sender: Any, to: Any) -> tuple:
    return (UNLINK_ID_ACK, unlink_id, sender, to)


def exit_(sender: Any, to: Any, reason: Any) -> tuple:
    return (EXIT, sender, to, reason)


def payload_exit(sender: Any, to: Any) -> tuple:
    return (PAYLOAD_EXIT, sender, to)


def exit2(sender: Any, to: Any, reason: Any) -> tuple:
    return (EXIT2, sender, to, reason)


def payload_exit2(sender: Any, to: Any) -> tuple:
    return (PAYLOAD_EXIT2, sender, to)


def monitor_p(sender: Any, target: Any, ref: Any) -> tuple:
    return (MONITOR_P, sender, target, ref)


def demonitor_p(sender: Any, target: Any, ref: Any) -> tuple:
    return (DEMONITOR_P, sender, target, ref)


def monitor_p_exit(target: Any, watcher: Any, ref: Any, reason: Any) -> tuple:
    return (MONITOR_P_EXIT, target, watcher, ref, reason)


def payload_monitor_p_exit(target: Any, watcher: Any, ref: Any) -> tuple:
    return (PAYLOAD_MONITOR_P_EXIT, target, watcher, ref)


def spawn_request(req_id: Any, sender: Any, group_leader: Any, mfa: tuple, opts: list) -> tuple:
    return (SPAWN_REQUEST, req_id, sender, group_leader, mfa, opts)


def spawn_reply(req_id: Any, to: Any, flags: int, result: Any) -> tuple:
    return (SPAWN_REPLY, req_id, to, flags, result)
