"""Signal <-> the BEAM signal map, through a real BEAM node running the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from beam_app import COOKIE, collected, start_collector
from hypothesis import given, settings
from hypothesis import strategies as st
from otp import ErlNode, beval, unique

from dspex_cluster import Atom, Node
from dspex_cluster.etf import decode, encode
from dspex_cluster.signals import (
    CORE,
    OPTIONAL,
    PRIORITIES,
    SCOPES,
    InvalidSignal,
    Signal,
    pattern_matches,
)


@pytest.fixture
async def py(epmd) -> AsyncIterator[Node]:  # type: ignore[no-untyped-def]
    node = Node(f"{unique('py')}@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


BUILD = (
    "{ok, S} = 'Elixir.DSPEx.Clustering.Signal':new(<<\"cluster.node.suspect\">>, "
    "#{node => 'b@127.0.0.1', phi => 9.5, seq => [1,2,3], text => <<\"é\">>, none => nil, "
    'nested => #{<<"k">> => {1, 2.5, [a]}}}, '
    '[{source, <<"membership">>}, {subject, <<"b@127.0.0.1">>}, {priority, high}, '
    '{extensions, #{traceparent => <<"00-abc">>}}])'
)


async def test_round_trip_through_beam(beam_app: ErlNode, py: Node) -> None:
    """Built in Elixir, decoded in Python, sent back: `==` and `=:=` hold in Elixir."""
    checker = unique("chk")
    original = await beval(
        beam_app,
        f"{BUILD}, register({checker}, spawn(fun() -> receive {{check, T}} -> "
        "receive {get, F} -> F ! {same, T =:= S, T == S} end end end)), S",
    )
    sig = Signal.from_term(original)
    assert sig.type == "cluster.node.suspect" and sig.priority == "high" and sig.scope == "cluster"
    assert sig.subject == "b@127.0.0.1" and sig.source.endswith("/membership")
    assert sig.extensions == {"traceparent": b"00-abc"}
    assert sig.get("phi") == 9.5 and sig.get("node") == Atom("b@127.0.0.1")
    assert sig.absent == frozenset()
    assert await py.connect(beam_app.name)
    py.send((checker, beam_app.name), (Atom("check"), sig.to_term()))
    same = await beval(beam_app, f"{checker} ! {{get, self()}}, receive X -> X after 5000 -> t end")
    assert same == (Atom("same"), True, True)


async def test_python_signal_is_valid_in_elixir_and_published(beam_app: ErlNode, py: Node) -> None:
    sig = Signal.new(
        "cluster.health.anomaly",
        {Atom("node"): Atom("x@h"), Atom("score"): 0.9},
        source="health_monitor",
        node=str(py.name),
        subject="x@h",
        priority="high",
    )
    assert await py.connect(beam_app.name)
    assert (
        await py.rpc(beam_app.name, "Elixir.DSPEx.Clustering.Signal", "validate", [sig.to_term()])
        == "ok"
    )
    name = unique("col")
    await beval(beam_app, "ok")
    start_collector(beam_app, name, "cluster.health.anomaly")
    await asyncio.sleep(0.1)
    got = await py.rpc(beam_app.name, "Elixir.DSPEx.Clustering", "publish", [sig.to_term()])
    assert got == (Atom("ok"), 1)
    received = collected(beam_app, name)
    assert [Signal.from_term(s) for s in received] == [sig]


def test_absent_and_nil_attributes_stay_distinct() -> None:
    term = Signal.new("cluster.load.report", None, source="x").to_term()
    del term[Atom("subject")]  # absent, not nil
    sig = Signal.from_term(term)
    assert sig.absent == {"subject"} and sig.subject is None
    assert Atom("subject") not in sig.to_term()
    term[Atom("subject")] = None
    assert Signal.from_term(term).to_term()[Atom("subject")] is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "Bad Type"}, "type"),
        ({"priority": "urgent"}, "priority"),
        ({"scope": "galaxy"}, "scope"),
        ({"time": "yesterday"}, "time"),
        ({"id": ""}, "id"),
        ({"extensions": {"Bad-Name": 1}}, "extensions"),
    ],
)
def test_validation_names_the_field(change: dict, field: str) -> None:
    base = Signal.new("cluster.node.up", None, source="t")
    with pytest.raises(InvalidSignal) as err:
        Signal(**{**base.__dict__, **change}).validate()
    assert err.value.field == field


def test_from_term_rejects_non_signals() -> None:
    with pytest.raises(InvalidSignal, match="must be a map"):
        Signal.from_term([1, 2])
    term = Signal.new("cluster.node.up", None, source="t").to_term()
    term[Atom("priority")] = b"high"
    with pytest.raises(InvalidSignal, match="priority"):
        Signal.from_term(term)


def test_patterns_follow_the_bus() -> None:
    assert pattern_matches("cluster.node.*", "cluster.node.up")
    assert not pattern_matches("cluster.node.*", "cluster.node.a.b")
    assert pattern_matches("cluster.**", "cluster.load.report")
    assert pattern_matches("**", "x.y")
    assert pattern_matches("cluster.**.report", "cluster.report")


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=8)
_data = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.binary(max_size=8)
    | _names.map(Atom),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(_names.map(Atom), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    type_=st.lists(_names, min_size=2, max_size=4).map(".".join),
    data=_data,
    subject=st.none() | st.text(max_size=10),
    priority=st.sampled_from(PRIORITIES),
    scope=st.sampled_from(SCOPES),
    extensions=st.dictionaries(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=20).filter(
            lambda k: k not in CORE and k not in ("priority", "scope")
        ),
        st.integers(),
        max_size=3,
    ),
    absent=st.sets(st.sampled_from(OPTIONAL)),
)
def test_wire_round_trip_is_byte_exact(
    type_: str,
    data: Any,
    subject: str | None,
    priority: str,
    scope: str,
    extensions: dict[str, int],
    absent: set[str],
) -> None:
    sig = Signal.new(
        type_,
        data,
        source="p",
        subject=subject,
        priority=priority,
        scope=scope,
        extensions=extensions,
    )
    sig = Signal(**{**sig.__dict__, "absent": frozenset(absent)})
    wire = encode(sig.to_term())
    back = Signal.from_term(decode(wire))
    assert encode(back.to_term()) == wire
    assert back.absent == frozenset(absent) and back.extensions == extensions
