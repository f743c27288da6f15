"""The main job, step by step (see the package docstring).

1. A private epmd, three BEAM nodes (`beam/bin/dspex-node`, one scheduler each, health and load
   reports every 500 ms), one Python agent node (`agent-node`), and this process as a hidden
   control node that subscribes to the cluster's signals through a BEAM relay.
2. **learned**: a workload of tasks with uneven costs (open-loop Poisson arrivals, log-normal
   costs) driven by `DSPEx.Clustering.Workload` on b1: every task is placed through
   `LoadBalancer.place/2`, whose default advisor asks the Python `dspex_load_balancer`; each task
   burns CPU on its node and its run time goes back to the model as a placement outcome.
3. **fallback**: the same workload (same arrivals and costs), placed by the BEAM heuristic alone.
4. **degrade**: the workload again (learned); b3 gets CPU hogs and a growing memory footprint,
   and later `kill -9`. We watch the anomaly score, the failure prediction, the drain (its agents
   restarted elsewhere), the kill, its detection and the re-placement of what ran there.

Everything started is stopped by PID at the end, on an error and on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dspex_cluster.agents import ClusterBus
from dspex_cluster.etf import Atom
from dspex_cluster.runtime import Node, Process
from dspex_cluster.showcase.processes import LocalCluster, free_port
from dspex_cluster.signals import Signal

EX = "Elixir.DSPEx.Clustering"
WORKLOAD = f"{EX}.Workload"
PYTHON_ADVISOR = Atom(f"{EX}.PythonAdvisor")
WATCHED = (
    "cluster.node.*",
    "cluster.health.anomaly",
    "cluster.health.alert",
    "cluster.failure.predicted",
    "cluster.rebalance.request",
)


@dataclass
class Timeline:
    """Phase lengths and the workload's shape (seconds unless named otherwise)."""

    phase_s: float = 30.0  # learned and fallback phases, each
    rounds: int = 2  # learned and fallback alternate in this many rounds (same plan per round)
    degrade_phase_s: float = 45.0
    degrade_at_s: float = 5.0  # into the degrade phase
    kill_at_s: float = 30.0  # into the degrade phase
    rate_per_s: float = 12.0
    median_cost_ms: float = 35.0
    cost_sigma: float = 0.9
    max_cost_ms: float = 800.0
    settle_s: float = 25.0  # the longest wait for a phase's last tasks
    hogs: int = 2
    hog_duty: float = 0.4  # the nodes share this host's cores: a full hog slows everyone
    services: int = 6  # long-running agents placed in the degrade phase
    leak_mb_per_s: float = 10.0
    drain_probability: float = 0.5  # the BEAM Drain's threshold (Config default)
    seed: int = 7

    @classmethod
    def quick(cls) -> Timeline:
        return cls(
            phase_s=6.0,
            rounds=1,
            degrade_phase_s=16.0,
            degrade_at_s=2.0,
            kill_at_s=11.0,
            settle_s=25.0,
        )

    @classmethod
    def scaled(cls, phase_s: float) -> Timeline:
        """Phases of `phase_s`; the degrade phase keeps its shape, stretched alike."""
        k = phase_s / 30.0
        return cls(
            phase_s=phase_s,
            degrade_phase_s=max(45.0 * k, 20.0),
            degrade_at_s=max(5.0 * k, 2.0),
            kill_at_s=max(30.0 * k, 14.0),
        )


def make_plan(
    t: Timeline, duration_s: float, prefix: str, round_: int = 0
) -> list[tuple[int, str, float]]:
    """`{offset_ms, id, cost_ms}` tasks: Poisson arrivals, log-normal costs; the same duration
    and round give the same arrivals and costs whatever the prefix."""
    rng = np.random.default_rng([t.seed, int(duration_s * 1000), round_])
    n = int(rng.poisson(t.rate_per_s * duration_s))
    offsets = np.sort(rng.uniform(0.0, duration_s * 1000.0, n))
    costs = np.clip(rng.lognormal(np.log(t.median_cost_ms), t.cost_sigma, n), 5.0, t.max_cost_ms)
    return [
        (int(o), f"{prefix}-{i:05d}", round(float(c), 2))
        for i, (o, c) in enumerate(zip(offsets, costs, strict=True))
    ]


class SignalSink(Process):
    """Keeps every signal it is sent, with its arrival time (monotonic)."""

    def __init__(self) -> None:
        self.signals: list[tuple[float, Signal]] = []

    async def run(self) -> None:
        while True:
            message = await self.receive()
            if isinstance(message, tuple) and len(message) == 2 and message[0] == "signal":
                with contextlib.suppress(Exception):
                    self.signals.append((time.monotonic(), Signal.from_term(message[1])))


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _short(node: Any) -> str:
    return _s(node).split("@")[0].split("_")[0]


@dataclass
class PhaseResult:
    label: str
    tasks: list[dict[str, Any]]
    placements: dict[str, int]
    moves: dict[str, int]
    wall_s: float

    def latencies(self) -> np.ndarray:
        return np.array([t["latency_ms"] for t in self.tasks if t["latency_ms"] is not None])

    def summary(self) -> dict[str, Any]:
        lat = self.latencies()
        done = int(len(lat))

        def pct(q: float) -> float | None:
            return round(float(np.percentile(lat, q)), 1) if done else None

        return {
            "tasks": len(self.tasks),
            "completed": done,
            "lost": len(self.tasks) - done,
            "p50_ms": pct(50),
            "p90_ms": pct(90),
            "p99_ms": pct(99),
            "mean_ms": round(float(lat.mean()), 1) if done else None,
            "placements": self.placements,
            "moves": self.moves,
            "wall_s": round(self.wall_s, 1),
        }


@dataclass
class Watch:
    """What the status lines and the report follow over time."""

    t0: float = field(default_factory=time.monotonic)
    samples: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    seen: int = 0  # signals already looked at

    def at(self) -> float:
        return round(time.monotonic() - self.t0, 2)

    def event(self, kind: str, text: str, at: float | None = None, **data: Any) -> None:
        t = self.at() if at is None else round(at - self.t0, 2)
        self.events.append({"t": t, "kind": kind, "text": text, **data})
        print(f"[{t:6.1f}s] >> {text}", flush=True)


class Platform:
    def __init__(
        self,
        timeline: Timeline,
        out: Path,
        log: Callable[[str], None] = print,
        dashboard_port: int | None = None,
    ) -> None:
        self.t = timeline
        self.out = out
        self.log = log
        self.cluster = LocalCluster(out / "logs")
        port = self.cluster.epmd_port
        self.beams = [f"b{i}_{port}@127.0.0.1" for i in (1, 2, 3)]
        self.py = f"py1_{port}@127.0.0.1"
        # the live dashboard (on the agent node) and every node's /metrics
        self.dashboard_port = dashboard_port or free_port()
        self.metrics_ports = {n: free_port() for n in [*self.beams, self.py]}
        self.victim = self.beams[2]
        self.ctl: Node | None = None
        self.bus: ClusterBus | None = None
        self.sink = SignalSink()
        self.watch = Watch()
        self.phases: list[PhaseResult] = []
        self.marks: dict[str, float] = {}  # event -> monotonic time
        self.first: dict[str, Any] = {}
        self.false_drains: list[tuple[float, str]] = []  # (run time, node)
        self.services: dict[str, str] = {}  # service agent id -> node
        self.drained_now: set[str] = set()
        self.moved_services = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        c = self.cluster
        cookie = secrets.token_hex(16)
        c.write_cookie(cookie)
        self.log(f"epmd on private port {c.epmd_port}; logs in {c.workdir}")
        self.log(f"live dashboard: http://127.0.0.1:{self.dashboard_port}/ (once the agents run)")
        self.log(
            "metrics: "
            + ", ".join(f"{_short(n)} :{p}/metrics" for n, p in self.metrics_ports.items())
        )
        c.start_epmd()
        await asyncio.to_thread(c.compile_beam)
        opts = "+S 1:1 -dspex_cluster health_interval_ms 500 -dspex_cluster load_interval_ms 500"
        for b in self.beams:
            c.start_beam(b, opts, extra=["--metrics-port", str(self.metrics_ports[b])])
        self.ctl = Node(f"ctl_{c.epmd_port}@127.0.0.1", cookie, epmd_port=c.epmd_port)
        await self.ctl.start()
        for b in self.beams:
            pid = await self._until(lambda b=b: self._app_pid(b), 90, f"BEAM node {b}")
            c.children[b].os_pid = pid
            self.log(f"BEAM node {b} up (OS pid {pid})")
        for i, a in enumerate(self.beams):
            for b in self.beams[i + 1 :]:
                await self.rpc(a, "net_kernel", "connect_node", [Atom(b)])
        ops = ["--dashboard-port", str(self.dashboard_port)]
        ops += ["--metrics-port", str(self.metrics_ports[self.py])]
        agent_log = c.start_agent_node(self.py, self.beams[:2], ops).log_path
        # its own "up" line first: calling a node not yet in epmd only makes noise
        await self._until(
            lambda: self._says(agent_log, "up with the clustering agents"),
            60,
            f"Python agent node {self.py}",
        )
        await self._until(self._agents_ready, 30, f"the agents on {self.py}")
        for b in self.beams:  # hidden nodes do not mesh: every BEAM node dials the Python node
            await self.rpc(b, "net_kernel", "connect_node", [Atom(self.py)])
        self.log(f"Python agent node {self.py} up: the four clustering agents answer")
        self.bus = ClusterBus(self.ctl, self.beams[:2])
        self.bus.start()
        pid = await self.ctl.spawn(self.sink)
        for pattern in WATCHED:
            await self.bus.subscribe(pid, pattern)
        await self.bus.wait_relay(10)
        await self._until(self._advisor_sees_python, 20, "b1's PythonAdvisor to see py1")
        await self._until(self._reports_fresh, 20, "load reports from every BEAM node")
        self.watch = Watch()  # the clock of the run starts here

    async def stop(self) -> None:
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await self.bus.stop()
        if self.ctl is not None:
            with contextlib.suppress(Exception):
                await self.ctl.stop()
        await asyncio.to_thread(self.cluster.stop_all)

    # -- calls ---------------------------------------------------------------------------------

    async def rpc(self, node: str, mod: str, fun: str, args: list[Any], timeout: float = 5) -> Any:
        assert self.ctl is not None
        return await self.ctl.rpc(Atom(node), mod, fun, args, timeout=timeout)

    async def agent_call(self, name: str, request: Any, timeout: float = 2.0) -> Any:
        assert self.ctl is not None
        return await self.ctl.call((Atom(name), Atom(self.py)), request, timeout=timeout)

    async def _until(self, probe: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(Exception):
                result = await probe()
                if result:
                    return result
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}; see {self.cluster.workdir}")
            await asyncio.sleep(0.25)

    @staticmethod
    async def _says(log: Path, text: str) -> bool:
        return text in log.read_text(errors="replace")

    async def _app_pid(self, beam: str) -> int | None:
        placement = await self.rpc(beam, "erlang", "whereis", [Atom("dspex_agent_placement")])
        if placement == "undefined":
            return None
        return int(_s(bytes(await self.rpc(beam, "os", "getpid", []))))

    async def _agents_ready(self) -> bool:
        stats = await self.agent_call("dspex_load_balancer", Atom("stats"))
        return isinstance(stats, dict)

    async def _advisor_sees_python(self) -> bool:
        nodes = await self.rpc(self.beams[0], f"{EX}.PythonAdvisor", "agent_nodes", [])
        return Atom(self.py) in nodes

    async def _reports_fresh(self) -> bool:
        cands = await self.rpc(self.beams[0], f"{EX}.LoadBalancer", "candidates", [])
        fresh = {c[Atom("node")] for c in cands if Atom("cpu") in c}
        return all(Atom(b) in fresh for b in self.beams)

    # -- phases --------------------------------------------------------------------------------

    async def run_phase(
        self,
        label: str,
        duration_s: float,
        learned: bool,
        actions: dict[float, Callable[[], Any]] | None = None,
        round_: int = 0,
    ) -> PhaseResult:
        plan = make_plan(self.t, duration_s, f"{label[0].upper()}{round_}", round_)
        opts: list[tuple[Atom, Any]] = [(Atom("advisors"), [PYTHON_ADVISOR] if learned else [])]
        per_ms = self.first.get("iterations_per_ms")
        if per_ms:
            opts.append((Atom("iterations_per_ms"), per_ms))
        how = "learned placement (Python advisor)" if learned else "BEAM heuristic only"
        self.watch.event(
            "phase", f"phase {label}: {len(plan)} tasks over {duration_s:.0f} s, {how}"
        )
        started = time.monotonic()
        ok, run = await self.rpc(self.beams[0], WORKLOAD, "start", [plan, opts])
        assert ok == "ok", run
        pending = dict(sorted((actions or {}).items()))
        status: dict[Any, Any] = {}
        try:
            while True:
                await asyncio.sleep(1.0)
                elapsed = time.monotonic() - started
                for at in [a for a in pending if a <= elapsed]:
                    await pending.pop(at)()
                status = await self.rpc(self.beams[0], WORKLOAD, "status", [run])
                await self.sample(label, status)
                done = status[Atom("completed")] >= len(plan) and not pending
                if (elapsed >= duration_s and done) or elapsed > duration_s + self.t.settle_s:
                    break
            tasks = await self.rpc(self.beams[0], WORKLOAD, "results", [run], timeout=30)
        finally:
            with contextlib.suppress(Exception):
                await self.rpc(self.beams[0], WORKLOAD, "stop", [run])
        result = PhaseResult(
            label,
            [_task(t) for t in tasks],
            {_short(k): int(v) for k, v in status.get(Atom("placements"), {}).items()},
            {_s(k): int(v) for k, v in status.get(Atom("moves"), {}).items()},
            time.monotonic() - started,
        )
        s = result.summary()
        self.watch.event(
            "phase_done",
            f"phase {label} done: {s['completed']}/{s['tasks']} tasks, "
            f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, placements {s['placements']}",
        )
        self.phases.append(result)
        return result

    async def sample(self, label: str, status: dict[Any, Any]) -> None:
        """One status line, plus event lines for what the signals say happened."""
        scores, preds, drained, advisor = {}, {}, {}, {}
        with contextlib.suppress(Exception):
            scores = await self.agent_call("dspex_health_monitor", Atom("scores"))
        with contextlib.suppress(Exception):
            preds = await self.agent_call("dspex_failure_predictor", Atom("predictions"))
        with contextlib.suppress(Exception):
            drained = await self.rpc(self.beams[0], f"{EX}.Drain", "info", [], timeout=2)
        with contextlib.suppress(Exception):
            advisor = await self.rpc(self.beams[0], f"{EX}.PythonAdvisor", "stats", [], timeout=2)
        self._scan_signals()
        self._note_drains(drained)
        services: dict[str, int] = {}
        if self.services:
            with contextlib.suppress(Exception):
                services = await self.follow_services()
        sample = {
            "t": self.watch.at(),
            "phase": label,
            "completed": int(status[Atom("completed")]),
            "arrived": int(status[Atom("arrived")]),
            "placements": {_short(k): int(v) for k, v in status[Atom("placements")].items()},
            "running": {_short(k): int(v) for k, v in status[Atom("running")].items()},
            "moves": {_s(k): int(v) for k, v in status[Atom("moves")].items()},
            "anomaly": {_short(k): float(v[Atom("score")]) for k, v in scores.items()},
            "p_fail": {_short(k): float(v[Atom("probability")]) for k, v in preds.items()},
            "drained": sorted(_short(n) for n in drained),
            "advised": int(advisor.get(Atom("advised"), 0)),
            "no_advice": int(advisor.get(Atom("no_advice"), 0)),
            "services": services,
        }
        self.watch.samples.append(sample)
        beams = [_short(b) for b in self.beams]
        placed = " ".join(f"{b}:{sample['placements'].get(b, 0)}" for b in beams)
        running = " ".join(f"{b}:{sample['running'].get(b, 0)}" for b in beams)
        anomaly = " ".join(f"{b}:{sample['anomaly'].get(b, 0.0):.2f}" for b in beams)
        pfail = " ".join(f"{b}:{sample['p_fail'].get(b, 0.0):.2f}" for b in beams)
        moves = ",".join(f"{k}:{v}" for k, v in sample["moves"].items()) or "0"
        if services:
            moves += " | services " + " ".join(f"{b}:{services.get(b, 0)}" for b in beams)
        print(
            f"[{sample['t']:6.1f}s] {label:8s} "
            f"done {sample['completed']:4d}/{sample['arrived']:<4d}"
            f" | placed {placed} | running {running} | anomaly {anomaly} | P(fail) {pfail}"
            f" | drained {','.join(sample['drained']) or '-'} | re-placed {moves}",
            flush=True,
        )

    def _scan_signals(self) -> None:
        new = self.sink.signals[self.watch.seen :]
        self.watch.seen += len(new)
        victim = Atom(self.victim)
        degraded = self.marks.get("degrade", float("inf"))
        for at, s in new:
            node = s.get("node")
            if node == victim and at < degraded and s.type != "cluster.node.down":
                continue
            if s.type == "cluster.failure.predicted" and node == victim:
                p = float(s.get("probability") or 0.0)
                ttf = s.get("time_to_failure_s")
                key = "prediction" if p >= self.t.drain_probability else "early_prediction"
                if key not in self.marks and "kill" not in self.marks:
                    self.marks[key] = at
                    self.marks.setdefault("early_prediction", at)
                    reasons = s.get("reasons") or {}
                    top = sorted(reasons.items(), key=lambda kv: -kv[1])[:3]
                    why = ", ".join(f"{_s(k)} {v:.2f}" for k, v in top)
                    when = f", expected in {ttf:.0f} s" if isinstance(ttf, float) else ""
                    self.watch.event(
                        key,
                        f"failure predicted for {_short(victim)}: p={p:.2f}{when} ({why})",
                        at=at,
                        probability=p,
                    )
            elif s.type == "cluster.health.anomaly" and node == victim:
                if "anomaly" not in self.marks:
                    self.marks["anomaly"] = at
                    score = float(s.get("score") or 0.0)
                    feats = ", ".join(_s(k) for k in (s.get("features") or {}))
                    self.watch.event(
                        "anomaly",
                        f"anomaly on {_short(victim)}: score {score:.2f} ({feats})",
                        at=at,
                        score=score,
                    )
            elif s.type == "cluster.node.down" and node == victim and "kill" in self.marks:
                if "down_signal" not in self.marks:
                    self.marks["down_signal"] = at
                    ms = (at - self.marks["kill"]) * 1000
                    self.watch.event(
                        "down", f"{_short(victim)} down signal here {ms:.0f} ms after kill", at=at
                    )
            elif s.type == "cluster.health.anomaly" and isinstance(node, str):
                self.first.setdefault("other_anomalies", []).append(
                    (round(at - self.watch.t0, 2), _short(node), float(s.get("score") or 0.0))
                )

    def _note_drains(self, drained: dict[Any, Any]) -> None:
        now_drained = {_s(n) for n in drained}
        for gone in self.drained_now - now_drained:
            self.watch.event("undrain", f"{_short(gone)} back in service")
        self.drained_now = now_drained
        for node, info in drained.items():
            key = f"drain:{_s(node)}:{info.get(Atom('since'))}"
            if key in self.marks:
                continue
            self.marks[key] = time.monotonic()
            why = _s(info.get(Atom("reason"), "?"))
            if node == Atom(self.victim) and "degrade" in self.marks:
                self.marks.setdefault("drain", self.marks[key])
            else:
                self.false_drains.append((self.watch.at(), _short(node)))
            self.watch.event(
                "drain", f"{_short(node)} drained ({why}): no new work, its agents re-placed"
            )

    # -- long-running service agents (what a drain has to move) ------------------------------

    async def start_services(self) -> None:
        per_ms = self.first["iterations_per_ms"]
        start = (Atom(WORKLOAD), Atom("start_service"), [int(3 * per_ms), 200])
        for i in range(self.t.services):
            spec = {Atom("id"): f"svc-{i + 1}", Atom("work"): 0.05, Atom("start"): start}
            reply = await self.rpc(self.beams[0], f"{EX}.AgentPlacement", "start_agent", [spec, []])
            if reply[0] == "ok":
                self.services[f"svc-{i + 1}"] = _short(reply[1])
        where = ", ".join(f"{k}@{v}" for k, v in self.services.items())
        self.watch.event("services", f"{len(self.services)} long-running service agents: {where}")

    async def follow_services(self) -> dict[str, int]:
        agents = await self.rpc(self.beams[0], f"{EX}.AgentPlacement", "agents", [], timeout=2)
        for key, info in agents.items():
            sid = _s(key)
            if sid in self.services and info[Atom("node")] not in (None, "nil"):
                now = _short(info[Atom("node")])
                if now != self.services[sid]:
                    self.moved_services += 1
                    self.watch.event(
                        "moved", f"service {sid} restarted on {now} (was on {self.services[sid]})"
                    )
                    self.services[sid] = now
        counts: dict[str, int] = {}
        for node in self.services.values():
            counts[node] = counts.get(node, 0) + 1
        return counts

    async def stop_services(self) -> None:
        for sid in list(self.services):
            with contextlib.suppress(Exception):
                await self.rpc(self.beams[0], f"{EX}.AgentPlacement", "stop_agent", [sid])
        self.services.clear()

    # -- fault injection -----------------------------------------------------------------------

    async def degrade(self) -> None:
        opts = [
            (Atom("hogs"), self.t.hogs),
            (Atom("duty"), self.t.hog_duty),
            (Atom("leak_mb_per_s"), self.t.leak_mb_per_s),
        ]
        self.marks["degrade"] = time.monotonic()
        await self.rpc(self.victim, f"{EX}.Degrader", "start", [opts])
        self.watch.event(
            "degrade",
            f"degrading {_short(self.victim)}: {self.t.hogs} CPU hogs "
            f"({self.t.hog_duty:.0%} busy each), "
            f"memory +{self.t.leak_mb_per_s:.0f} MB/s",
        )

    async def kill(self) -> None:
        self.kill_wall_ms = time.time() * 1000
        pid = self.cluster.kill9(self.victim)
        self.marks["kill"] = time.monotonic()
        self.watch.event("kill", f"kill -9 {_short(self.victim)} (OS pid {pid})")
        await self._until(self._victim_down_on_b1, 30, "b1 to see the victim down")

    async def _victim_down_on_b1(self) -> bool:
        members = await self.rpc(self.beams[0], EX, "members", [])
        for m in members:
            if m[Atom("node")] == Atom(self.victim) and m[Atom("status")] == "down":
                detected = float(m[Atom("since")]) - self.kill_wall_ms
                self.first["detection_ms"] = round(detected, 1)
                self.watch.event(
                    "detected", f"b1 membership: {_short(self.victim)} down, {detected:.0f} ms"
                )
                return True
        return False

    # -- the whole run -------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        wall0 = time.monotonic()
        await self.start()
        per_ms = await self.rpc(self.beams[0], WORKLOAD, "calibrate", [], timeout=30)
        self.first["iterations_per_ms"] = float(per_ms)
        self.startup_s = time.monotonic() - wall0
        self.log(f"cluster ready in {self.startup_s:.1f} s; CPU burn: {per_ms:.0f} loop/ms")
        # alternating rounds: a change in the host's load hits both placements alike
        share = self.t.phase_s / self.t.rounds
        for r in range(self.t.rounds):
            await self.run_phase("learned", share, learned=True, round_=r)
            await self.run_phase("fallback", share, learned=False, round_=r)
        await self.start_services()
        await self.run_phase(
            "degrade",
            self.t.degrade_phase_s,
            learned=True,
            actions={self.t.degrade_at_s: self.degrade, self.t.kill_at_s: self.kill},
        )
        await self.stop_services()
        await asyncio.sleep(0.5)
        self._scan_signals()
        await self._placement_stats()
        self.total_s = time.monotonic() - wall0
        return self.report()

    async def _placement_stats(self) -> None:
        """How the placements were decided: the advisor's counters on b1, the model's own
        decision time (inside the Python agent)."""
        with contextlib.suppress(Exception):
            a = await self.rpc(self.beams[0], f"{EX}.PythonAdvisor", "stats", [], timeout=2)
            keys = ("advised", "no_advice", "timeouts", "failed_calls")
            self.first["advisor"] = {k: int(a.get(Atom(k), 0)) for k in keys}
        with contextlib.suppress(Exception):
            st = await self.agent_call("dspex_load_balancer", Atom("stats"))
            self.first["model"] = {
                k: st.get(Atom(k))
                for k in ("placements", "outcomes", "decision_ms_p50", "decision_ms_p99")
            }

    def merged(self) -> dict[str, PhaseResult]:
        """The rounds of each phase as one."""
        out: dict[str, PhaseResult] = {}
        for p in self.phases:
            q = out.get(p.label)
            out[p.label] = (
                p
                if q is None
                else PhaseResult(
                    p.label,
                    q.tasks + p.tasks,
                    _add(q.placements, p.placements),
                    _add(q.moves, p.moves),
                    q.wall_s + p.wall_s,
                )
            )
        return out

    def report(self) -> dict[str, Any]:
        by = self.merged()
        sums = {label: p.summary() for label, p in by.items()}
        submitted = sum(s["tasks"] for s in sums.values())
        completed = sum(s["completed"] for s in sums.values())
        m = self.marks

        def rel(key: str) -> float | None:
            return round(m[key] - self.watch.t0, 2) if key in m else None

        lead = round(m["kill"] - m["prediction"], 2) if "prediction" in m and "kill" in m else None
        early = (
            round(m["kill"] - m["early_prediction"], 2)
            if "early_prediction" in m and "kill" in m
            else None
        )
        degrade = by.get("degrade")
        return {
            "tasks_completed": completed,
            "tasks_submitted": submitted,
            "tasks_lost": submitted - completed,
            "prediction_lead_s": lead,
            "first_warning_lead_s": early,
            "prediction_after_degrade_s": (
                round(m["prediction"] - m["degrade"], 2)
                if "prediction" in m and "degrade" in m
                else None
            ),
            "drain_lead_s": round(m["kill"] - m["drain"], 2)
            if "drain" in m and "kill" in m
            else None,
            "detection_ms": self.first.get("detection_ms"),
            "detection_signal_ms": (
                round((m["down_signal"] - m["kill"]) * 1000, 1) if "down_signal" in m else None
            ),
            "p50_learned_ms": sums.get("learned", {}).get("p50_ms"),
            "p99_learned_ms": sums.get("learned", {}).get("p99_ms"),
            "p50_fallback_ms": sums.get("fallback", {}).get("p50_ms"),
            "p99_fallback_ms": sums.get("fallback", {}).get("p99_ms"),
            "replaced_after_drain": degrade.moves.get("predicted_failure", 0) if degrade else 0,
            "replaced_after_kill": degrade.moves.get("node_down", 0) if degrade else 0,
            "services_moved": self.moved_services,
            "advisor": self.first.get("advisor", {}),
            "model": self.first.get("model", {}),
            "false_drains": [f"{n} at {t:.1f} s" for t, n in self.false_drains],
            "victim": self.victim,
            "marks_s": {k: rel(k) for k in m},
            "phases": sums,
            "rounds": [{"phase": p.label, **p.summary()} for p in self.phases],
            "timeline": asdict(self.t),
            "events": self.watch.events,
            "samples": self.watch.samples,
            "latencies_ms": {k: [t["latency_ms"] for t in p.tasks] for k, p in by.items()},
            "costs_ms": {k: [t["cost_ms"] for t in p.tasks] for k, p in by.items()},
            "other_anomalies": self.first.get("other_anomalies", []),
            "startup_s": round(getattr(self, "startup_s", 0.0), 1),
            "total_s": round(getattr(self, "total_s", 0.0), 1),
            "machine": machine_facts(),
        }


def _add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}


def _task(t: dict[Any, Any]) -> dict[str, Any]:
    return {
        "id": _s(t[Atom("id")]),
        "cost_ms": float(t[Atom("cost_ms")]),
        "arrived_ms": float(t[Atom("arrived_ms")]),
        "latency_ms": None
        if t[Atom("latency_ms")] in (None, "nil")
        else float(t[Atom("latency_ms")]),
        "node": _short(t[Atom("node")]) if t[Atom("node")] not in (None, "nil") else None,
        "moves": int(t[Atom("moves")]),
    }


def machine_facts() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import os

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def run_platform(
    quick: bool = False,
    duration_s: float | None = None,
    out: str | Path = "reports/latest",
    dashboard_port: int | None = None,
) -> int:
    """The `platform` command: run, print the report, write report.json and report.html.
    Returns 0 when nothing was lost."""
    from dspex_cluster.showcase.report import print_summary, write_reports

    timeline = Timeline.quick() if quick else Timeline()
    if duration_s is not None:
        timeline = Timeline.scaled(duration_s)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plat = Platform(timeline, out, dashboard_port=dashboard_port)

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        assert me is not None
        loop.add_signal_handler(signal.SIGTERM, me.cancel)
        try:
            return await plat.run()
        finally:
            await plat.stop()

    try:
        report = asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        plat.cluster.stop_all()
        print("interrupted: every process stopped", file=sys.stderr)
        return 130
    finally:
        plat.cluster.stop_all()  # idempotent: nothing left if stop() ran
    write_reports(report, out)
    print_summary(report, out)
    return 0 if report["tasks_lost"] == 0 else 1
