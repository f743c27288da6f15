"""Action parameter validation (no BEAM needed)."""

from __future__ import annotations

import pytest

from dspex_cluster import Atom
from dspex_cluster.agents import Action, ActionError, Param

ADD = Action(
    "add",
    lambda agent, a, b: a + b,
    {"a": Param("integer", required=True), "b": Param("integer", default=1)},
)


def test_action_validation() -> None:
    assert ADD.validate({"a": 2}) == {"a": 2, "b": 1}
    assert ADD.validate([(Atom("a"), 2), (Atom("b"), 5), (Atom("zzz"), 0)]) == {"a": 2, "b": 5}
    assert ADD.validate({b"a": 3}) == {"a": 3, "b": 1}  # binary keys, as Elixir strings
    with pytest.raises(ActionError, match="a is required"):
        ADD.validate({})
    with pytest.raises(ActionError, match="a must be of type integer"):
        ADD.validate({"a": 1.5})
    with pytest.raises(ActionError, match="a must be of type integer"):
        ADD.validate({"a": True})
    with pytest.raises(ActionError, match="must be a map or a keyword list"):
        ADD.validate(42)
    pick = Param("atom", choices=(Atom("x"), Atom("y")))
    with pytest.raises(ActionError, match="must be one of"):
        pick.check("mode", Atom("z"))
    assert Param("string").check("s", "é".encode()) == "é"
    assert Param("node").check("n", Atom("a@h")) == "a@h"
    with pytest.raises(ValueError, match="unknown parameter type"):
        Param("float")


async def test_execute_runs_sync_and_async() -> None:
    async def later(agent: object, x: int) -> int:
        return x * 2

    twice = Action("twice", later, {"x": Param("integer", required=True)})
    assert await twice.execute(None, {"x": 4}) == 8
    assert await ADD.execute(None, {"a": 1}) == 2
