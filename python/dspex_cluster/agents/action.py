"""Actions: named units of work with validated parameters (the twin of `DSPEx.Clustering.Action`).

    place = Action(
        "place",
        run=lambda agent, spec, work: ...,
        schema={"spec": Param("any", required=True), "work": Param("number", default=1.0)},
    )
    params = place.validate({Atom("spec"): ..., "work": 2})   # keys: atoms or strings
    result = await place.execute(agent, params)

Parameter types: `any atom string binary integer number boolean map list node pid`. `string`
accepts an Elixir binary (bytes, UTF-8) or a str and gives a str. Unknown keys are dropped, as on
the BEAM side. Problems raise `ActionError(field, why)`; its `term()` is the BEAM error shape
`{:invalid_params, field, why}`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dspex_cluster.etf import Atom, Pid

_REQUIRED = object()
TYPES = ("any", "atom", "string", "binary", "integer", "number", "boolean", "map", "list", "node")
TYPES += ("pid",)


class ActionError(ValueError):
    """Invalid parameters (or an unknown action): `field` and a readable `why`."""

    def __init__(self, field: str, why: str, kind: str = "invalid_params") -> None:
        super().__init__(f"{field} {why}")
        self.field = field
        self.why = why
        self.kind = kind

    def term(self) -> tuple[Atom, Any, str]:
        """The Erlang term for the error: {invalid_params, [{Param, Why}]} or the error kind."""
        return (Atom(self.kind), Atom(self.field), self.why)


@dataclass(frozen=True)
class Param:
    """One parameter: its type, whether it is required, its default, its allowed values."""

    type: str = "any"
    required: bool = False
    default: Any = _REQUIRED
    choices: tuple[Any, ...] | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"unknown parameter type {self.type!r}; known: {', '.join(TYPES)}")

    def check(self, name: str, value: Any) -> Any:
        """The value, converted where the type says so; raises ActionError."""
        ok, value = _coerce(self.type, value)
        if not ok:
            raise ActionError(name, f"must be of type {self.type}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ActionError(name, f"must be one of {list(self.choices)!r}, got {value!r}")
        return value


def _coerce(kind: str, v: Any) -> tuple[bool, Any]:
    if kind == "any":
        return True, v
    if kind == "atom":
        return isinstance(v, Atom) or v is None or isinstance(v, bool), v
    if kind == "node":
        return isinstance(v, Atom) and "@" in v, v
    if kind == "string":
        if isinstance(v, bytes):
            try:
                return True, v.decode("utf-8")
            except UnicodeDecodeError:
                return False, v
        return isinstance(v, str) and not isinstance(v, Atom), v
    if kind == "binary":
        return isinstance(v, bytes | bytearray) or (
            isinstance(v, str) and not isinstance(v, Atom)
        ), v
    if kind == "integer":
        return isinstance(v, int) and not isinstance(v, bool), v
    if kind == "number":
        return isinstance(v, int | float) and not isinstance(v, bool), v
    if kind == "boolean":
        return isinstance(v, bool), v
    if kind == "map":
        return isinstance(v, Mapping), v
    if kind == "list":
        return isinstance(v, list), v
    return isinstance(v, Pid), v  # pid


def params_mapping(params: Any) -> dict[str, Any]:
    """A map or a keyword list (list of {atom, value}) as a str-keyed dict."""
    if isinstance(params, Mapping):
        items = list(params.items())
    elif isinstance(params, list) and all(isinstance(p, tuple) and len(p) == 2 for p in params):
        items = params
    else:
        raise ActionError("params", f"must be a map or a keyword list, got {params!r}")
    out: dict[str, Any] = {}
    for key, value in items:
        if isinstance(key, bytes):
            key = key.decode("utf-8", "replace")
        out[str(key)] = value
    return out


class Action:
    """A named, validated unit of work. `run(agent, **params)` may be sync or async."""

    def __init__(
        self,
        name: str,
        run: Callable[..., Any],
        schema: Mapping[str, Param] | None = None,
        description: str = "",
    ) -> None:
        self.name = name
        self.run = run
        self.schema = dict(schema or {})
        self.description = description or (run.__doc__ or "").strip()

    def __repr__(self) -> str:
        return f"<Action {self.name}({', '.join(self.schema)})>"

    def validate(self, params: Any) -> dict[str, Any]:
        """The cleaned parameters: defaults filled in, unknown keys dropped."""
        given = params_mapping(params if params is not None else {})
        clean: dict[str, Any] = {}
        for name, spec in self.schema.items():
            if name in given:
                clean[name] = spec.check(name, given[name])
            elif spec.required:
                raise ActionError(name, "is required")
            elif spec.default is not _REQUIRED:
                clean[name] = spec.default
        return clean

    async def execute(self, agent: Any, params: Any) -> Any:
        """Validate, then run; the run's return value is the result."""
        clean = self.validate(params)
        result = self.run(agent, **clean)
        if inspect.isawaitable(result):
            result = await result
        return result


def action(
    name: str | None = None, schema: Mapping[str, Param] | None = None, description: str = ""
) -> Callable[[Callable[..., Any]], Action]:
    """Decorator form: `@action("scores", {"node": Param("node")})` over `def f(agent, node)`."""

    def wrap(fn: Callable[..., Any]) -> Action:
        return Action(name or fn.__name__, fn, schema, description)

    return wrap
