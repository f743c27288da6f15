"""The strong store under real faults on three BEAM nodes, checked from recorded histories:
every key's history linearizable, no acknowledged counter increment lost or applied twice, and
the store serving again after each fault. Clients are asyncio tasks on a Python node calling
`DSPEx.Clustering.State` on the BEAM nodes by :erpc (`dspex_cluster.state.State`)."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from history import check_counter, check_register
from strong_cluster import (
    Workload,
    beam_names,
    kill,
    leader_of,
    python_client,
    status,
    strong_nodes,
)

from dspex_cluster.state import State

pytestmark = [pytest.mark.otp, pytest.mark.slow]


def check(workload: Workload, final_counter: int) -> None:
    for key, ops in workload.by_key().items():
        if key == workload.counter_key:
            continue
        assert check_register(ops), f"history of {key} is not linearizable ({len(ops)} ops)"
    ok, why = check_counter(final_counter, workload.acked_increments, workload.unknown_increments)
    assert ok, why
    assert len(workload.acked_increments) > 5, "the counter clients made no progress"
    print(
        f"history {workload.history.counts()}, increments acked "
        f"{len(workload.acked_increments)} unknown {workload.unknown_increments}, "
        f"counter {final_counter}"
    )


async def run_with_fault(epmd, fault: str, count: int = 3) -> None:  # type: ignore[no-untyped-def]
    with strong_nodes(epmd.port, count) as nodes:
        py = await python_client(epmd.port)
        try:
            state = State(py, beams=[str(b) for b in beam_names(nodes)], timeout=3.0)
            workload = Workload(state, keys=["r1", "r2"])
            run = asyncio.create_task(workload.run(7.0))
            await asyncio.sleep(1.5)
            leader = leader_of(nodes)
            target = (
                leader if fault != "kill_follower" else next(n for n in nodes if n is not leader)
            )
            faulted_at = time.monotonic()
            if fault == "stop_leader":
                kill(target, signal.SIGSTOP)
                await asyncio.sleep(3.0)
                kill(target, signal.SIGCONT)
            elif fault == "kill_leader_and_follower":  # five replicas lose two at once
                kill(target, signal.SIGKILL)
                kill(next(n for n in nodes if n is not leader), signal.SIGKILL)
            else:
                kill(target, signal.SIGKILL)
            await run
            ops_after = [
                op
                for op in workload.history.ops
                if op.result == "ok" and op.f != "get" and op.invoke > faulted_at + 3.5
            ]
            assert ops_after, f"no write committed in the last seconds after {fault}"
            final = await state.get(workload.counter_key)
            assert final is not None
            check(workload, final.value)
            survivor = next(n for n in nodes if n.proc.poll() is None)
            assert len(status(survivor)["members"]) == count
        finally:
            await py.stop()


@pytest.mark.asyncio
async def test_kill_leader(epmd) -> None:  # type: ignore[no-untyped-def]
    await run_with_fault(epmd, "kill_leader")


@pytest.mark.asyncio
async def test_kill_follower(epmd) -> None:  # type: ignore[no-untyped-def]
    await run_with_fault(epmd, "kill_follower")


@pytest.mark.asyncio
async def test_sigstop_leader(epmd) -> None:  # type: ignore[no-untyped-def]
    await run_with_fault(epmd, "stop_leader")


@pytest.mark.asyncio
async def test_five_replicas_kill_leader_and_a_follower(epmd) -> None:  # type: ignore[no-untyped-def]
    await run_with_fault(epmd, "kill_leader_and_follower", count=5)
