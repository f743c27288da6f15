"""Benchmark: the Python node against BEAM<->BEAM on the same machine, in the same run.

    .venv/bin/python bench/bench_node.py --out reports/bench      -> reports/bench/node.json

Figures: BEAM->Python one-way throughput (100,000 {ping, N, <<"payload">>} counted on arrival,
none lost), Python->BEAM throughput, gen_server:call and :erpc.call round trips BEAM->Python
(median, p99), Python RSS over 1,000,000 messages, and a visible Python node inside a three-BEAM
cluster for --stability-seconds. Each Python figure sits beside the BEAM->BEAM one measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "interop"))

from otp import Epmd, ErlNode, beval, unique  # noqa: E402

from dspex_cluster import etf  # noqa: E402
from dspex_cluster.etf import Atom  # noqa: E402
from dspex_cluster.runtime import GenServer, Node, Process  # noqa: E402
from machine_facts import machine_facts as shared_machine_facts  # noqa: E402

COOKIE = "dspex-bench-cookie"
PAYLOAD = b"payload"


class Sink(Process):
    """Counts {ping, N, Payload} after a {start, Count} marker; one round per `rounds` entry."""

    def __init__(self) -> None:
        self.rounds: asyncio.Queue[tuple[int, float, int]] = asyncio.Queue()

    async def run(self) -> None:
        receive = self.receive
        while True:
            start = await receive()
            count = start[1]
            t0 = time.perf_counter()
            seen = total = 0
            while seen < count:
                message = await receive()
                seen += 1
                total += message[1]
            self.rounds.put_nowait((count, time.perf_counter() - t0, total))


class Echo(GenServer):
    async def handle_call(self, request: Any, caller: Any) -> Any:
        return request


def machine_facts(beam_nodes: list[ErlNode]) -> dict[str, Any]:
    otps = sorted({bytes(n.eval("erlang:system_info(otp_release)")).decode() for n in beam_nodes})
    return shared_machine_facts(otp_releases=otps, etf_implementation=etf.IMPLEMENTATION)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rtt_summary(nanos: list[int]) -> dict[str, float]:
    micros = [n / 1000 for n in nanos]
    return {"median_us": statistics.median(micros), "p99_us": pct(micros, 0.99), "n": len(micros)}


async def one_way_beam_to_python(sender: ErlNode, py: Node, sink: Sink, n: int) -> dict[str, Any]:
    await beval(sender, f"bench_peer:send({{bench_sink, '{py.name}'}}, {n}, <<\"payload\">>)", 120)
    count, seconds, total = await asyncio.wait_for(sink.rounds.get(), 120)
    assert count == n and total == n * (n + 1) // 2, "messages lost or duplicated"
    return {"messages": n, "seconds": seconds, "msg_per_s": n / seconds, "none_lost": True}


async def one_way_beam_to_beam(sender: ErlNode, receiver: ErlNode, n: int) -> dict[str, Any]:
    await beval(sender, f"bench_peer:send({{bench_sink, '{receiver.name}'}}, {n}, <<\"payload\">>)")
    sunk = await beval(receiver, "bench_peer:wait_sunk(120000)", 130)
    _, count, micros, total = sunk
    assert count == n and total == n * (n + 1) // 2
    return {"messages": n, "seconds": micros / 1e6, "msg_per_s": n / (micros / 1e6)}


async def one_way_python_to_beam(py: Node, receiver: ErlNode, n: int) -> dict[str, Any]:
    dest = (Atom("bench_sink"), Atom(receiver.name))
    ping = Atom("ping")
    t0 = time.perf_counter()
    py.send(dest, (Atom("start"), n))
    for i in range(1, n + 1):
        py.send(dest, (ping, i, PAYLOAD))
        if i % 2000 == 0:
            await py.drain()
    await py.drain()
    python_send_s = time.perf_counter() - t0
    sunk = await beval(receiver, "bench_peer:wait_sunk(120000)", 130)
    _, count, micros, total = sunk
    assert count == n and total == n * (n + 1) // 2
    return {
        "messages": n,
        "seconds": micros / 1e6,
        "msg_per_s": n / (micros / 1e6),
        "python_send_seconds": python_send_s,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    epmd = Epmd()
    beams: list[ErlNode] = []
    ebin = Path(tempfile.mkdtemp(prefix="bench_peer"))
    try:
        subprocess.run(
            [
                shutil.which("erlc") or "erlc",
                "-o",
                str(ebin),
                str(REPO / "bench" / "bench_peer.erl"),
            ],
            check=True,
        )
        extra = ["-pa", str(ebin)]
        sender = ErlNode(epmd.port, "otp25", cookie=COOKIE, extra=extra)
        receiver = ErlNode(epmd.port, "otp25", cookie=COOKIE, extra=extra)
        beams = [sender, receiver]
        py = Node(f"{unique('pybench')}@127.0.0.1", cookie=COOKIE, epmd_port=epmd.port)
        await py.start()
        sink = Sink()
        await py.spawn(sink, name="bench_sink")
        await py.spawn(Echo(), name="bench_echo")
        py.expose("bench_py", {"echo": lambda x: x})
        await beval(receiver, "bench_peer:start_sink(bench_sink, self())")
        await beval(receiver, "bench_peer:start_echo(bench_echo)")
        assert await beval(sender, f"net_adm:ping('{receiver.name}')") == "pong"
        assert await beval(sender, f"net_adm:ping('{py.name}')") == "pong"
        assert await py.connect(receiver.name)
        result: dict[str, Any] = {"machine": machine_facts(beams)}
        n = args.messages

        # warm-up rounds (JIT-free CPython, but allocator and connection buffers warm up)
        await one_way_beam_to_python(sender, py, sink, 10_000)
        await one_way_beam_to_beam(sender, receiver, 10_000)

        b2p = await one_way_beam_to_python(sender, py, sink, n)
        b2b = await one_way_beam_to_beam(sender, receiver, n)
        p2b = await one_way_python_to_beam(py, receiver, n)
        result["beam_to_python"] = b2p
        result["beam_to_beam"] = b2b
        result["python_to_beam"] = p2b
        result["beam_to_python_vs_beam_to_beam"] = b2p["msg_per_s"] / b2b["msg_per_s"]
        result["python_to_beam_vs_beam_to_beam"] = p2b["msg_per_s"] / b2b["msg_per_s"]
        print(
            f"one-way: BEAM->Py {b2p['msg_per_s']:,.0f}/s, BEAM->BEAM {b2b['msg_per_s']:,.0f}/s,"
            f" Py->BEAM {p2b['msg_per_s']:,.0f}/s",
            flush=True,
        )

        calls = args.calls
        py_calls = await beval(
            sender, f"bench_peer:calls({{bench_echo, '{py.name}'}}, {calls}, 200)", 300
        )
        beam_calls = await beval(
            sender, f"bench_peer:calls({{bench_echo, '{receiver.name}'}}, {calls}, 200)", 300
        )
        py_erpc = await beval(
            sender, f"bench_peer:erpcs('{py.name}', bench_py, echo, {calls})", 300
        )
        beam_erpc = await beval(
            sender, f"bench_peer:erpcs('{receiver.name}', bench_peer, echo, {calls})", 300
        )
        result["gen_server_call_beam_to_python"] = rtt_summary(py_calls)
        result["gen_server_call_beam_to_beam"] = rtt_summary(beam_calls)
        result["erpc_call_beam_to_python"] = rtt_summary(py_erpc)
        result["erpc_call_beam_to_beam"] = rtt_summary(beam_erpc)
        result["gen_server_call_median_ratio"] = (
            result["gen_server_call_beam_to_python"]["median_us"]
            / result["gen_server_call_beam_to_beam"]["median_us"]
        )
        result["erpc_call_median_ratio"] = (
            result["erpc_call_beam_to_python"]["median_us"]
            / result["erpc_call_beam_to_beam"]["median_us"]
        )
        medians = [
            result[k]["median_us"]
            for k in (
                "gen_server_call_beam_to_python",
                "gen_server_call_beam_to_beam",
                "erpc_call_beam_to_python",
                "erpc_call_beam_to_beam",
            )
        ]
        print(
            "median round trips (us): gen_server:call BEAM->Py {:.0f} vs BEAM->BEAM {:.0f}; "
            "erpc {:.0f} vs {:.0f}".format(*medians),
            flush=True,
        )

        result["memory"] = await memory_run(sender, receiver, py, sink, args.memory_messages)
        print(f"memory: {result['memory']}", flush=True)
        await py.stop()
        if args.stability_seconds > 0:
            result["visible_stability"] = await stability_run(epmd, args.stability_seconds)
            print(f"stability: {result['visible_stability']}", flush=True)
        return result
    finally:
        for beam in beams:
            beam.stop()
        epmd.stop()
        shutil.rmtree(ebin, ignore_errors=True)


async def memory_run(
    sender: ErlNode, receiver: ErlNode, py: Node, sink: Sink, total: int
) -> dict[str, Any]:
    me = psutil.Process()
    rounds = 10
    per_round = total // rounds
    rss: list[int] = []
    beam_mem: list[int] = []
    for _ in range(rounds):
        await one_way_beam_to_python(sender, py, sink, per_round)
        gc.collect()
        rss.append(me.memory_info().rss)
        await one_way_beam_to_beam(sender, receiver, per_round)
        beam_mem.append(await beval(receiver, "erlang:garbage_collect(), erlang:memory(total)"))
    return {
        "messages": per_round * rounds,
        "python_rss_after_first_round_mb": rss[0] / 2**20,
        "python_rss_after_all_mb": rss[-1] / 2**20,
        "python_rss_growth_mb": (rss[-1] - rss[0]) / 2**20,
        "python_rss_per_round_mb": [round(r / 2**20, 1) for r in rss],
        "beam_receiver_memory_after_first_round_mb": beam_mem[0] / 2**20,
        "beam_receiver_memory_after_all_mb": beam_mem[-1] / 2**20,
    }


async def stability_run(epmd: Epmd, seconds: float) -> dict[str, Any]:
    cluster = [ErlNode(epmd.port, otp, cookie=COOKIE) for otp in ("otp25", "otp28", "otp25")]
    py = Node(f"{unique('pyvis')}@127.0.0.1", cookie=COOKIE, hidden=False, epmd_port=epmd.port)
    downs: list[str] = []
    try:
        for i, beam in enumerate(cluster):
            for other in cluster[i + 1 :]:
                assert await beval(beam, f"net_adm:ping('{other.name}')") == "pong"
        await py.start()
        py.on_nodedown(lambda node, why: downs.append(f"{node}: {why}"))
        py.expose("svc", {"ping": lambda: Atom("pong")})
        for beam in cluster:
            assert await py.connect(beam.name)
        everyone = {Atom(b.name) for b in cluster} | {Atom(py.name)}
        checks = failures = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for beam in cluster:
                seen = set(await beval(beam, "nodes()")) | {Atom(beam.name)}
                ok = seen == everyone
                ok = ok and await beval(beam, f"erpc:call('{py.name}', svc, ping, [])") == "pong"
                failures += not ok
                checks += 1
            await asyncio.sleep(5)
        errors = [n.name for n in cluster if "ERROR" in n.log_text() or "WARNING" in n.log_text()]
        return {
            "seconds": seconds,
            "checks": checks,
            "failed_checks": failures,
            "python_saw_nodedown": list(downs),  # a copy: stop() below adds its own
            "beam_nodes_with_error_or_warning_logs": errors,
            "stable": failures == 0 and not downs and not errors,
        }
    finally:
        await py.stop()
        for beam in cluster:
            beam.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=5_000)
    parser.add_argument("--memory-messages", type=int, default=1_000_000)
    parser.add_argument("--stability-seconds", type=float, default=120.0)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "node.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
