"""Convergence of the eventual state (`DSPEx.Clustering.State.Eventual`) on real BEAM nodes.

Three OTP 25 nodes run :dspex_cluster (beam/_build/dev) on a private epmd with an eventual
table `bench` and an anti-entropy interval of `--interval-ms`. Two measurements, `--trials`
times each, written to DIR/state_eventual.json beside the interval and 2x the interval (the
target: replicas equal within 2x the interval after the last write or heal):

  * burst: every node writes `--keys` keys (the same keys, racing) from one shared start
    time; convergence = the moment the three replicas' root digests became equal for good,
    minus the last write's acknowledgement;
  * heal: node A is cut off from B and C (a per-node cookie nobody knows, then disconnect, so
    nothing can dial across), both sides write `--keys` keys (half of them the same keys),
    the cut is healed (cookies restored, A connects); convergence = roots equal for good
    minus the moment the connection was back.

Times are os:system_time on one machine (one clock). The poller asks every node for its
replica's root digest every 5 ms over erpc, which itself costs the replicas some time: the
figures are upper bounds, noisy under load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from machine_facts import machine_facts

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "interop"))
sys.path.insert(0, str(REPO / "tests" / "agents"))

from beam_app import COOKIE, start_app_node  # noqa: E402
from otp import Epmd, ErlNode  # noqa: E402

REPLICA = "'Elixir.DSPEx.Clustering.State.Replica'"
EVENTUAL = "'Elixir.DSPEx.Clustering.State.Eventual'"

# Write keys 1..N (as {Tag, I}) from StartAt (system ms); the time of the last ack.
WRITER = (
    "timer:sleep(max(0, {start} - os:system_time(millisecond))), "
    "lists:foreach(fun(I) -> {{ok, _}} = " + EVENTUAL + ":put({{{tag}, I}}, {{node(), I}}, "
    "[{{table, bench}}]) end, lists:seq(1, {n})), os:system_time(millisecond)"
)

# Poll the roots of every node until they have been equal (and non-zero) for HoldMs; answer the
# time they last became equal, or `timeout` after DeadlineMs.
POLLER = (
    "Nodes = {nodes}, Deadline = os:system_time(millisecond) + {deadline}, "
    "Root = fun(N) -> try maps:get(root, erpc:call(N, " + REPLICA + ", stats, [bench], 2000)) "
    "catch _:_ -> make_ref() end end, "  # a busy replica: not known equal yet
    "Roots = fun() -> [Root(N) || N <- Nodes] end, "
    "Poll = fun Poll(Since) -> Now = os:system_time(millisecond), "
    "Equal = case lists:usort(Roots()) of [R] when R =/= 0 -> true; _ -> false end, "
    "if Now > Deadline -> timeout; "
    "Equal andalso Since =/= none andalso Now - Since >= {hold} -> Since; "
    "Equal -> timer:sleep(5), Poll(case Since of none -> Now; _ -> Since end); "
    "true -> timer:sleep(5), Poll(none) end end, Poll(none)"
)


def in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    """Run `fn` on a thread; the list gets its result."""
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    thread.start()
    return thread, box


def node_list(nodes: list[ErlNode]) -> str:
    return "[" + ", ".join(f"'{n.name}'" for n in nodes) + "]"


def wait_equal(nodes: list[ErlNode], hold_ms: int, deadline_ms: int) -> int:
    expr = POLLER.format(nodes=node_list(nodes), deadline=deadline_ms, hold=hold_ms)
    result = nodes[0].eval(expr, timeout=deadline_ms / 1000 + 30)
    if result == "timeout":
        raise RuntimeError("replicas did not converge")
    return int(result)


def burst_trial(nodes: list[ErlNode], keys: int, trial: int) -> float:
    start = int(time.time() * 1000) + 500
    writers = [
        in_thread(lambda n=n: n.eval(WRITER.format(start=start, tag=f"b{trial}", n=keys), 120))
        for n in nodes
    ]
    for thread, _ in writers:
        thread.join()
    last_ack = max(int(box[0]) for _, box in writers)
    equal_at = wait_equal(nodes, hold_ms=1000, deadline_ms=30_000)
    return float(max(0, equal_at - last_ack))


def set_cookie(on: ErlNode, other: ErlNode, cookie: str) -> None:
    on.eval(f"erlang:set_cookie('{other.name}', '{cookie}')")


def heal_trial(nodes: list[ErlNode], keys: int, trial: int) -> float:
    a, rest = nodes[0], nodes[1:]
    # a different unknown cookie on each side: two equal wrong cookies would handshake fine
    for other in rest:
        set_cookie(a, other, f"dspex-bench-cut-by-{a.name}")
        set_cookie(other, a, f"dspex-bench-cut-by-{other.name}")
    for other in rest:
        a.eval(f"erlang:disconnect_node('{other.name}')")
    # half the keys shared by both sides (conflicts), half per side
    start = int(time.time() * 1000) + 200
    writers = [
        in_thread(lambda: a.eval(WRITER.format(start=start, tag=f"h{trial}", n=keys), 120)),
        in_thread(
            lambda: rest[0].eval(
                WRITER.format(start=start, tag=f"h{trial}", n=keys // 2)
                + ", "
                + WRITER.format(start=0, tag=f"hb{trial}", n=keys - keys // 2),
                120,
            )
        ),
    ]
    for thread, _ in writers:
        thread.join()
    # the cut is what we meant: A alone, B and C still together (global may not cut B-C)
    assert a.eval("nodes()") == []
    assert rest[1].name in [str(n) for n in rest[0].eval("nodes()")]
    for other in rest:
        set_cookie(a, other, COOKIE)
        set_cookie(other, a, COOKIE)
    healed_at = 0
    for other in rest:
        assert a.eval(f"net_kernel:connect_node('{other.name}')") is True
        healed_at = int(a.eval("os:system_time(millisecond)"))
    equal_at = wait_equal(nodes, hold_ms=1000, deadline_ms=30_000)
    return float(max(0, equal_at - healed_at))


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": statistics.median(values),
        "max_ms": max(values),
        "all_ms": values,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    epmd = Epmd()
    nodes: list[ErlNode] = []
    env = {
        "eventual_tables": "[default, bench]",
        "eventual_anti_entropy_ms": str(args.interval_ms),
    }
    try:
        # global must not cut B-C while A is cut off from both (it would with overlapping
        # partition prevention, as A loses B before C)
        no_cut = ("-kernel", "prevent_overlapping_partitions", "false")
        nodes = [
            start_app_node(epmd.port, COOKIE, f"sev{i}", env, erl_args=no_cut) for i in range(3)
        ]
        for other in nodes[1:]:
            assert nodes[0].eval(f"net_kernel:connect_node('{other.name}')") is True
        for n in nodes:
            deadline = time.time() + 10
            while n.eval(f"maps:get(peers, {REPLICA}:stats(bench))") != 2:
                if time.time() > deadline:
                    raise RuntimeError("replicas did not find each other")
                time.sleep(0.05)
        burst = [burst_trial(nodes, args.keys, t) for t in range(args.trials)]
        print(f"burst: {burst} ms", flush=True)
        heal = [heal_trial(nodes, args.keys, t) for t in range(args.trials)]
        print(f"heal: {heal} ms", flush=True)
        stats = [n.eval(f"{REPLICA}:stats(bench)") for n in nodes]
        conflicts = sum(int(s["conflicts"]) for s in stats)
    finally:
        for n in nodes:
            n.stop()
        epmd.stop()
    interval = args.interval_ms
    return {
        "benchmark": "state_eventual",
        "nodes": 3,
        "keys_per_writer": args.keys,
        "trials": args.trials,
        "anti_entropy_interval_ms": interval,
        "target_ms": 2 * interval,
        "burst_convergence": summary(burst),
        "heal_convergence": summary(heal),
        "burst_ratio_to_interval": statistics.median(burst) / interval,
        "heal_ratio_to_interval": statistics.median(heal) / interval,
        "conflicts_resolved": conflicts,
        "machine": machine_facts(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=Path("reports/bench"))
    parser.add_argument("--keys", type=int, default=2000, help="keys each writer writes")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--interval-ms", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="300 keys, 2 trials")
    args = parser.parse_args()
    if args.quick:
        args.keys, args.trials = 300, 2
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "state_eventual.json"
    path.write_text(json.dumps(result, indent=2))
    print(
        f"eventual convergence (interval {args.interval_ms} ms, target {2 * args.interval_ms} ms): "
        f"burst median {result['burst_convergence']['median_ms']:.0f} ms, "
        f"heal median {result['heal_convergence']['median_ms']:.0f} ms -> {path}",
        flush=True,
    )


if __name__ == "__main__":
    main()
