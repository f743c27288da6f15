"""The Python client `dspex_cluster.state.State` against a one-replica strong store."""

from __future__ import annotations

import asyncio

import pytest
from strong_cluster import python_client, strong_nodes

from dspex_cluster import Atom
from dspex_cluster.state import (
    Entry,
    State,
    StateError,
    StateValueError,
    ValueTooLarge,
    VersionMismatch,
)

pytestmark = pytest.mark.otp


@pytest.mark.asyncio
async def test_put_get_cas_delete_bad_input_and_failover_to_another_beam(epmd) -> None:  # type: ignore[no-untyped-def]
    with strong_nodes(epmd.port, count=1) as [beam]:
        py = await python_client(epmd.port)
        try:
            # the first BEAM node does not exist: the client goes on to the next one
            state = State(py, beams=["nobody@127.0.0.1", beam.name])
            assert await state.get(("k", 1)) is None
            v1 = await state.put(("k", 1), {"a": [1, 2.5, Atom("x")]})
            assert isinstance(v1, int)
            assert await state.get(("k", 1)) == Entry({b"a": [1, 2.5, Atom("x")]}, v1)
            with pytest.raises(VersionMismatch) as mismatch:
                await state.cas(("k", 1), None, "other")
            assert mismatch.value.current == v1
            v2 = await state.cas(("k", 1), v1, "new")
            assert v2 > v1
            await state.delete(("k", 1))
            # a cas holding the version from before the delete fails: the key is absent now
            with pytest.raises(VersionMismatch) as gone:
                await state.cas(("k", 1), v2, "late")
            assert gone.value.current is None

            # bad input: a clear error, nothing sent, nothing written
            with pytest.raises(StateValueError, match="not encodable"):
                await state.put("bad", object())
            with pytest.raises(TypeError):
                await state.put("bad", {1, 2})
            with pytest.raises(ValueTooLarge, match="max_value_bytes"):
                await state.put("big", b"x" * (1024 * 1024 + 1))
            assert await state.get("bad") is None and await state.get("big") is None

            await asyncio.sleep(1.2)  # Ra refreshes the metrics status reads about every second
            s = await state.status()
            assert s["leader"] == Atom(beam.name) and s["members"] == [Atom(beam.name)]
            assert s["commit_index"] >= 6 and s["term"] >= 1 and s["lag"] == {Atom(beam.name): 0}

            with pytest.raises(StateError):
                await State(py, beams=["nobody@127.0.0.1"]).get("k")
        finally:
            await py.stop()
