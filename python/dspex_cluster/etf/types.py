"""Python types for the Erlang terms that have no natural Python counterpart.

All of them are immutable and hashable (`ImproperList` and `FrozenTerm` are hashable as long as the
terms they hold are, see their docstrings), so they can be dict keys and set members.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final


class ETFError(ValueError):
    """Bytes that are not a valid (or allowed) external term, or a value that cannot be encoded."""


class Atom(str):
    """An Erlang atom. A `str` subclass, so it works wherever a string does; repr `Atom('ok')`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Atom({str.__repr__(self)})"


@dataclass(frozen=True, slots=True)
class Pid:
    """A process identifier (NEW_PID_EXT): node name, id, serial and creation, each 32 bits."""

    node: Atom
    id: int
    serial: int
    creation: int

    def __repr__(self) -> str:
        return f"#Pid<{self.node}.{self.id}.{self.serial}>"


@dataclass(frozen=True, slots=True)
class Reference:
    """A reference (NEWER_REFERENCE_EXT): node, creation and 1..5 32-bit words (OTP sends 3..5)."""

    node: Atom
    creation: int
    ids: tuple[int, ...]

    def __repr__(self) -> str:
        return f"#Ref<{self.node}.{'.'.join(str(i) for i in reversed(self.ids))}>"


@dataclass(frozen=True, slots=True)
class Port:
    """A port identifier. `v4` records that it came as V4_PORT_EXT (64-bit id) so that re-encoding
    is byte-exact; it does not take part in equality. Ids above 32 bits always encode as
    V4_PORT_EXT.
    """

    node: Atom
    id: int
    creation: int
    v4: bool = field(default=False, compare=False)

    def __repr__(self) -> str:
        return f"#Port<{self.node}.{self.id}>"


@dataclass(frozen=True, slots=True)
class ExportFun:
    """An external fun `fun Module:Function/Arity` (EXPORT_EXT)."""

    module: Atom
    function: Atom
    arity: int

    def __repr__(self) -> str:
        return f"fun {self.module}:{self.function}/{self.arity}"


@dataclass(frozen=True, slots=True)
class Fun:
    """A local fun (NEW_FUN_EXT), kept opaque: `raw` is its exact encoding (from the 112 tag on) and
    is what `encode` writes back. The parsed fields are for inspection only; equality and hash use
    `raw` alone. Python code cannot call it; it can only hold it and send it back.
    """

    raw: bytes
    module: Atom = field(compare=False)
    arity: int = field(compare=False)
    index: int = field(compare=False)
    uniq: bytes = field(compare=False)
    old_index: int = field(compare=False)
    old_uniq: int = field(compare=False)
    pid: Pid = field(compare=False)
    free_vars: tuple[Any, ...] = field(compare=False)

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"#Fun<{self.module}.{self.old_index}.{self.old_uniq}>"


@dataclass(frozen=True, slots=True)
class BitString:
    """A bitstring whose length is not a multiple of 8 (BIT_BINARY_EXT): `bits` (1..8) of the last
    byte of `data` are used, taken from its high end; term_to_binary writes the unused bits as zero.
    """

    data: bytes
    bits: int

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes) or not self.data:
            raise ValueError("BitString data must be non-empty bytes")
        if type(self.bits) is not int or not 1 <= self.bits <= 8:
            raise ValueError(f"BitString bits must be 1..8, got {self.bits!r}")

    @property
    def bit_size(self) -> int:
        """The number of bits: 8 * (len(data) - 1) + bits (bits of the last byte used)."""
        return (len(self.data) - 1) * 8 + self.bits


class ImproperList:
    """A list whose tail is not `[]`: `[a, b | tail]` is `ImproperList([a, b], tail)`.

    `items` is non-empty and `tail` is not a list (a list tail would make it a longer list).
    Hashable when its items and tail are.
    """

    __slots__ = ("items", "tail")
    items: list[Any]
    tail: Any

    def __init__(self, items: list[Any], tail: Any) -> None:
        if not isinstance(items, list) or not items:
            raise ValueError("ImproperList items must be a non-empty list")
        if isinstance(tail, (list, ImproperList)):
            raise ValueError("ImproperList tail must not be a list")
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "tail", tail)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ImproperList is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImproperList):
            return NotImplemented
        return self.items == other.items and self.tail == other.tail

    def __hash__(self) -> int:
        return hash((ImproperList, tuple(self.items), self.tail))

    def __repr__(self) -> str:
        return f"ImproperList({self.items!r}, {self.tail!r})"


def _freeze(term: Any) -> Any:
    """A hashable value that is equal for two terms exactly when they are the same Erlang term
    (type-strict: 1, 1.0 and true differ, as they do as Erlang map keys)."""
    kind = type(term)
    if kind is list:
        return ("l", tuple(_freeze(x) for x in term))
    if kind is tuple:
        return ("t", tuple(_freeze(x) for x in term))
    if kind is dict:
        return ("m", frozenset((_freeze(k), _freeze(v)) for k, v in term.items()))
    if kind is FrozenTerm:
        return term._frozen
    if kind is ImproperList:
        return ("i", tuple(_freeze(x) for x in term.items), _freeze(term.tail))
    if kind is float:
        # -0.0 and 0.0 are different map keys since OTP 27: keep the sign
        return ("f", math.copysign(1.0, term), term)
    if kind is str:  # Python str encodes as a binary
        return ("b", term.encode())
    if kind is bytearray:
        return ("b", bytes(term))
    if kind is bytes:
        return ("b", term)
    if term is None:
        return ("a", "nil")
    if kind is bool:
        return ("a", "true" if term else "false")
    if kind is Atom:
        return ("a", str(term))
    return (kind.__name__, term)


class FrozenTerm:
    """A map key that Python cannot hash as decoded (a list, a map, a tuple holding one...) or that
    would collide with another key of the same map under Python's equality (`1`, `1.0` and `true`
    are three different Erlang keys but equal in Python). `term` is the key as decoded; `encode`
    writes it unchanged. Two FrozenTerms are equal when they hold the same Erlang term. Do not
    mutate `term`: its hash is computed once.
    """

    __slots__ = ("term", "_frozen", "_hash")
    term: Any

    def __init__(self, term: Any) -> None:
        frozen = _freeze(term)
        object.__setattr__(self, "term", term)
        object.__setattr__(self, "_frozen", frozen)
        object.__setattr__(self, "_hash", hash(frozen))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("FrozenTerm is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FrozenTerm):
            return NotImplemented
        return self._frozen == other._frozen

    def __hash__(self) -> int:
        return self._hash  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"FrozenTerm({self.term!r})"


def same_term(a: Any, b: Any) -> bool:
    """True when `a` and `b` are the same Erlang term (type-strict, unlike Python's ==)."""
    return _freeze(a) == _freeze(b)


# Both decoders recurse once per nesting level; this bounds the C stack they may use.
MAX_DEPTH_CEILING: Final = 2_000


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds that keep hostile input from exhausting memory, stack or time.

    max_depth: container nesting (tuples, lists, maps, funs' free variables); 1000 by default,
        far beyond real messages and safe for both decoders' stacks.
    max_elements: total of all container lengths in one term (list/tuple items, 2 per map pair,
        charlist characters); 16 Mi by default. Every declared length is also checked against the
        bytes that remain before anything is allocated.
    max_uncompressed_size: the largest inflated size a compressed term (131, 80) may declare;
        64 MiB by default, so a zip bomb fails before it is inflated.
    max_atom_chars: characters in an atom; 255 is Erlang's own limit.
    max_huge_int_keys: map keys (in the whole term) that hold an integer of magnitude
        >= 2**61 - 1. Python hashes ints modulo 2**61 - 1, so a peer could send thousands of
        keys sharing one hash and make dict insertion quadratic; 4096 such keys cost at most
        about 0.2 s. Smaller integers, and all other keys, are unaffected.
    max_expansion, expansion_allowance: the Python objects one input (a term, or a distribution
        frame with its two terms) decodes to may take at most max_expansion (16) bytes per input
        byte plus expansion_allowance (16 MiB), as estimated by a fixed cost per object charged
        before it is built (pure.COST_*; the inflated bytes of a compressed term count too).
        Atoms and other shared objects cost only the slot that holds them.
    Maps are also refused, whatever the limits, when their keys collide in Python's hash so that
        building the dict would take more than 32 probes per key (see pure._check_probe_work).
    max_depth may not exceed MAX_DEPTH_CEILING (2,000: about 0.7 MB of C stack).
    """

    max_depth: int = 1000
    max_elements: int = 16 * 1024 * 1024
    max_uncompressed_size: int = 64 * 1024 * 1024
    max_atom_chars: int = 255
    max_huge_int_keys: int = 4096
    max_expansion: int = 16
    expansion_allowance: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in (
            "max_depth",
            "max_elements",
            "max_uncompressed_size",
            "max_atom_chars",
            "max_huge_int_keys",
            "max_expansion",
            "expansion_allowance",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"DecodeLimits.{name} must be a non-negative int, got {value!r}")
        if not 1 <= self.max_depth <= MAX_DEPTH_CEILING:
            raise ValueError(f"DecodeLimits.max_depth must be 1..{MAX_DEPTH_CEILING}")


DEFAULT_LIMITS: Final = DecodeLimits()


class _NoMessage:
    """The `message` of a distribution frame that carries only a control term."""

    __slots__ = ()
    _instance: _NoMessage | None = None

    def __new__(cls) -> _NoMessage:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_MESSAGE"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "NO_MESSAGE"


NO_MESSAGE: Final = _NoMessage()
