"""Warm restart of an agent node: seconds from `kill -9` + restart until it places as before.

1. End to end, on real OTP (the tests' harness: private epmd, one BEAM node running the
   application, the agent node as a child process with `--state-dir`): the load balancer is taught
   four node speeds by 40 `placement_outcome` calls, checkpoints (every 5 s), answers a 30-call
   `advise` sequence; the node is killed with kill -9 and started again, and the clock runs from
   the restart until the same sequence gets the same answers. Beside it, a cold restart (no saved
   state) in the same run: how its answers differ.
2. In-process: restoring learned states (1,000 nodes' speeds from 5,000 outcomes, 20 nodes x 1,000
   health reports, 10,000 failures) beside a cold setup of the same agents.

Writes DIR/warm_restart.json.   .venv/bin/python bench/bench_warm_restart.py --out reports/bench
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
for sub in ("interop", "agents", "e2e"):
    sys.path.insert(0, str(REPO / "tests" / sub))

from beam_app import COOKIE, connected_app_nodes  # noqa: E402
from e2e_cluster import AgentNodeProcess, connect, wait_for  # noqa: E402
from otp import Epmd, unique  # noqa: E402

from dspex_cluster import Atom  # noqa: E402
from dspex_cluster.cluster import FailureConfig, FailurePredictor, LoadBalancer  # noqa: E402
from dspex_cluster.cluster.health_monitor import HealthMonitor, NodeHealth  # noqa: E402
from dspex_cluster.cluster.warm import FileStateStore  # noqa: E402
from machine_facts import machine_facts  # noqa: E402

FAKE = [f"w{i}@h" for i in range(4)]
SPEEDS = (1.0, 3.0, 0.5, 2.0)


def advise_sequence(beam: Any, py: str, n: int = 30) -> list[str]:
    cands = ", ".join(
        f"#{{node => '{x}', kind => beam, status => up, cpu => {0.1 * i}}}"
        for i, x in enumerate(FAKE)
    )
    expr = (
        f"Cands = [{cands}], [element(2, gen_server:call({{dspex_load_balancer, '{py}'}}, "
        f"{{advise, #{{work => 0.5 + (K rem 5) * 0.5}}, [], Cands}}, 5000)) "
        f"|| K <- lists:seq(0, {n - 1})]"
    )
    return [str(a) for a in beam.eval(expr)]


def end_to_end(workdir: Path) -> dict[str, Any]:
    epmd = Epmd()
    try:
        with connected_app_nodes(epmd.port, ("wb",)) as beams:
            beam = beams[0]
            cookie = workdir / "cookie"
            cookie.write_text(COOKIE)
            cookie.chmod(0o600)
            state = workdir / "state"
            py = AgentNodeProcess(f"{unique('wpy')}@127.0.0.1", epmd.port, [beam.name], cookie)
            py.args += ["--state-dir", str(state)]
            py.start()
            try:
                connect(beams, py.name)
                calls = ", ".join(
                    f"gen_server:call({{dspex_load_balancer, '{py.name}'}}, {{placement_outcome, "
                    f"'{FAKE[k % 4]}', #{{work => 1.0}}, {round(1000 / SPEEDS[k % 4])}}})"
                    for k in range(40)
                )
                beam.eval(f"[{calls}], ok")

                def saved() -> bool:
                    f = next(state.glob("*/dspex_load_balancer.json"), None)
                    return f is not None and json.loads(f.read_text())["model"]["_obs"] == 40

                wait_for(saved, timeout=30.0)
                before = advise_sequence(beam, py.name)
                py.kill9()
                t0 = time.monotonic()
                py.start()
                started = time.monotonic() - t0
                connect(beams, py.name)
                wait_for(lambda: advise_sequence(beam, py.name) == before, timeout=60.0, every=0.1)
                warm_s = time.monotonic() - t0
                # cold: the same restart without the saved state
                py.stop()
                for f in state.glob("*/*.json"):
                    f.unlink()
                t0 = time.monotonic()
                py.start()
                connect(beams, py.name)
                cold = advise_sequence(beam, py.name)
                cold_s = time.monotonic() - t0
            finally:
                py.stop()
    finally:
        epmd.stop()
    return {
        "warm_seconds_until_same_placements": warm_s,
        "warm_process_start_s": started,
        "cold_restart_s_until_answering": cold_s,
        "cold_same_placements": cold == before,
        "cold_answers_differing": sum(a != b for a, b in zip(cold, before, strict=True)),
        "sequence_length": len(before),
    }


def in_process(workdir: Path) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    store = FileStateStore(workdir / "big")
    lb = LoadBalancer()
    lb.warm_store = store
    lb.setup()
    for _ in range(5_000):
        n = int(rng.integers(0, 1000))
        lb.outcome(Atom(f"n{n}@h"), {Atom("work"): 1.0}, 1000.0 / (0.5 + n / 1000))
    hm = HealthMonitor()
    hm.warm_store = store
    hm.setup()
    for k in range(20):
        h = hm.anomaly.nodes[Atom(f"n{k}@h")] = NodeHealth(["cpu", "memory"], hm.anomaly.policy)
        for _ in range(1000):
            h.update({"cpu": float(rng.uniform(0.2, 0.4)), "memory": 0.5})
    fp = FailurePredictor(FailureConfig())
    fp.warm_store = store
    fp.setup()
    wall = time.time()
    fp.first_seen = {Atom(f"n{k}@h"): wall - 86400.0 for k in range(100)}
    fp.failure_log = [
        (Atom(f"n{int(k)}@h"), float(t), float(t) + 60.0)
        for k, t in zip(
            rng.integers(0, 100, 10_000),
            np.sort(rng.uniform(wall - 86000, wall, 10_000)),
            strict=True,
        )
    ]
    out: dict[str, Any] = {}
    for name, agent, cls in (
        ("load_balancer_1000_nodes", lb, LoadBalancer),
        ("health_monitor_20x1000_reports", hm, HealthMonitor),
        ("failure_predictor_10000_failures", fp, lambda: FailurePredictor(FailureConfig())),
    ):
        agent._checkpoint.saved_version = None
        t0 = time.perf_counter()
        assert agent.checkpoint()
        save_s = time.perf_counter() - t0
        size = (store.directory / f"{agent.name}.json").stat().st_size
        fresh = cls()
        t0 = time.perf_counter()
        fresh.setup()
        cold_s = time.perf_counter() - t0
        warm = cls()
        warm.warm_store = store
        t0 = time.perf_counter()
        warm.setup()
        restore_s = time.perf_counter() - t0
        assert warm.restored
        out[name] = {
            "file_bytes": size,
            "save_s": save_s,
            "restore_s": restore_s,
            "cold_setup_s": cold_s,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "bench")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="warm-bench-") as tmp:
        e2e = end_to_end(Path(tmp))
        print("end to end", e2e, flush=True)
        local = in_process(Path(tmp))
        print("in process", local, flush=True)
    result = {
        "machine": machine_facts(),
        "end_to_end": e2e,
        "in_process": local,
        "targets": {
            "same_placements_within_a_few_seconds(<=5 s)": e2e["warm_seconds_until_same_placements"]
            <= 5.0,
        },
    }
    (args.out / "warm_restart.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result["targets"]))


if __name__ == "__main__":
    main()
