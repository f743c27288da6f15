"""Decision cost of the `dspex_load_balancer` agent, in process (no sockets, no BEAM).

Usage: ``.venv/bin/python bench/bench_load_balancer.py --out reports/bench`` (writes
load_balancer.json there).

For 10, 100 and 1,000 BEAM nodes, each known from a load report (cpu, memory, free memory,
agents, capabilities, rtt, scheduler utilisation), the median and 99th percentile of:

  * ``place`` with no constraints, and with constraints that read every column
    (``min_memory_mb``, ``max_cpu``, ``capabilities``, ``prefer_capabilities``);
  * ``advise`` given the candidate maps the BEAM front passes (atom keys, as decoded from the
    wire), converted and filtered in the call;
  * the reference in the same run: ``PlacementModel.choose`` alone on a prepared (n, 7) feature
    matrix and mask — the model's share of a decision; the rest is the agent's filtering and
    feature building. Ratios to it are reported beside the absolute figures.

Every call records a placement (an in-flight task), as in a live cluster; an outcome is fed back
every 10 calls so the model keeps learning during the run.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dspex_cluster import Atom, etf
from dspex_cluster.cluster.load_balancer import LoadBalancer
from dspex_cluster.signals import Signal
from dspex_cluster.skills.placement import PlacementModel
from machine_facts import machine_facts

SIZES = (10, 100, 1000)
CAPS = [Atom("gpu"), Atom("ssd"), Atom("fpga")]


def load_report(i: int, rng: np.random.Generator) -> dict[Atom, Any]:
    return {
        Atom("node"): Atom(f"b{i}@10.0.0.{i % 250}"),
        Atom("kind"): Atom("beam"),
        Atom("status"): Atom("up"),
        Atom("interval_ms"): 1000,
        Atom("cpu"): float(rng.random()),
        Atom("scheduler_utilization"): float(rng.random()),
        Atom("memory"): float(rng.random()),
        Atom("free_memory_mb"): int(rng.integers(256, 16384)),
        Atom("agents"): int(rng.integers(0, 50)),
        Atom("capabilities"): [c for c in CAPS if rng.random() < 0.5],
        Atom("rtt_ms"): float(rng.random() * 5),
    }


def timed(fn: Callable[[], Any], reps: int) -> dict[str, float]:
    clock = time.perf_counter_ns
    for _ in range(min(50, reps)):  # warm-up
        fn()
    samples = np.empty(reps)
    for k in range(reps):
        t0 = clock()
        fn()
        samples[k] = clock() - t0
    return {
        "median_us": round(float(np.median(samples)) / 1000.0, 2),
        "p99_us": round(float(np.percentile(samples, 99)) / 1000.0, 2),
    }


def bench_size(n: int, reps: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    lb = LoadBalancer()
    lb.setup()
    # as they arrive from the wire (the decoder shares one key object per atom)
    reports = etf.decode(etf.encode([load_report(i, rng) for i in range(n)]))
    for data in reports:
        lb.on_load_report(Signal.new("cluster.load.report", data, source="bench"))
    calls = [0]

    def learn(result: Any) -> None:
        calls[0] += 1
        if calls[0] % 10 == 0 and result[0] == "ok":
            lb.outcome(result[1], {Atom("work"): 1.0}, float(rng.uniform(50, 500)))

    spec = {Atom("work"): 1.0}
    constrained = {
        Atom("min_memory_mb"): 1024,
        Atom("max_cpu"): 0.9,
        Atom("capabilities"): [Atom("ssd")],
        Atom("prefer_capabilities"): [Atom("gpu")],
    }
    out: dict[str, Any] = {"nodes": n}
    out["place"] = timed(lambda: learn(lb.place(spec, [])), reps)
    out["place_constrained"] = timed(lambda: learn(lb.place(spec, constrained)), reps)
    out["advise"] = timed(lambda: learn(lb.advise(spec, {}, reports)), reps)
    # the model alone, on the feature matrix the agent builds (same n, same model state)
    features = np.zeros((n, 7))
    features[:, 0] = [r[Atom("cpu")] for r in reports]
    features[:, 2] = 1.0
    features[:, 4] = [r[Atom("scheduler_utilization")] for r in reports]
    mask = np.ones(n, dtype=bool)
    model: PlacementModel = lb.model
    out["model_choose"] = timed(lambda: model.choose(features, {"work": 1.0}, mask), reps)
    ref = out["model_choose"]["median_us"]
    for key in ("place", "place_constrained", "advise"):
        out[f"{key}_over_model_choose"] = round(out[key]["median_us"] / ref, 2)
    answers = {lb.place(spec, [])[0], lb.advise(spec, {}, reports)[0]}
    out["answers_ok"] = answers == {"ok"}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("reports/bench"))
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    results = [bench_size(n, args.reps, args.seed) for n in SIZES]
    big = results[-1]
    report = {
        "benchmark": "load_balancer_decision",
        "machine": machine_facts(reps=args.reps, seed=args.seed),
        "sizes": results,
        "target": "a decision among 1,000 nodes well under 1 ms (place and advise, median)",
        "target_met": big["place"]["median_us"] < 1000 and big["advise"]["median_us"] < 1000,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "load_balancer.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    for r in results:
        print(
            f"{r['nodes']:>5} nodes: place {r['place']['median_us']} us "
            f"(constrained {r['place_constrained']['median_us']} us), "
            f"advise {r['advise']['median_us']} us, "
            f"model.choose {r['model_choose']['median_us']} us"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
