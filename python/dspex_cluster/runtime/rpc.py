"""Calls and remote procedure calls: waiters for node.call/node.rpc, and serving :erpc/:rpc
SPAWN_REQUESTs for the modules a node exposes."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import TYPE_CHECKING, Any

from dspex_cluster.dist import control as C
from dspex_cluster.etf import Atom, ExportFun, Fun, Pid, Reference
from dspex_cluster.etf.brief import brief, brief_exception
from dspex_cluster.runtime.atoms import (
    ERROR,
    NOCONNECTION,
    NORMAL,
    RETURN,
    UNDEF,
)
from dspex_cluster.runtime.process import Endpoint, Exit, exception_reason, exception_stack

if TYPE_CHECKING:
    from dspex_cluster.runtime.connection import DistConnection
    from dspex_cluster.runtime.node import Node

log = logging.getLogger("dspex_cluster.runtime.rpc")

ERPC = Atom("erpc")
EXECUTE_CALL = Atom("execute_call")
EXECUTE_CAST = Atom("execute_cast")
MONITOR = Atom("monitor")
LINK = Atom("link")


NOTSUP = Atom("notsup")
ERLANG = Atom("erlang")
APPLY = Atom("apply")

FUN_NOT_SUPPORTED = (
    "a fun cannot run on a Python node: call a function the node exposes instead, "
    "with :erpc.call(node, module, function, args) or Node.spawn(node, module, function, args)"
)
EVAL_NOT_SUPPORTED = (
    "a Python node (dspex_cluster) does not evaluate Erlang expressions (erl_call -e): "
    "call a function the node exposes with erl_call -a 'module function [args]'"
)


def lookup(node: Node, module: Any, fun: Any, args: list[Any]) -> tuple[Any, Any, Any]:
    """What an incoming call of module:fun(args) runs: `(callable, args, None)`, or
    `(None, reason, stack)` for the error the caller gets, shaped as a BEAM node's would be.

    - an exposed function: itself;
    - `erlang:apply(Fun, Args)` (what `:erpc.call(node, fun)` and `Node.spawn(node, fun)` send):
      an exported fun of an exposed module runs; any other fun is refused with
      `{notsup, <<"a fun cannot run on a Python node: ...">>}`;
    - `erl_eval:eval_str/1` (erl_call -e): returns `{error, "...cannot evaluate..."}` as
      erl_eval's own failures do, so erl_call prints a clear line instead of hanging;
    - anything else: `undef` with the call's argument list in the stack, as on a BEAM node.
    """
    fn = node.exposed_function(module, fun) if isinstance(module, str) else None
    if fn is not None:
        return fn, args, None
    if module == ERLANG and fun == APPLY and len(args) == 2 and isinstance(args[1], list):
        target = args[0]
        if isinstance(target, ExportFun) and target.arity == len(args[1]):
            exported = node.exposed_function(target.module, target.function)
            if exported is not None:
                return exported, args[1], None
        if isinstance(target, (Fun, ExportFun)):
            log.info("refused a fun from a peer: funs cannot run on a Python node")
            return None, (NOTSUP, FUN_NOT_SUPPORTED), [(module, fun, args, [])]
    if module == "erl_eval" and fun == "eval_str":
        log.info("refused erl_eval:eval_str (erl_call -e): no Erlang evaluator here")
        return (lambda *_: (ERROR, [ord(c) for c in EVAL_NOT_SUPPORTED])), args, None
    log.info("refused %s:%s/%d: not exposed", brief(module, 80), brief(fun, 80), len(args))
    return None, UNDEF, [(module, fun, args, [])]


class CallTimeout(Exit, TimeoutError):
    """A call or rpc got no answer in time: an Exit(timeout) that is also a TimeoutError."""


class RpcError(Exception):
    """A remote call raised: `kind` is error/exit/throw (or erpc for erpc's own errors)."""

    def __init__(self, kind: str, reason: Any, stack: Any = None) -> None:
        super().__init__(f"{kind}: {reason!r}")
        self.kind = kind
        self.reason = reason
        self.stack = stack


class _CallWaiter(Endpoint):
    """The temporary process behind node.call: waits for {Tag, Reply} or a DOWN."""

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future
        self.tag: Any = None

    def _deliver(self, message: Any) -> None:
        if (
            type(message) is tuple
            and len(message) == 2
            and message[0] == self.tag
            and not self.future.done()
        ):
            self.future.set_result(message[1])

    def _down(self, ref: Reference, target: Any, reason: Any) -> None:
        if not self.future.done():
            self.future.set_exception(Exit(reason))


class RpcWaiter(Endpoint):
    """The temporary process behind node.rpc: SPAWN_REPLY, then the DOWN carrying the result."""

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future
        self.req_id: Reference | None = None
        self.res_ref: Reference | None = None
        self.target_node: Atom | None = None
        self.worker: Pid | None = None

    def _deliver(self, message: Any) -> None:
        """Plain messages are not part of the erpc protocol."""

    def _spawn_reply(self, req_id: Reference, flags: int, result: Any) -> None:
        if req_id != self.req_id or self.future.done():
            return
        if isinstance(result, Pid):
            self.worker = result
            if flags & C.SPAWN_FLAG_MONITOR:
                self._monitors[req_id] = result
        else:
            self._monitors.pop(req_id, None)
            self.future.set_exception(RpcError("error", (ERPC, result)))

    def _down(self, ref: Reference, target: Any, reason: Any) -> None:
        if ref != self.req_id or self.future.done():
            return
        res = self.res_ref
        if isinstance(reason, tuple) and len(reason) >= 3 and reason[0] == res:
            kind = reason[1]
            if kind == RETURN:
                self.future.set_result(reason[2])
            elif kind == ERROR and len(reason) == 4:
                self.future.set_exception(RpcError("error", reason[2], reason[3]))
            else:
                self.future.set_exception(RpcError(str(kind), reason[2]))
        elif reason == NOCONNECTION:
            self.future.set_exception(Exit(NOCONNECTION))
        else:
            self.future.set_exception(RpcError("exit", (Atom("signal"), reason)))


class SpawnedCall(Endpoint):
    """A 'process' spawned on our node by a SPAWN_REQUEST: it runs one exposed function."""

    def __init__(self, label: str) -> None:
        self.label = label

    def _deliver(self, message: Any) -> None:
        """An exposed function has no mailbox."""

    def _exit_signal(self, sender: Any, reason: Any, link: bool) -> None:
        if reason == NORMAL and link:
            return
        task = getattr(self, "task", None)
        if task is not None:
            task.cancel()
        self.node._terminate(self, Atom("killed") if reason == "kill" else reason)


def serve_spawn_request(node: Node, conn: DistConnection, ctrl: tuple, args: Any) -> None:
    """SPAWN_REQUEST {29, ReqId, From, GL, {M,F,Arity}, Opts} + Args: run an exposed function."""
    req_id, caller, _group_leader, mfa, opts = ctrl[1], ctrl[2], ctrl[3], ctrl[4], ctrl[5]
    if not (isinstance(mfa, tuple) and len(mfa) == 3 and isinstance(args, list)):
        raise ValueError("malformed SPAWN_REQUEST")
    want_link = want_monitor = False
    for opt in opts if isinstance(opts, list) else ():
        name = opt[0] if isinstance(opt, tuple) and opt else opt
        if name == LINK:
            want_link = True
        elif name == MONITOR:
            want_monitor = True
    module, fun, _arity = mfa
    res_ref: Any = None
    mode = "spawn"
    if module == ERPC and fun == EXECUTE_CALL and len(args) == 4:
        res_ref, module, fun, args = args
        mode = "call"
    elif module == ERPC and fun == EXECUTE_CAST and len(args) == 3:
        module, fun, args = args
        mode = "cast"
    ep = SpawnedCall(f"{module}:{fun}")
    pid = node._attach_endpoint(ep)
    if want_link:
        ep._links.add(caller)
    if want_monitor:
        ep._monitored_by[req_id] = (caller, pid)
    flags = (C.SPAWN_FLAG_LINK if want_link else 0) | (C.SPAWN_FLAG_MONITOR if want_monitor else 0)
    node._send_control(conn.peer_name, C.spawn_reply(req_id, caller, flags, pid))  # type: ignore[arg-type]

    if not isinstance(args, list):
        node._terminate(ep, _wrap(mode, res_ref, "error", Atom("badarg"), []))
        return
    fn, call_args, stack = lookup(node, module, fun, args)
    if fn is None:
        node._terminate(ep, _wrap(mode, res_ref, "error", call_args, stack))
        return
    try:
        result = fn(*call_args)
    except Exception as exc:
        node._terminate(ep, _failure(mode, res_ref, exc))
        return
    if inspect.isawaitable(result):
        ep.task = node._spawn_task(_finish_async(node, ep, mode, res_ref, result), ep.label)  # type: ignore[attr-defined]
        return
    node._terminate(ep, _wrap(mode, res_ref, "return", result, None))


async def _finish_async(
    node: Node, ep: SpawnedCall, mode: str, res_ref: Any, awaitable: Any
) -> None:
    try:
        value = await awaitable
    except asyncio.CancelledError:
        node._terminate(ep, Atom("killed"))
        raise
    except Exception as exc:
        node._terminate(ep, _failure(mode, res_ref, exc))
        return
    node._terminate(ep, _wrap(mode, res_ref, "return", value, None))


def _failure(mode: str, res_ref: Any, exc: Exception) -> Any:
    if isinstance(exc, Exit):
        return _wrap(mode, res_ref, "exit", exc.reason, None)
    log.info("exposed function raised %s", brief_exception(exc))
    return _wrap(mode, res_ref, "error", exception_reason(exc), exception_stack(exc))


def _wrap(mode: str, res_ref: Any, kind: str, value: Any, stack: Any) -> Any:
    """The exit reason of the spawned process, as erpc:execute_call/4 would produce it."""
    if mode == "call":
        if kind == "return":
            return (res_ref, RETURN, value)
        if kind == "error":
            return (res_ref, ERROR, value, stack)
        return (res_ref, Atom(kind), value)
    if kind == "return":
        return NORMAL
    if kind == "error":
        return (value, stack)
    return value
