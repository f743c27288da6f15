"""The cluster's state store from Python: `DSPEx.Clustering.State` on the BEAM nodes, by `:erpc`.

    state = State(node)                        # or State(node, beams=["beam1@127.0.0.1", ...])
    version = await state.put("config", {"replicas": 3})
    entry = await state.get("config")          # Entry(value=..., version=...) or None
    version = await state.cas("config", entry.version, {"replicas": 4})
    await state.delete("config")
    print(await state.status())

    session = state.session()                  # consistency="causal": the token travels with it
    await session.put("cart", ["apple"])
    entry = await State(node, beams=["beam2@127.0.0.1"]).session(session.token).get("cart")

Calls go to a BEAM node (the given `beams` in turn, else every node this one is connected to);
when that node is unreachable (`noconnection`) or is not running the application, the next one is
tried. Keys and values are any term the codec encodes (str is sent as a UTF-8 binary and comes
back as bytes, as everywhere in this package); a value it cannot encode raises `StateValueError`
before anything is sent. `consistency` defaults to the BEAM node's setting (`:strong` in the
production profile); pass `consistency="strong"` (or "eventual", "causal") per call or per `State`.

A `CausalSession` (`state.session()`) gives read-your-writes, monotonic reads and
writes-follow-reads over the eventual replicas, on any BEAM node: it carries the session token
(a vector clock) from each reply to the next call. Its `get` waits on the BEAM node until that
replica has seen the session's past, at most the client's `timeout`, else raises `StateTimeout`.

Errors are exceptions: `VersionMismatch` (a cas whose expected version was not the current one;
`.current` is that version or None when the key is absent), `ValueTooLarge`, `NoQuorum` and
`StateTimeout` (the write may or may not have been applied, never twice), `StateError` for the rest.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

from dspex_cluster.etf import Atom, encode
from dspex_cluster.runtime import Exit, Node
from dspex_cluster.runtime.rpc import CallTimeout, RpcError

MODULE = "Elixir.DSPEx.Clustering.State"
OK = Atom("ok")
ERROR = Atom("error")
NONE = Atom("none")


class StateError(Exception):
    """A state call failed; `reason` is the BEAM side's error term."""

    def __init__(self, reason: Any, message: str | None = None) -> None:
        super().__init__(message or f"state call failed: {reason!r}")
        self.reason = reason


class NoQuorum(StateError):
    """The BEAM node could not reach a majority of the strong group within the timeout."""


class StateTimeout(StateError):
    """A majority was reachable but nothing committed within the timeout."""


class VersionMismatch(StateError):
    """A cas found another version; `current` is it (None: the key is absent)."""

    def __init__(self, reason: Any, current: Any) -> None:
        super().__init__(reason, f"version mismatch: current version is {current!r}")
        self.current = current


class ValueTooLarge(StateError):
    """The value is larger than the BEAM side's `max_value_bytes`."""


class StateValueError(StateError, TypeError):
    """A key or value that the term codec cannot encode (nothing was sent)."""


class Entry(NamedTuple):
    """A value read from the store and its version."""

    value: Any
    version: Any


class State:
    """Client of `DSPEx.Clustering.State` for a started Python `node`."""

    def __init__(
        self,
        node: Node,
        beams: Sequence[str] | None = None,
        consistency: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        """`beams`: BEAM nodes to ask, in order (default: every connected node). `consistency`:
        this client's default (None: the BEAM node's). `timeout`: seconds per call."""
        self.node = node
        self.beams = [Atom(b) for b in beams] if beams else None
        self.consistency = consistency
        self.timeout = timeout
        self._preferred = 0

    async def put(self, key: Any, value: Any, *, consistency: str | None = None) -> Any:
        """Writes `value` under `key`; returns the new version."""
        _check_encodable(key, value)
        return _version(await self._call("put", [key, value], consistency))

    async def get(self, key: Any, *, consistency: str | None = None) -> Entry | None:
        """Reads `key`: an Entry(value, version), or None when it is absent."""
        _check_encodable(key)
        reply = await self._call("get", [key], consistency)
        if isinstance(reply, tuple) and len(reply) == 3 and reply[0] == OK:
            return Entry(reply[1], reply[2])
        if reply == (ERROR, Atom("not_found")):
            return None
        raise _error(reply)

    async def cas(
        self, key: Any, expected_version: Any, value: Any, *, consistency: str | None = None
    ) -> Any:
        """Writes `value` if `key`'s version is `expected_version` (None: the key is absent);
        returns the new version, or raises VersionMismatch."""
        _check_encodable(key, value)
        expected = NONE if expected_version is None else expected_version
        return _version(await self._call("cas", [key, expected, value], consistency))

    async def delete(self, key: Any, *, consistency: str | None = None) -> None:
        """Removes `key` (also fine when it is absent)."""
        _check_encodable(key)
        reply = await self._call("delete", [key], consistency)
        # strong answers ok, eventual {ok, Version}
        if reply != OK and not (isinstance(reply, tuple) and len(reply) == 2 and reply[0] == OK):
            raise _error(reply)

    def session(self, token: dict[Any, Any] | None = None) -> CausalSession:
        """A causal session through this client, starting from `token` (default: a new one)."""
        return CausalSession(self, token)

    async def status(self) -> dict[str, Any]:
        """The strong group as a BEAM node sees it (leader, members, term, commit_index, lag...),
        with atom keys as str."""
        reply = await self._rpc("status", [])
        return {str(k): v for k, v in reply.items()}

    async def _call(
        self, fun: str, args: list[Any], consistency: str | None, extra: Sequence[Any] = ()
    ) -> Any:
        chosen = consistency or self.consistency
        # one id for the call, kept when it is sent again through another BEAM node: the strong
        # store applies it at most once (a node lost after forwarding it must not cause a second)
        request_id = (self.node.name, uuid.uuid4().bytes)
        opts: list[Any] = [
            (Atom("timeout"), int(self.timeout * 1000)),
            (Atom("request_id"), request_id),
            *extra,
        ]
        if chosen is not None:
            opts.append((Atom("consistency"), Atom(chosen)))
        return await self._rpc(fun, [*args, opts])

    async def _rpc(self, fun: str, args: list[Any]) -> Any:
        beams = self.beams if self.beams is not None else list(self.node.nodes())
        if not beams:
            raise StateError(Atom("noconnection"), "no BEAM node to ask")
        last: BaseException | None = None
        for i in range(len(beams)):
            index = (self._preferred + i) % len(beams)
            try:
                # the BEAM side answers within `timeout`; leave room for the reply to arrive
                reply = await self.node.rpc(beams[index], MODULE, fun, args, self.timeout + 2.0)
            except CallTimeout as exc:
                self._preferred = index + 1  # a frozen node: the next call asks another one
                raise StateTimeout(Atom("timeout")) from exc
            except Exit as exc:  # noconnection: the next BEAM node
                last = exc
                continue
            except RpcError as exc:
                if exc.kind == "error" and _is_undef(exc.reason):  # not a BEAM app node
                    last = exc
                    continue
                raise StateError(exc.reason) from exc
            self._preferred = index
            return reply
        raise StateError(Atom("noconnection"), f"no BEAM node answered: {last!r}") from last


class CausalSession:
    """Causal calls (`consistency: :causal`) that carry one session token from call to call.

    `token` is the session's vector clock as the BEAM side returns it (a dict of node Atom to
    (physical_ms, logical)); hand it to `State.session(token)` of another client to continue
    the session elsewhere.
    """

    def __init__(self, state: State, token: dict[Any, Any] | None = None) -> None:
        self.state = state
        self.token: dict[Any, Any] = dict(token or {})

    async def put(self, key: Any, value: Any) -> Any:
        """Writes `value` under `key` after everything the session saw; returns the version."""
        _check_encodable(key, value)
        return self._advance(await self._call("put", [key, value]))

    async def delete(self, key: Any) -> Any:
        """Deletes `key` after everything the session saw; returns the version."""
        _check_encodable(key)
        return self._advance(await self._call("delete", [key]))

    async def get(self, key: Any) -> Entry | None:
        """Reads `key` once the BEAM node's replica has seen the session's past (None: absent)."""
        _check_encodable(key)
        reply = await self._call("get", [key])
        if isinstance(reply, tuple) and len(reply) == 4 and reply[0] == OK:
            self.token = reply[3]
            return Entry(reply[1], reply[2])
        if isinstance(reply, tuple) and len(reply) == 3 and reply[:2] == (ERROR, Atom("not_found")):
            self.token = reply[2]
            return None
        raise _error(reply)

    async def _call(self, fun: str, args: list[Any]) -> Any:
        return await self.state._call(fun, args, "causal", [(Atom("session"), self.token)])

    def _advance(self, reply: Any) -> Any:
        if isinstance(reply, tuple) and len(reply) == 3 and reply[0] == OK:
            self.token = reply[2]
            return reply[1]
        raise _error(reply)


def _check_encodable(*terms: Any) -> None:
    for term in terms:
        try:
            encode(term)
        except (ValueError, TypeError, OverflowError) as exc:
            raise StateValueError(
                Atom("badarg"), f"not encodable as an Erlang term: {exc}"
            ) from None


def _is_undef(reason: Any) -> bool:
    return reason == Atom("undef") or (isinstance(reason, tuple) and reason[:1] == (Atom("undef"),))


def _version(reply: Any) -> Any:
    if isinstance(reply, tuple) and len(reply) == 2 and reply[0] == OK:
        return reply[1]
    if isinstance(reply, tuple) and len(reply) == 3 and reply[0] == OK:  # causal: + session token
        return reply[1], reply[2]
    raise _error(reply)


def _error(reply: Any) -> StateError:
    reason = (
        reply[1] if isinstance(reply, tuple) and len(reply) == 2 and reply[0] == ERROR else reply
    )
    if reason == Atom("no_quorum"):
        return NoQuorum(reason)
    if reason == Atom("timeout"):
        return StateTimeout(reason)
    if isinstance(reason, tuple) and reason[:1] == (Atom("version_mismatch"),):
        current = reason[1]
        return VersionMismatch(reason, None if current == NONE else current)
    if isinstance(reason, tuple) and reason[:1] == (Atom("value_too_large"),):
        return ValueTooLarge(reason, f"value of {reason[1]} bytes over max_value_bytes {reason[2]}")
    return StateError(reason)
