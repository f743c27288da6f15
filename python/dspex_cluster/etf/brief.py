"""Bounded text for terms and exceptions that carry peer data, for log lines and error messages.

`repr` of a decoded term can be as large as the frame it came from (a 50 MB binary, a million-item
list) or even raise (an integer over 4,300 digits). `brief` never builds more than about `limit`
characters, whatever it is given, and never raises.
"""

from __future__ import annotations

from typing import Any

from .types import Atom, BitString, FrozenTerm, ImproperList

__all__ = ["LOG_LIMIT", "brief", "brief_exception", "clip"]

LOG_LIMIT = 300  # characters of peer data in one log line
_MAX_DEPTH = 6


def brief(value: Any, limit: int = LOG_LIMIT) -> str:
    """A repr-like text of `value`, at most `limit` characters (`...` marks what was left out)."""
    out: list[str] = []
    try:
        _emit(value, out, [max(limit, 8)], 0)
    except Exception as exc:  # a hostile __repr__ or a broken object
        out.append(f"<unprintable {type(value).__name__}: {type(exc).__name__}>")
    text = "".join(out)
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def brief_exception(exc: BaseException, limit: int = LOG_LIMIT) -> str:
    """`Class(args)` of an exception, arguments bounded (a KeyError's repr holds its key)."""
    args = getattr(exc, "args", ())
    if len(args) == 1 and isinstance(args[0], str):
        inner = brief(args[0], limit)
    else:
        inner = brief(tuple(args), limit)[1:-1].rstrip(",")
    return f"{type(exc).__name__}({inner})"[: limit + 40]


def _emit(value: Any, out: list[str], budget: list[int], depth: int) -> None:
    if budget[0] <= 0:
        out.append("...")
        return
    kind = type(value)
    if kind is bool or value is None or kind is float:
        text = repr(value)
    elif isinstance(value, int):
        bits = value.bit_length()
        text = (
            repr(int(value)) if bits <= 256 else f"<{'-' if value < 0 else ''}int of {bits} bits>"
        )
    elif isinstance(value, Atom):
        text = _cut_str(str(value), budget[0], "Atom(", ")")
    elif isinstance(value, str):
        text = _cut_str(value, budget[0], "", "")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value[: budget[0]])
        text = repr(raw)
        if len(raw) < len(value):
            text += f"...<{len(value)} bytes>"
    elif isinstance(value, BitString):
        text = "BitString("
        _put(out, budget, text)
        _emit(getattr(value, "data", None), out, budget, depth + 1)
        _put(out, budget, f", {getattr(value, 'bits', None)!r:.20})")
        return
    elif isinstance(value, (tuple, list)):
        opener, closer = ("(", ")") if isinstance(value, tuple) else ("[", "]")
        _seq(value, opener, closer, out, budget, depth)
        return
    elif isinstance(value, dict):
        _put(out, budget, "{")
        for i, (k, v) in enumerate(value.items()):
            if budget[0] <= 0 or depth >= _MAX_DEPTH:
                _put(out, budget, f"...<{len(value) - i} more>")
                break
            if i:
                _put(out, budget, ", ")
            _emit(k, out, budget, depth + 1)
            _put(out, budget, ": ")
            _emit(v, out, budget, depth + 1)
        _put(out, budget, "}")
        return
    elif isinstance(value, ImproperList):
        _put(out, budget, "ImproperList(")
        _emit(getattr(value, "items", None), out, budget, depth + 1)
        _put(out, budget, ", ")
        _emit(getattr(value, "tail", None), out, budget, depth + 1)
        _put(out, budget, ")")
        return
    elif isinstance(value, FrozenTerm):
        _emit(getattr(value, "term", None), out, budget, depth)
        return
    elif isinstance(value, BaseException):
        text = brief_exception(value, budget[0])
    elif kind.__module__ == "dspex_cluster.etf.types":
        text = repr(value)[: budget[0] + 3]  # Pid, Reference, Port, funs: small fields
    else:
        text = f"<{kind.__name__}>"
    _put(out, budget, text)


def _seq(
    value: Any, opener: str, closer: str, out: list[str], budget: list[int], depth: int
) -> None:
    _put(out, budget, opener)
    n = len(value)
    for i in range(n):
        if budget[0] <= 0 or depth >= _MAX_DEPTH:
            _put(out, budget, f"...<{n - i} more>")
            break
        if i:
            _put(out, budget, ", ")
        _emit(value[i], out, budget, depth + 1)
    if n == 1 and opener == "(":
        _put(out, budget, ",")
    _put(out, budget, closer)


def _cut_str(text: str, room: int, prefix: str, suffix: str) -> str:
    if len(text) <= room:
        return f"{prefix}{text!r}{suffix}"
    return f"{prefix}{text[:room]!r}...<{len(text)} chars>{suffix}"


def _put(out: list[str], budget: list[int], text: str) -> None:
    out.append(text)
    budget[0] -= len(text)


def clip(text: str, limit: int = LOG_LIMIT) -> str:
    """Plain text cut to `limit` characters (for messages that already are text)."""
    return text if len(text) <= limit else text[:limit] + f"...<{len(text)} chars>"
