"""What a BEAM caller (OTP 25 and OTP 28) gets back when a call into a Python node cannot run or
fails: a fun says it cannot run here, `undef` carries the argument list as on a BEAM node, and a
Python exception carries the Python traceback as text (the user's frames, not the runtime's)."""

from __future__ import annotations

import pytest
from otp import ErlError, ErlNode, beval

from dspex_cluster import Atom, Node

pytestmark = pytest.mark.otp


def _check_input(value: float) -> float:
    if value < 0:
        raise ValueError(f"negative input {value}")
    return value


def checked_sqrt(value: float) -> float:
    return _check_input(value) ** 0.5


async def test_a_fun_is_refused_with_a_reason_that_says_so(beam: ErlNode, py: Node) -> None:
    with pytest.raises(ErlError) as err:
        await beval(beam, f"erpc:call('{py.name}', fun() -> 1 end)")
    kind, reason, stack = err.value.reason
    assert kind == "exception"
    assert reason[0] == "notsup" and b"a fun cannot run on a Python node" in reason[1]
    assert stack[0][:2] == (Atom("erlang"), Atom("apply"))
    # Node.spawn / spawn/2 with a fun: the spawned process exits with that reason
    down = await beval(
        beam,
        f"{{_, M}} = spawn_monitor('{py.name}', fun() -> ok end), "
        "receive {'DOWN', M, process, _, R} -> R after 5000 -> timeout end",
    )
    assert down[0][0] == "notsup" and b"cannot run on a Python node" in down[0][1]


async def test_an_exported_fun_of_an_exposed_module_runs(beam: ErlNode, py: Node) -> None:
    py.expose("pymath", {"sqrt": checked_sqrt})
    got = await beval(beam, f"erpc:call('{py.name}', erlang, apply, [fun pymath:sqrt/1, [9.0]])")
    assert got == 3.0


async def test_undef_carries_the_argument_list(beam: ErlNode, py: Node) -> None:
    with pytest.raises(ErlError) as err:
        await beval(beam, f"erpc:call('{py.name}', nomod, nofun, [1, two, <<\"three\">>])")
    assert err.value.reason[:2] == (Atom("exception"), Atom("undef"))
    assert err.value.reason[2] == [(Atom("nomod"), Atom("nofun"), [1, Atom("two"), b"three"], [])]
    got = await beval(beam, f"rpc:call('{py.name}', nomod, nofun, [1])")
    assert got == (
        Atom("badrpc"),
        (Atom("EXIT"), (Atom("undef"), [(Atom("nomod"), Atom("nofun"), [1], [])])),
    )


async def test_python_exception_carries_the_traceback_text(beam: ErlNode, py: Node) -> None:
    py.expose("pymath", {"sqrt": checked_sqrt})
    with pytest.raises(ErlError) as err:
        await beval(beam, f"erpc:call('{py.name}', pymath, sqrt, [-4.0])")
    kind, reason, stack = err.value.reason
    assert kind == "exception"
    tag, cls, message, text = reason
    assert (tag, cls, message) == (
        Atom("python_exception"),
        Atom("ValueError"),
        b"negative input -4.0",
    )
    assert text.startswith(b"Traceback (most recent call last):")
    assert b"in checked_sqrt" in text and b"in _check_input" in text
    assert b"dspex_cluster/runtime" not in text  # the runtime's own frames are left out
    # the stack: the user's frames, innermost first, none of the runtime's
    assert [frame[1] for frame in stack] == [Atom("_check_input"), Atom("checked_sqrt")]
