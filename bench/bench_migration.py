"""Live migration and Cognitive Variables on real BEAM nodes (`DSPEx.Clustering.Migration`,
`DSPEx.Clustering.Variable`).

Three OTP 25 nodes run :dspex_cluster (beam/_build/dev) on a private epmd, with the helpers of
bench/bench_migration_peer.erl loaded. Written to DIR/migration.json:

  * pause time p50/p99 of `Migration.migrate/3` (the agent's own measure: from the moment it
    stops taking messages to the moment the target serves them) for states of 1 KiB, 100 KiB
    and 1 MiB (random bytes, so the >64 KiB compression gains nothing), `--migrations` each,
    to a node other than where it is each time; target p99 <= 100 ms at 1 MiB (published
    actor-migration figures are 150-250 ms). The agent is a `:map` Cognitive Variable holding
    the bytes (its checkpoint is the whole state, `state_bytes` in the JSON);
  * the reference, in the same run: an erpc call carrying the same number of random bytes from
    one node to another (`bare_erpc_of_the_bytes`), and the pause's ratio to it;
  * migrations/s: the 1 KiB series' count over its wall time (one migration at a time, each
    waiting for the reply; the old instance's 200 ms grace period runs in the background);
  * change -> all subscribers: `--subscribers` (1,000) processes over the three nodes subscribe
    to a float variable; `--changes` sets, 20 ms apart, from one node; for each version the
    latency is the last subscriber's arrival minus the moment before `set` was called; p50/p99
    over versions, target p99 <= 50 ms. Every subscriber must see every version (checked).

Figures on a loaded 2-core machine are noisy: see `machine.load_average`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine_facts import machine_facts

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "interop"))
sys.path.insert(0, str(REPO / "tests" / "agents"))

from beam_app import COOKIE, start_app_node  # noqa: E402
from otp import Epmd, ErlNode  # noqa: E402

VAR = "'Elixir.DSPEx.Clustering.Variable'"
PEER = "bench_migration_peer"
SIZES = {"1KiB": 1024, "100KiB": 100 * 1024, "1MiB": 1024 * 1024}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def node_list(nodes: list[ErlNode]) -> str:
    return "[" + ", ".join(f"'{n.name}'" for n in nodes) + "]"


def bare_series(nodes: list[ErlNode], size: int, count: int) -> dict[str, float]:
    ms = [
        float(x) for x in nodes[0].eval(f"{PEER}:bare_series('{nodes[1].name}', {size}, {count})")
    ]
    return {"p50_ms": pct(ms, 0.5), "p99_ms": pct(ms, 0.99)}


def pause_series(nodes: list[ErlNode], size: int, count: int, tag: str) -> dict[str, Any]:
    name = f'<<"bench.state.{tag}">>'
    started = nodes[0].eval(
        f"{VAR}:start({name}, [{{type, map}}, {{history, 1}}, "
        f"{{value, #{{pad => crypto:strong_rand_bytes({size})}}}}])"
    )
    assert started[0] == "ok", started
    t0 = time.monotonic()
    rows = nodes[0].eval(
        f"{PEER}:migrate_series({{variable, {name}}}, {node_list(nodes)}, {count})",
        timeout=600,
    )
    wall = time.monotonic() - t0
    pauses = [float(p) for p, _, _, _ in rows]
    walls = [w / 1000.0 for _, w, _, _ in rows]
    steps = {str(k): round(statistics.median(float(r[3][k]) for r in rows), 3) for k in rows[0][3]}
    return {
        "state_bytes": int(rows[0][2]),
        "migrations": count,
        "pause_p50_ms": pct(pauses, 0.5),
        "pause_p99_ms": pct(pauses, 0.99),
        "pause_max_ms": max(pauses),
        "call_p50_ms": pct(walls, 0.5),
        "call_p99_ms": pct(walls, 0.99),
        "migrations_per_s": count / wall,
        "steps_median_ms": steps,
    }


def fanout(nodes: list[ErlNode], subscribers: int, changes: int) -> dict[str, Any]:
    name = '<<"bench.fanout">>'
    assert nodes[0].eval(f"{VAR}:start({name}, [{{type, float}}, {{value, 0.0}}])")[0] == "ok"
    per = [subscribers // len(nodes) + (1 if i < subscribers % len(nodes) else 0) for i in range(3)]
    for n, k in zip(nodes, per, strict=True):
        n.eval(f"put(subs, {PEER}:subscribers({name}, {k})), ok")
    time.sleep(0.5)
    sets = nodes[0].eval(f"{PEER}:set_series({name}, {changes}, 20)", timeout=600)
    time.sleep(1.0)
    set_at = {int(v): int(t) for v, t in sets}
    latest: dict[int, int] = {}
    arrivals: dict[int, int] = {}
    for n in nodes:
        for v, (t, c) in n.eval(f"{PEER}:summary(get(subs))", timeout=120).items():
            latest[int(v)] = max(latest.get(int(v), 0), int(t))
            arrivals[int(v)] = arrivals.get(int(v), 0) + int(c)
    complete = all(arrivals.get(v) == subscribers for v in set_at)
    lat = [(latest[v] - t) / 1000.0 for v, t in set_at.items() if v in latest]
    return {
        "subscribers": subscribers,
        "nodes": len(nodes),
        "changes": changes,
        "every_subscriber_saw_every_version": complete,
        "to_all_p50_ms": pct(lat, 0.5),
        "to_all_p99_ms": pct(lat, 0.99),
        "to_all_max_ms": max(lat),
        "target_p99_ms": 50.0,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    ebin = Path(tempfile.mkdtemp(prefix="bench_migration"))
    subprocess.run(
        [shutil.which("erlc") or "erlc", "-o", str(ebin), str(REPO / "bench" / f"{PEER}.erl")],
        check=True,
    )
    epmd = Epmd()
    nodes: list[ErlNode] = []
    try:
        nodes = [
            start_app_node(epmd.port, COOKIE, f"bmig{i}", erl_args=("-pa", str(ebin)))
            for i in range(3)
        ]
        for other in nodes[1:]:
            assert nodes[0].eval(f"net_kernel:connect_node('{other.name}')") is True
        nodes[0].eval("global:sync()")
        pauses = {}
        for tag, size in SIZES.items():
            pauses[tag] = pause_series(nodes, size, args.migrations, tag)
            pauses[tag]["bare_erpc_of_the_bytes"] = bare = bare_series(nodes, size, args.migrations)
            pauses[tag]["pause_p50_over_bare_p50"] = pauses[tag]["pause_p50_ms"] / bare["p50_ms"]
            print(f"{tag}: {pauses[tag]}", flush=True)
        fan = fanout(nodes, args.subscribers, args.changes)
        print(f"fan-out: {fan}", flush=True)
    finally:
        for n in nodes:
            n.stop()
        epmd.stop()
        shutil.rmtree(ebin, ignore_errors=True)
    p99_1mib = pauses["1MiB"]["pause_p99_ms"]
    return {
        "benchmark": "migration",
        "nodes": 3,
        "pause": pauses,
        "pause_target_p99_ms_at_1MiB": 100.0,
        "pause_p99_1MiB_over_target": p99_1mib / 100.0,
        "pause_p99_1MiB_over_1KiB": p99_1mib / max(pauses["1KiB"]["pause_p99_ms"], 1e-9),
        "migrations_per_s": pauses["1KiB"]["migrations_per_s"],
        "variable_fanout": fan,
        "fanout_p99_over_target": fan["to_all_p99_ms"] / 50.0,
        "machine": machine_facts(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=Path("reports/bench"))
    parser.add_argument("--migrations", type=int, default=100, help="per state size")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="20 migrations, 50 changes")
    args = parser.parse_args()
    if args.quick:
        args.migrations, args.changes = 20, 50
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "migration.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
