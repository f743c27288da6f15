"""Eventual and causal state from Python (`State(..., consistency="eventual")`, `state.session()`)
on two BEAM app nodes, with a real cut between them."""

from __future__ import annotations

import pytest
from beam_app import COOKIE, connected_app_nodes
from otp import ErlNode
from strong_cluster import python_client

from dspex_cluster import Atom
from dspex_cluster.state import State, StateTimeout

pytestmark = pytest.mark.otp


def cut(a: ErlNode, b: ErlNode) -> None:
    """A cut both ways: a different unknown cookie on each side (equal wrong ones handshake)."""
    a.eval(f"erlang:set_cookie('{b.name}', 'cut-by-{a.name}')")
    b.eval(f"erlang:set_cookie('{a.name}', 'cut-by-{b.name}')")
    a.eval(f"erlang:disconnect_node('{b.name}')")


def heal(a: ErlNode, b: ErlNode) -> None:
    """Both cookies back, then a connects to b."""
    a.eval(f"erlang:set_cookie('{b.name}', '{COOKIE}')")
    b.eval(f"erlang:set_cookie('{a.name}', '{COOKIE}')")
    assert a.eval(f"net_kernel:connect_node('{b.name}')") is True


@pytest.mark.asyncio
async def test_causal_session_reads_its_writes_on_another_beam_node(epmd) -> None:  # type: ignore[no-untyped-def]
    with connected_app_nodes(epmd.port, ("ca", "cb")) as [a, b]:
        py = await python_client(epmd.port)  # hidden: it never relays between a and b
        try:
            on_a = State(py, beams=[a.name], consistency="eventual")
            on_b = State(py, beams=[b.name], consistency="eventual", timeout=0.3)
            version = await on_a.put("py:1", {"n": 1})
            assert version[Atom("stamp")][2] == Atom(a.name)
            await on_a.delete("py:1")
            assert await on_a.get("py:1") is None

            cut(a, b)
            session = on_a.session()
            await session.put("py:cart", [Atom("apple")])
            assert (await session.get("py:cart")).value == [Atom("apple")]
            # b has not got the write: an eventual read misses it, the session's read waits
            # (0.3 s here) and refuses rather than answer older
            assert await on_b.get("py:cart") is None
            later = on_b.session(session.token)
            with pytest.raises(StateTimeout):
                await later.get("py:cart")
            heal(a, b)
            patient = State(py, beams=[b.name], timeout=5.0).session(session.token)
            entry = await patient.get("py:cart")
            assert entry is not None and entry.value == [Atom("apple")]
            # the token moved on: a delete through b, then a read through a never sees the cart
            await patient.delete("py:cart")
            assert await State(py, beams=[a.name]).session(patient.token).get("py:cart") is None
        finally:
            await py.stop()
