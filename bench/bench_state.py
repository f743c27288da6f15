"""Strong state benchmark: our layer beside bare `ra:process_command` on the same Ra group.

    .venv/bin/python bench/bench_state.py --out reports/bench            # writes state.json
    .venv/bin/python bench/bench_state.py --out reports/bench --quick    # reduced sizes

On a private epmd it starts three BEAM app nodes that form one three-replica strong group, then:

* throughput and p50/p99 latency of put, get and cas, sequential and with 16 concurrent clients,
  through `DSPEx.Clustering.State` ("layer") and through bare `ra:process_command` to the leader
  with the same machine commands ("bare"), alternated in the same run on the same follower node;
  `layer_vs_bare` is the throughput ratio (target: the layer costs <= 15 %, ratio >= 0.85);
* leader failover: kill -9 of the leader -> the first write invoked after the kill that commits,
  measured by a client writing back to back on a follower (target p50 <= 1 s, p99 <= 3 s); the
  killed node is restarted under its name (it recovers from its Ra data and rejoins);
* follower catch-up: a follower is frozen (SIGSTOP) while N writes commit (100,000; --quick
  10,000), then thawed: the time until the leader sees its match index at the commit index.

Clients are compiled Erlang (bench/bench_state_peer.erl) on a BEAM node. Figures on a loaded
2-core machine are noisy: compare the ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for sub in ("interop", "agents", "state"):
    sys.path.insert(0, str(REPO / "tests" / sub))

from beam_app import COOKIE, start_app_node  # noqa: E402
from otp import Epmd, ErlNode  # noqa: E402
from strong_cluster import STRONG_ENV, leader_of, wait_formed  # noqa: E402

from machine_facts import machine_facts  # noqa: E402

MANAGER = "'Elixir.DSPEx.Clustering.State.ConsistencyManager'"


def start(epmd: Epmd, ebin: Path, name: str | None = None) -> ErlNode:
    node = start_app_node(epmd.port, COOKIE, "bst", env=STRONG_ENV, name=name)
    node.eval(f'code:add_patha("{ebin}")')
    return node


def connect(nodes: list[ErlNode]) -> None:
    for other in nodes[1:]:
        assert nodes[0].eval(f"net_kernel:connect_node('{other.name}')") is True


def server_id(node: ErlNode) -> str:
    return f"{{dspex_state, '{node.name}'}}"


def throughput(client: ErlNode, leader: ErlNode, n: int, reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for op in ("put", "get", "cas"):
        for conc in (1, 16):
            runs: dict[str, list[dict[str, Any]]] = {"layer": [], "bare": []}
            for _ in range(reps):
                for path in ("bare", "layer"):
                    r = client.eval(
                        f"bench_state_peer:run({path}, {op}, {n}, {conc}, {server_id(leader)})", 600
                    )
                    runs[path].append({str(k): v for k, v in r.items()})
            entry: dict[str, Any] = {}
            for path, rs in runs.items():
                entry[path] = {
                    "ops_per_s": statistics.median(r["ops_per_s"] for r in rs),
                    "p50_us": statistics.median(r["p50_us"] for r in rs),
                    "p99_us": statistics.median(r["p99_us"] for r in rs),
                    "errors": sum(r["errors"] for r in rs),
                    "ops": sum(r["n"] for r in rs),
                }
            entry["layer_vs_bare"] = entry["layer"]["ops_per_s"] / entry["bare"]["ops_per_s"]
            key = f"{op}_{'sequential' if conc == 1 else f'{conc}_clients'}"
            out[key] = entry
            print(
                f"{key}: layer {entry['layer']['ops_per_s']:,.0f}/s "
                f"(p50 {entry['layer']['p50_us']} us, p99 {entry['layer']['p99_us']} us), "
                f"bare {entry['bare']['ops_per_s']:,.0f}/s "
                f"(p50 {entry['bare']['p50_us']} us, p99 {entry['bare']['p99_us']} us), "
                f"ratio {entry['layer_vs_bare']:.3f}",
                flush=True,
            )
    return out


def failover(epmd: Epmd, ebin: Path, nodes: list[ErlNode], trials: int) -> dict[str, Any]:
    times: list[float] = []
    for trial in range(trials):
        leader = leader_of(nodes)
        client = next(n for n in nodes if n is not leader)
        client.eval(f"bench_state_peer:probe(bench_probe, {{failover, {trial}}})")
        time.sleep(0.5)
        killed_at = time.time() * 1000
        os.kill(leader.proc.pid, signal.SIGKILL)
        time.sleep(3.5)
        ops = client.eval("bench_state_peer:probe_results(bench_probe)", 60)
        after = [t1 - killed_at for t0, t1, tag in ops if t0 >= killed_at and str(tag) == "ok"]
        assert after, f"trial {trial}: no write committed within 3.5 s of the kill"
        times.append(min(after))
        print(f"failover trial {trial}: {min(after):.0f} ms", flush=True)
        # the killed node comes back under its name, from its Ra data
        leader.stop()
        alive = leader.name.split("@")[0]
        nodes[nodes.index(leader)] = restarted = start(epmd, ebin, name=alive)
        connect([restarted, *[n for n in nodes if n is not restarted]])
        wait_formed(restarted, {n.name for n in nodes})
        wait_caught_up(nodes)
    times.sort()
    return {
        "trials": trials,
        "ms": times,
        "p50_ms": statistics.median(times),
        "p99_ms": times[min(len(times) - 1, round(0.99 * len(times)))],
        "target_p50_ms": 1000,
        "target_p99_ms": 3000,
    }


def leader_view(nodes: list[ErlNode]) -> dict[str, Any] | None:
    view = leader_of(nodes).eval(f"{MANAGER}:leader_view()")
    return None if view in (None, "nil") else {str(k): v for k, v in view.items()}


def wait_caught_up(nodes: list[ErlNode], timeout: float = 120) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            view = leader_view(nodes)
        except (AssertionError, TimeoutError):  # an election under way
            view = None
        if view and len(view["lag"]) == len(nodes) and all(v == 0 for v in view["lag"].values()):
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError("followers did not catch up")


def catch_up(nodes: list[ErlNode], writes: int) -> dict[str, Any]:
    leader = leader_of(nodes)
    follower = next(n for n in nodes if n is not leader)
    client = next(n for n in nodes if n is not leader and n is not follower)
    os.kill(follower.proc.pid, signal.SIGSTOP)
    try:
        r = client.eval(f"bench_state_peer:run(layer, put, {writes}, 16, {server_id(leader)})", 900)
        behind = leader_view(nodes)
    finally:
        os.kill(follower.proc.pid, signal.SIGCONT)
    seconds = wait_caught_up(nodes, 300)
    lag = {str(k): v for k, v in (behind or {}).get("lag", {}).items()}
    result = {
        "writes_behind": writes,
        "lag_when_thawed": lag.get(follower.name),
        "write_rate_per_s": r[next(k for k in r if str(k) == "ops_per_s")],
        "catch_up_seconds": seconds,
    }
    print(f"catch-up after {writes:,} writes behind: {seconds:.2f} s", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "bench")
    ap.add_argument("--quick", action="store_true", help="reduced sizes, to check it works")
    ap.add_argument(
        "--phases", default="throughput,failover,catch_up", help="comma-separated, in this order"
    )
    args = ap.parse_args()
    n, reps, trials, behind = (400, 1, 3, 10_000) if args.quick else (3_000, 3, 20, 100_000)

    epmd = Epmd()
    ebin = Path(tempfile.mkdtemp(prefix="bench_state"))
    nodes: list[ErlNode] = []
    try:
        erlc = shutil.which("erlc") or "erlc"
        subprocess.run(
            [erlc, "-o", str(ebin), str(REPO / "bench" / "bench_state_peer.erl")], check=True
        )
        nodes = [start(epmd, ebin) for _ in range(3)]
        connect(nodes)
        wait_formed(nodes[0], {x.name for x in nodes})
        leader = leader_of(nodes)
        client = next(x for x in nodes if x is not leader)
        result: dict[str, Any] = {
            "machine": machine_facts(),
            "config": {"ops_per_measurement": n, "repetitions": reps, "replicas": 3},
            "reads": "through the Raft log (a Ra command), as writes",
        }
        client.eval(
            f"bench_state_peer:run(layer, put, {n}, 16, {server_id(leader)})", 600
        )  # warm-up
        args.out.mkdir(parents=True, exist_ok=True)
        target = args.out / "state.json"
        phases = args.phases.split(",")
        if "throughput" in phases:
            result["throughput"] = throughput(client, leader, n, reps)
            target.write_text(json.dumps(result, indent=2, default=str) + "\n")  # partial
        if "failover" in phases:
            result["failover"] = failover(epmd, ebin, nodes, trials)
            target.write_text(json.dumps(result, indent=2, default=str) + "\n")
            print(
                f"failover p50 {result['failover']['p50_ms']:.0f} ms, "
                f"p99 {result['failover']['p99_ms']:.0f} ms",
                flush=True,
            )
        if "catch_up" in phases:
            result["catch_up"] = catch_up(nodes, behind)
        target.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {target}")
    finally:
        for node in nodes:
            if node.proc.poll() is None:
                os.kill(node.proc.pid, signal.SIGCONT)
            node.stop()
        epmd.stop()
        shutil.rmtree(ebin, ignore_errors=True)


if __name__ == "__main__":
    main()
