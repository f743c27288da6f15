"""Jepsen-style histories and checkers for the strong state (test infrastructure).

A `History` records every operation's invocation and completion — `ok`, `fail` (it did certainly
not take effect) or `unknown` (it may have, e.g. after a timeout or no_quorum) — with monotonic
timestamps. Two checkers:

* `check_register(ops)`: linearizability of one key used as a register with put/get/cas/delete,
  by Wing & Gong's search with Lowe's memoisation (as Knossos and Porcupine do). An `unknown`
  operation may take effect at any point after its invocation, or never. Versions are checked
  whenever they are known (a version an unknown write produced is learnt from a later read).
* `check_counter(...)`: a counter incremented by read + cas: no acknowledged increment lost,
  none applied twice.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

ABSENT = ("<absent>",)
UNKNOWN = ("<unknown version>",)


@dataclass
class Op:
    """One operation: `f` is put/get/cas/delete; `args` its arguments; `result` ok/fail/unknown;
    `out` what came back (ok: version, or (value, version) for get; fail: the reason)."""

    process: int
    f: str
    args: tuple[Any, ...]
    invoke: float
    complete: float = float("inf")
    result: str = "unknown"
    out: Any = None
    id: int = field(default=0)


class History:
    """A thread-safe record of operations (the clients may be threads or asyncio tasks)."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._lock = threading.Lock()
        self._ids = itertools.count()

    def invoke(self, process: int, f: str, *args: Any) -> Op:
        op = Op(process, f, args, time.monotonic(), id=next(self._ids))
        with self._lock:
            self.ops.append(op)
        return op

    @staticmethod
    def complete(op: Op, result: str, out: Any = None) -> None:
        assert result in ("ok", "fail", "unknown")
        op.result, op.out = result, out
        # an unknown outcome stays open: it may take effect any time later
        op.complete = time.monotonic() if result != "unknown" else float("inf")

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for op in self.ops:
            out[op.result] = out.get(op.result, 0) + 1
        return out


# -- the register model ------------------------------------------------------------------------

State = tuple[Any, Any]  # (value or ABSENT, version or UNKNOWN or None)


def _version_is(state: State, expected: Any) -> bool | None:
    """Whether the state's version equals `expected` (None: absent); None when unknown."""
    value, version = state
    if expected is None:
        return value is ABSENT
    if value is ABSENT:
        return False
    if version is UNKNOWN:
        return None
    return version == expected


def step(state: State, op: Op) -> list[State]:
    """The states `op` may lead to from `state` (empty: it cannot be linearized here)."""
    value, version = state
    if op.f == "get":
        if op.result == "unknown" or op.result == "fail" and op.out != "not_found":
            return [state]
        if op.result == "fail":  # not_found
            return [state] if value is ABSENT else []
        got, got_version = op.out
        if value is ABSENT or value != got or version not in (UNKNOWN, got_version):
            return []
        return [(got, got_version)]
    if op.f == "put":
        if op.result == "ok":
            return [(op.args[0], op.out)]
        return [state, (op.args[0], UNKNOWN)] if op.result == "unknown" else [state]
    if op.f == "delete":
        if op.result == "ok":
            return [(ABSENT, None)]
        return [state, (ABSENT, None)] if op.result == "unknown" else [state]
    if op.f == "cas":
        expected, new = op.args
        match = _version_is(state, expected)
        if op.result == "ok":
            return [(new, op.out)] if match in (True, None) else []
        if op.result == "fail":
            current = op.out  # the version the server reported (None: absent)
            if match is True:
                return []
            if current is None:
                return [state] if value is ABSENT else []
            if value is ABSENT or version not in (UNKNOWN, current):
                return []
            return [(value, current)]
        return [state, (new, UNKNOWN)] if match in (True, None) else [state]
    raise ValueError(f"unknown operation {op.f}")


def check_register(ops: list[Op], initial: State = (ABSENT, None)) -> bool:
    """Whether `ops` (one key's history) is linearizable for a versioned register."""
    # events (time, kind, op index); at equal times calls come first (the ops then overlap)
    events = sorted(
        [(op.invoke, 0, i) for i, op in enumerate(ops)]
        + [(op.complete, 1, i) for i, op in enumerate(ops)]
    )
    m = len(events)
    head = m  # sentinel of a doubly linked list over the events
    nxt: list[int | None] = [p + 1 if p + 1 < m else None for p in range(m)] + [0 if m else None]
    prv: list[int] = [p - 1 if p > 0 else head for p in range(m)] + [head]
    call_of = {i: p for p, (_, kind, i) in enumerate(events) if kind == 0}
    ret_of = {i: p for p, (_, kind, i) in enumerate(events) if kind == 1}

    def unlink(p: int) -> None:
        q = nxt[p]
        nxt[prv[p]] = q
        if q is not None:
            prv[q] = prv[p]

    def relink(p: int) -> None:
        nxt[prv[p]] = p
        q = nxt[p]
        if q is not None:
            prv[q] = p

    state = initial
    linearized = 0
    cache: set[tuple[int, State]] = set()
    stack: list[tuple[int, State, int]] = []  # (op, state before it, candidate taken)
    entry = nxt[head]
    first_candidate = 0
    while nxt[head] is not None:
        assert entry is not None  # a return event always comes before the list's end
        _, kind, i = events[entry]
        if kind == 1:  # an op returned before being linearized: undo the last choice
            if not stack:
                return False
            i, state, k = stack.pop()
            linearized &= ~(1 << i)
            relink(ret_of[i])
            relink(call_of[i])
            entry, first_candidate = call_of[i], k + 1
            continue
        candidates = step(state, ops[i])
        for k in range(first_candidate, len(candidates)):
            key = (linearized | (1 << i), candidates[k])
            if key not in cache:
                cache.add(key)
                stack.append((i, state, k))
                state, linearized = candidates[k], linearized | (1 << i)
                unlink(call_of[i])
                unlink(ret_of[i])
                entry = nxt[head]
                break
        else:
            entry = nxt[entry]
        first_candidate = 0
    return True


def check_counter(final: int, acked: list[int], unknown: int, initial: int = 0) -> tuple[bool, str]:
    """A counter incremented by cas(v, n + 1): `acked` are the new values of the increments
    acknowledged ok, `unknown` how many ended unknown; `final` the value read at the end."""
    if len(set(acked)) != len(acked):
        return False, "two acknowledged increments wrote the same value (one was lost)"
    if final < initial + len(acked):
        return False, f"final {final} < {initial} + {len(acked)} acknowledged: an increment lost"
    if final > initial + len(acked) + unknown:
        return False, f"final {final} > acknowledged + unknown: an increment applied twice"
    return True, "ok"
