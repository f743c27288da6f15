"""The main job's report: a terminal summary, `report.json` and `report.html` (matplotlib figures
embedded as base64 PNGs, so the page is one self-contained file)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

HEADLINE = (
    ("tasks_completed", "tasks completed", ""),
    ("tasks_lost", "tasks lost", ""),
    ("prediction_lead_s", "failure predicted before the kill", " s"),
    ("prediction_after_degrade_s", "failure predicted after the degradation began", " s"),
    ("first_warning_lead_s", "first warning (p >= 0.3) before the kill", " s"),
    ("drain_lead_s", "drained before the kill", " s"),
    ("detection_ms", "kill detected by membership after", " ms"),
    ("detection_signal_ms", "cluster.node.down received here after", " ms"),
    ("replaced_after_drain", "agents re-placed by the drain", ""),
    ("replaced_after_kill", "agents re-placed after the kill", ""),
    ("services_moved", "service agents restarted elsewhere", ""),
    ("p50_learned_ms", "p50 latency, learned placement", " ms"),
    ("p50_fallback_ms", "p50 latency, BEAM heuristic", " ms"),
    ("p99_learned_ms", "p99 latency, learned placement", " ms"),
    ("p99_fallback_ms", "p99 latency, BEAM heuristic", " ms"),
)


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value}{unit}"


def print_summary(report: dict[str, Any], out: Path) -> None:
    print("\n=== DSPEx Cluster: report ===")
    for key, label, unit in HEADLINE:
        print(f"  {label:45s} {_fmt(report.get(key), unit)}")
    if report.get("false_drains"):
        print(f"  {'other nodes drained (false alarms)':45s} {', '.join(report['false_drains'])}")
    for label, s in report["phases"].items():
        print(
            f"  phase {label:9s} {s['completed']}/{s['tasks']} done, p50 {s['p50_ms']} ms, "
            f"p90 {s['p90_ms']} ms, p99 {s['p99_ms']} ms, placements {s['placements']}"
        )
    if report.get("advisor"):
        a, m = report["advisor"], report.get("model", {})
        print(
            f"  placements advised by Python: {a['advised']}, heuristic fallbacks: "
            f"{a['no_advice']} (timeouts {a['timeouts']}); model decision p50 "
            f"{m.get('decision_ms_p50')} ms, p99 {m.get('decision_ms_p99')} ms, "
            f"{m.get('outcomes')} outcomes learned"
        )
    if len(report.get("rounds", [])) > 2:
        for i, r in enumerate(report["rounds"]):
            print(f"    round {i + 1}: {r['phase']:9s} p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")
    print(f"  total {report['total_s']} s (startup {report['startup_s']} s)")
    print(f"  written: {out / 'report.json'}, {out / 'report.html'}")


def write_reports(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "report.html").write_text(render_html(report))


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def figures(report: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: list[tuple[str, str]] = []
    lat = report["latencies_ms"]

    # 1. latency percentiles, learned vs heuristic, same workload
    fig, ax = plt.subplots(figsize=(7, 3.6))
    qs = [50, 90, 99]
    labels = [p for p in ("learned", "fallback") if p in lat]
    for i, label in enumerate(labels):
        v = np.array([x for x in lat[label] if x is not None])
        if len(v):
            ax.bar(np.arange(3) + i * 0.38, np.percentile(v, qs), 0.38, label=label)
    ax.set_xticks(np.arange(3) + 0.19, [f"p{q}" for q in qs])
    ax.set_ylabel("task latency (ms)")
    ax.set_title("Same workload: learned placement vs the BEAM heuristic")
    ax.legend()
    out.append(("Task latency percentiles", _png(fig)))
    plt.close(fig)

    # 2. latency CDFs
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for label, values in lat.items():
        v = np.sort(np.array([x for x in values if x is not None]))
        if len(v):
            ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=label)
    ax.set_xscale("log")
    ax.set_xlabel("task latency (ms, log)")
    ax.set_ylabel("share of tasks")
    ax.legend()
    ax.grid(alpha=0.3)
    out.append(("Latency distribution per phase", _png(fig)))
    plt.close(fig)

    # 3. the degraded node over time: anomaly score, failure probability, marks
    samples = report["samples"]
    victim = report["victim"].split("@")[0].split("_")[0]
    t = [s["t"] for s in samples]
    killed = report["marks_s"].get("kill")

    def until_kill(values: list[float]) -> list[float]:
        # after the kill the agents only remember the dead node's last state
        if killed is None:
            return values
        return [v if at <= killed else np.nan for v, at in zip(values, t, strict=True)]

    fig, ax = plt.subplots(figsize=(9, 3.8))
    for node in sorted({n for s in samples for n in s["anomaly"]}):
        if node.startswith("b"):
            style = "-" if node == victim else ":"
            series = [s["anomaly"].get(node, np.nan) for s in samples]
            if node == victim:
                series = until_kill(series)
            ax.plot(t, series, style, label=f"anomaly {node}")
    ax.plot(
        t,
        until_kill([s["p_fail"].get(victim, np.nan) for s in samples]),
        "k-",
        lw=2,
        label=f"P(fail) {victim}",
    )
    for key, color in (
        ("degrade", "orange"),
        ("prediction", "red"),
        ("drain", "purple"),
        ("kill", "black"),
    ):
        at = report["marks_s"].get(key)
        if at is not None:
            ax.axvline(at, color=color, ls="--", lw=1)
            ax.text(at, 1.02, key, color=color, rotation=90, va="bottom", fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_xlabel("run time (s)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    out.append((f"{victim}: anomaly score and failure probability", _png(fig)))
    plt.close(fig)

    # 4. where the work went: placements per node per second
    fig, ax = plt.subplots(figsize=(9, 3.2))
    nodes = sorted({n for s in samples for n in s["placements"]})
    for n in nodes:
        counts = np.array([s["placements"].get(n, 0) for s in samples], dtype=float)
        phases = [s["phase"] for s in samples]
        # counters restart with each phase: per-second differences within a phase
        rate = np.diff(np.concatenate([[0.0], counts]))
        for i in range(1, len(rate)):
            if phases[i] != phases[i - 1]:
                rate[i] = counts[i]
        ax.plot(t, np.maximum(rate, 0), label=n)
    for key in ("degrade", "drain", "kill"):
        at = report["marks_s"].get(key)
        if at is not None:
            ax.axvline(at, color="k", ls="--", lw=1)
            ax.text(at, ax.get_ylim()[1], key, rotation=90, va="top", fontsize=8)
    ax.set_xlabel("run time (s)")
    ax.set_ylabel("placements per second")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    out.append(("Placements per node and second", _png(fig)))
    plt.close(fig)
    return out


def render_html(report: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(label)}</td>"
        f"<td><b>{html.escape(_fmt(report.get(k), u))}</b></td></tr>"
        for k, label, u in HEADLINE
    )
    phases = "".join(
        f"<tr><td>{html.escape(label)}</td><td>{s['completed']}/{s['tasks']}</td>"
        f"<td>{s['p50_ms']}</td><td>{s['p90_ms']}</td><td>{s['p99_ms']}</td>"
        f"<td>{html.escape(json.dumps(s['placements']))}</td>"
        f"<td>{html.escape(json.dumps(s['moves']))}</td></tr>"
        for label, s in report["phases"].items()
    )
    events = "".join(
        f"<tr><td>{e['t']:.1f} s</td><td>{html.escape(e['text'])}</td></tr>"
        for e in report["events"]
    )
    figs = "".join(
        f"<h3>{html.escape(title)}</h3><img src='data:image/png;base64,{png}'>"
        for title, png in figures(report)
    )
    m = report["machine"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>DSPEx Cluster report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}td,th{{padding:2px 10px;
text-align:left}}table{{border-collapse:collapse}}tr:nth-child(even){{background:#f3f3f3}}</style>
</head><body><h1>DSPEx Cluster — main job report</h1>
<p>Three BEAM nodes and one Python agent node on one machine ({html.escape(m["cpu"])},
{m["cores"]} cores), {m["date"]}. Victim node: {html.escape(report["victim"])}.
Total {report["total_s"]} s.</p>
<table>{rows}</table>
<h2>Phases</h2><table><tr><th>phase</th><th>done</th><th>p50 ms</th><th>p90 ms</th>
<th>p99 ms</th><th>placements</th><th>re-placed</th></tr>{phases}</table>
<h2>Figures</h2>{figs}
<h2>Events</h2><table>{events}</table>
</body></html>"""
