"""Signals: CloudEvents 1.0 attributes plus the `priority` and `scope` extensions.

On the wire a signal is the Erlang map `DSPEx.Clustering.Signal` builds (atom keys):

    %{specversion: "1.0", id: "…", source: "dspex://py1@127.0.0.1/health_monitor",
      type: "cluster.health.anomaly", subject: "a@127.0.0.1", time: "2026-…Z",
      datacontenttype: "application/x-erlang-term", data: %{…}, priority: :high, scope: :cluster}

`specversion`, `id`, `source`, `type`, `subject`, `time`, `datacontenttype` are binaries (the
optional ones may be nil or absent), `priority` and `scope` atoms, `data` any term; other atom
keys are CloudEvents extensions. `Signal.to_term()` gives that map and `Signal.from_term(map)`
reads it back; both are lossless (absent optional attributes stay absent, nil stays nil,
extensions and `data` are kept as the terms they are).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from dspex_cluster.etf import Atom

SPECVERSION = "1.0"
CONTENT_TYPE = "application/x-erlang-term"
PRIORITIES = ("low", "normal", "medium", "high")
SCOPES = ("local", "cluster")
CORE = ("specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data")
OPTIONAL = ("subject", "time", "datacontenttype", "data")
_TYPE_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
_EXTENSION_RE = re.compile(r"^[a-z0-9]{1,20}$")
_SEGMENT_RE = re.compile(r"^([a-z0-9_]+|\*|\*\*)$")


class InvalidSignal(ValueError):
    """A signal attribute is wrong: `field` names it, the message says why."""

    def __init__(self, field_name: str, why: str) -> None:
        super().__init__(f"signal {field_name} {why}")
        self.field = field_name
        self.why = why


def now_rfc3339() -> str:
    """UTC now as Elixir's DateTime.to_iso8601 writes it: 2026-11-27T01:00:00.000000Z."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> datetime:
    """An RFC 3339 timestamp as an aware datetime (raises ValueError when it is not one)."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"no UTC offset in {value!r}")
    return parsed


def term_map(**fields: Any) -> dict[Atom, Any]:
    """An atom-keyed Erlang map from keyword arguments (the shape signal data takes)."""
    return {Atom(k): v for k, v in fields.items()}


def valid_pattern(pattern: str) -> bool:
    """A subscription pattern: dotted segments, `*` one segment, `**` any number."""
    return bool(pattern) and all(_SEGMENT_RE.match(s) for s in pattern.split("."))


def pattern_matches(pattern: str, type_: str) -> bool:
    """The SignalBus rule: `*` matches one segment, `**` zero or more."""
    return pattern == type_ or _match(pattern.split("."), type_.split("."))


def _match(p: list[str], t: list[str]) -> bool:
    if not p:
        return not t
    if p[0] == "**":
        return len(p) == 1 or any(_match(p[1:], t[i:]) for i in range(len(t) + 1))
    if not t:
        return False
    return (p[0] == "*" or p[0] == t[0]) and _match(p[1:], t[1:])


@dataclass(frozen=True)
class Signal:
    """One signal. Build it with `Signal.new` or a constructor below; `validate()` checks it."""

    type: str
    source: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    specversion: str = SPECVERSION
    subject: str | None = None
    time: str | None = None
    datacontenttype: str | None = CONTENT_TYPE
    data: Any = None
    priority: str = "normal"
    scope: str = "cluster"
    extensions: Mapping[str, Any] = field(default_factory=dict)
    # optional core attributes absent from the map (as opposed to present and nil)
    absent: frozenset[str] = frozenset()

    @classmethod
    def new(
        cls,
        type: str,
        data: Any = None,
        *,
        source: str = "dspex",
        node: str | None = None,
        subject: str | None = None,
        priority: str = "normal",
        scope: str = "cluster",
        id: str | None = None,
        time: str | None = None,
        datacontenttype: str = CONTENT_TYPE,
        extensions: Mapping[str, Any] | None = None,
    ) -> Signal:
        """A validated signal; `source` is a URI or a component name made into
        `dspex://<node>/<name>` (as the Elixir `Signal.new/3` does)."""
        if not source.startswith("dspex://"):
            source = f"dspex://{node or 'python'}/{source}"
        signal = cls(
            type=type,
            source=source,
            id=id or str(uuid.uuid4()),
            subject=subject,
            time=time or now_rfc3339(),
            datacontenttype=datacontenttype,
            data=data,
            priority=priority,
            scope=scope,
            extensions=dict(extensions or {}),
        )
        return signal.validate()

    def validate(self) -> Signal:
        """Self, when every attribute is valid; else raises InvalidSignal (first problem)."""
        if self.specversion != SPECVERSION:
            raise InvalidSignal("specversion", f'must be "1.0", got {self.specversion!r}')
        for name in ("id", "source"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidSignal(name, f"must be a non-empty string, got {value!r}")
        if not isinstance(self.type, str) or not _TYPE_RE.match(self.type):
            raise InvalidSignal(
                "type",
                f'must be a dotted lower-case name such as "cluster.node.up", got {self.type!r}',
            )
        for name in ("subject", "datacontenttype", "time"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InvalidSignal(name, f"must be a string or nil, got {value!r}")
        if self.time is not None:
            try:
                parse_time(self.time)
            except ValueError:
                raise InvalidSignal(
                    "time", f"must be an RFC 3339 timestamp, got {self.time!r}"
                ) from None
        if self.priority not in PRIORITIES:
            raise InvalidSignal("priority", f"must be one of {PRIORITIES}, got {self.priority!r}")
        if self.scope not in SCOPES:
            raise InvalidSignal("scope", f"must be one of {SCOPES}, got {self.scope!r}")
        for key in self.extensions:
            if key in CORE or key in ("priority", "scope") or not _EXTENSION_RE.match(str(key)):
                raise InvalidSignal(
                    "extensions",
                    f"attribute names must be lower-case alphanumeric, got {key!r}",
                )
        unknown = self.absent - set(OPTIONAL)
        if unknown:
            raise InvalidSignal("absent", f"only optional attributes may be absent: {unknown}")
        return self

    # -- wire form -----------------------------------------------------------------------------

    def to_term(self) -> dict[Atom, Any]:
        """The Erlang map (atom keys; binaries as str, priority/scope as atoms)."""
        self.validate()
        term: dict[Atom, Any] = {}
        for name in CORE:
            if name not in self.absent:
                term[Atom(name)] = getattr(self, name)
        term[Atom("priority")] = Atom(self.priority)
        term[Atom("scope")] = Atom(self.scope)
        for key, value in self.extensions.items():
            term[Atom(key)] = value
        return term

    @classmethod
    def from_term(cls, term: Any) -> Signal:
        """Reads the map a BEAM node sends; raises InvalidSignal when it is not a signal."""
        if not isinstance(term, Mapping):
            raise InvalidSignal("signal", f"must be a map, got {type(term).__name__}")
        values: dict[str, Any] = {}
        extensions: dict[str, Any] = {}
        for key, value in term.items():
            if key is True or key is False or key is None:  # the atoms true, false, nil
                name = {True: "true", False: "false", None: "nil"}[key]
            elif isinstance(key, Atom):
                name = str(key)
            else:
                raise InvalidSignal("extensions", f"attribute names must be atoms, got {key!r}")
            if name in CORE or name in ("priority", "scope"):
                values[name] = value
            else:
                extensions[name] = value
        for name in ("specversion", "id", "source", "type", "priority", "scope"):
            if name not in values:
                raise InvalidSignal(name, "is missing")
        for name in ("specversion", "id", "source", "type", "subject", "time", "datacontenttype"):
            if isinstance(values.get(name), bytes):
                try:
                    values[name] = values[name].decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidSignal(name, "must be UTF-8 text") from None
        for name in ("priority", "scope"):
            if not isinstance(values[name], Atom):
                raise InvalidSignal(name, f"must be an atom, got {values[name]!r}")
            values[name] = str(values[name])
        absent = frozenset(n for n in OPTIONAL if n not in values)
        return cls(**values, extensions=extensions, absent=absent).validate()

    # -- conveniences --------------------------------------------------------------------------

    def with_data(self, data: Any) -> Signal:
        """A copy of this signal carrying `data`."""
        return replace(self, data=data, absent=self.absent - {"data"})

    def get(self, key: str, default: Any = None) -> Any:
        """`data[key]` when data is a map (atom or binary key), else `default`."""
        data = self.data
        if isinstance(data, Mapping):
            if key in data:
                return data[key]
            return data.get(key.encode(), default)
        return default

    def age_s(self, now: datetime | None = None) -> float | None:
        """Seconds since `time` (None without a time)."""
        if self.time is None:
            return None
        return ((now or datetime.now(UTC)) - parse_time(self.time)).total_seconds()


# -- constructors for the signal types Python agents publish ---------------------------------


def _node_signal(
    type_: str, node: str, data: dict[Atom, Any], priority: str, source: str, origin: str
) -> Signal:
    return Signal.new(type_, data, source=source, node=origin, subject=str(node), priority=priority)


def health_data(vitals: Mapping[str, Any], *, node: str, source: str = "host_sensor") -> Signal:
    """`cluster.health.data`: a node's vitals (`node` is the node they describe)."""
    data = {Atom(k): v for k, v in vitals.items()}
    data.setdefault(Atom("node"), Atom(node))
    return _node_signal("cluster.health.data", node, data, "low", source, node)


def health_anomaly(
    node: str,
    score: float,
    features: Mapping[str, float],
    *,
    origin: str,
    threshold: float,
    values: Mapping[str, float] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Signal:
    """`cluster.health.anomaly`: `score` in [0, 1] and each feature's share of the evidence."""
    data = term_map(
        node=Atom(node),
        score=float(score),
        threshold=float(threshold),
        features={Atom(k): float(v) for k, v in features.items()},
        values={Atom(k): float(v) for k, v in (values or {}).items()},
    )
    data.update({Atom(k): v for k, v in (extra or {}).items()})
    priority = "high" if score >= threshold else "medium"
    return _node_signal("cluster.health.anomaly", node, data, priority, "health_monitor", origin)


def health_alert(
    node: str, severity: str, message: str, *, origin: str, extra: Mapping[str, Any] | None = None
) -> Signal:
    """`cluster.health.alert`: as the Elixir constructor (`node`, `severity`, `message`)."""
    data = term_map(node=Atom(node), severity=Atom(severity), message=message)
    data.update({Atom(k): v for k, v in (extra or {}).items()})
    return _node_signal("cluster.health.alert", node, data, "high", "health_monitor", origin)


def failure_predicted(
    node: str,
    probability: float,
    time_to_failure_s: float | None,
    confidence: float,
    *,
    origin: str,
    horizon_s: float,
    reasons: Mapping[str, float] | None = None,
) -> Signal:
    """`cluster.failure.predicted`: P(failure within `horizon_s`), expected time, confidence."""
    data = term_map(
        node=Atom(node),
        probability=float(probability),
        horizon_s=float(horizon_s),
        time_to_failure_s=None if time_to_failure_s is None else float(time_to_failure_s),
        confidence=float(confidence),
        reasons={Atom(k): float(v) for k, v in (reasons or {}).items()},
    )
    priority = "high" if probability >= 0.5 else "medium"
    return _node_signal(
        "cluster.failure.predicted", node, data, priority, "failure_predictor", origin
    )


def rebalance_request(
    nodes: list[str], reason: Any, plan: list[Mapping[str, Any]], *, origin: str
) -> Signal:
    """`cluster.rebalance.request`: `nodes` to move work off, with a plan of moves."""
    data = term_map(
        nodes=[Atom(n) for n in nodes],
        reason=reason,
        plan=[{Atom(k): v for k, v in step.items()} for step in plan],
    )
    return Signal.new(
        "cluster.rebalance.request", data, source="load_balancer", node=origin, priority="medium"
    )


def performance_report(report: Mapping[str, Any], *, origin: str) -> Signal:
    """`cluster.performance.report`: the performance agent's periodic summary."""
    return Signal.new(
        "cluster.performance.report",
        {Atom(k): v for k, v in report.items()},
        source="performance",
        node=origin,
        priority="low",
    )
