"""The `rex` server: every request form that OTP's `rpc` module and erl_interface send to a node's
`rex`, answered from the modules the node exposes.

Forms (OTP 25-28 `rpc.erl`, erl_interface `ei_rpc`/`erl_call`):

  {'$gen_call', From, {call | block_call, M, F, A, GL}}  rpc:call/block_call of old nodes
  {'$gen_call', From, Other}                               answered {badrpc, {'EXIT', {notsup, ..}}}
  {'$gen_cast', {cast, M, F, A, GL}}                       rpc:cast of old nodes
  {Pid, {call, M, F, A, GL}}                               ei_rpc / erl_call -a / -e / -q / -m;
                                                           answered Pid ! {rex, Reply}
  {Pid, {send, Name, Msg}}, {Pid, {sbcast, Name, Msg}}     rpc:server_call and rpc:sbcast
  {Pid, features_request}                                  a visible BEAM's probe on connect

A reply is what `rpc:call` would return: the value, or `{badrpc, {'EXIT', ...}}`. erl_call's
-fetch_stdout group leader (`send_stdout_to_caller`) gets the plain `{rex, Reply}`: Python code
writes to this process's own stdout, not to the caller's. Nothing here ever leaves a caller waiting.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from dspex_cluster.etf import Atom, Pid
from dspex_cluster.etf.brief import brief, brief_exception
from dspex_cluster.runtime.atoms import EXIT, GEN_CALL, GEN_CAST
from dspex_cluster.runtime.genserver import Caller, reply
from dspex_cluster.runtime.process import Endpoint, Exit, exception_reason, exception_stack
from dspex_cluster.runtime.rpc import NOTSUP, lookup

log = logging.getLogger("dspex_cluster.runtime.rex")

REX = Atom("rex")
BADRPC = Atom("badrpc")
CALL = Atom("call")
BLOCK_CALL = Atom("block_call")
CAST = Atom("cast")
SEND = Atom("send")
SBCAST = Atom("sbcast")
FEATURES_REQUEST = Atom("features_request")
FEATURES_REPLY = Atom("features_reply")
NONEXISTING_NAME = Atom("nonexisting_name")

Answer = Callable[[Any], None]


class Rex(Endpoint):
    """The node's registered `rex` process (see the module docstring for what it answers)."""

    def _deliver(self, message: Any) -> None:
        if type(message) is not tuple:
            return
        if len(message) == 3 and message[0] == GEN_CALL:
            sender = message[1]
            if type(sender) is tuple and len(sender) == 2 and isinstance(sender[0], Pid):
                caller = Caller(sender[0], sender[1])
                self._gen_call(message[2], lambda value: reply(self.node, self.pid, caller, value))
            return
        if len(message) == 2 and message[0] == GEN_CAST:
            request = message[1]
            if _is_mfa_request(request, CAST):
                self._apply(request[1], request[2], request[3], None)
            return
        if len(message) == 2 and isinstance(message[0], Pid):
            self._plain(message[0], message[1])

    def _gen_call(self, request: Any, answer: Answer) -> None:
        if _is_mfa_request(request, CALL) or _is_mfa_request(request, BLOCK_CALL):
            self._apply(request[1], request[2], request[3], answer)
        else:
            answer((BADRPC, (EXIT, (NOTSUP, "rex on a Python node serves call and block_call"))))

    def _plain(self, sender: Pid, request: Any) -> None:
        """The `{Pid, Request}` forms: erl_interface's rpc and rpc's helper protocols."""
        node = self.node
        if request == FEATURES_REQUEST:
            node.send(sender, (FEATURES_REPLY, node.name, [Atom("erpc")]), self.pid)
        elif _is_mfa_request(request, CALL):
            self._apply(
                request[1],
                request[2],
                request[3],
                lambda value: node.send(sender, (REX, value), self.pid),
            )
        elif type(request) is tuple and len(request) == 3 and request[0] in (SEND, SBCAST):
            kind, name, msg = request
            target = node._named.get(name) if isinstance(name, Atom) else None
            if target is None:
                node.send(sender, (REX, node.name, (NONEXISTING_NAME, name)), self.pid)
            elif kind == SEND:
                target._deliver((sender, msg))  # the server itself answers, as in rpc.erl
            else:
                target._deliver(msg)
                node.send(sender, (REX, node.name, node.name), self.pid)
        else:
            log.info("rex: ignored a request it does not know (%s)", brief(request, 80))

    def _apply(self, module: Any, fun: Any, args: list[Any], answer: Answer | None) -> None:
        """Run module:fun(args) as rpc:call does; `answer` gets the reply (None: a cast)."""
        fn, call_args, stack = lookup(self.node, module, fun, args)
        if fn is None:
            value: Any = _badrpc_error(call_args, stack)
        else:
            try:
                value = fn(*call_args)
            except Exception as exc:
                value = _badrpc(exc)
            else:
                if inspect.isawaitable(value):
                    self.node._spawn_task(self._finish(value, answer), "rex call")
                    return
        if answer is not None:
            answer(value)

    async def _finish(self, awaitable: Any, answer: Answer | None) -> None:
        try:
            value = await awaitable
        except Exception as exc:
            value = _badrpc(exc)
        if answer is not None:
            answer(value)


def _is_mfa_request(request: Any, kind: Atom) -> bool:
    """{Kind, Module, Function, Args, GroupLeader} with atoms and a proper list."""
    return (
        type(request) is tuple
        and len(request) == 5
        and request[0] == kind
        and isinstance(request[1], Atom)
        and isinstance(request[2], Atom)
        and isinstance(request[3], list)
    )


def _badrpc_error(reason: Any, stack: Any) -> tuple:
    return (BADRPC, (EXIT, (reason, stack)))


def _badrpc(exc: Exception) -> Any:
    """What rpc:call returns when the function raised: exits and errors as {badrpc, ...}."""
    if isinstance(exc, Exit):
        return (BADRPC, (EXIT, exc.reason))
    log.info("rpc'd function raised %s", brief_exception(exc))
    return _badrpc_error(exception_reason(exc), exception_stack(exc))
