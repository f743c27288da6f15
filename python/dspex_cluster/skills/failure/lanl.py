"""The LANL HPC failure records (1996-2005) as arrays, and the node-day grid the benchmark scores.

The CSV has one row per failure. Its dates come in two shapes, an artefact of a spreadsheet:
`Prob Started`/`Prob Fixed` are `M/D/YYYY H:MM`, while the per-node `node install|prod|decom`
columns are month-level and either `Mon-YY` (`Nov-96` = Nov 1996) or `Y-Mon` (`2-Mar` = Mar 2002:
the year 200Y came out as a day), or the words `before tracking` / `current`.

Choices made here (they define the benchmark population; see `load_lanl`):
- a node is (system, `nodenum`); `nodenumz` is a renumbering with one inconsistent row, so unused;
- system 17 has no node or date metadata at all and is left out;
- a node is in production from the first day of its `node prod` month to the last day of its
  `node decom` month (`current` = end of the records), clipped to the records' span; `before
  tracking` means from the system's first recorded failure day;
- a system lists N nodes but only the failing ones appear; the others are real nodes that never
  failed, added as anonymous nodes with the system's most common production period.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

_MONTH_NAMES = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
_MONTHS = {m: i + 1 for i, m in enumerate(_MONTH_NAMES)}
_EPOCH = datetime(1970, 1, 1)
DAY_S = 86400.0


def parse_event_time(text: str) -> float:
    """`6/21/2005 10:54` -> seconds since 1970 (the records carry no zone; treated as UTC)."""
    return (datetime.strptime(text.strip(), "%m/%d/%Y %H:%M") - _EPOCH).total_seconds()


def parse_month(text: str) -> tuple[int, int] | None:
    """`Nov-96` or `2-Mar` -> (year, month); `before tracking`, `current`, `` -> None."""
    text = text.strip()
    if "-" not in text:
        return None
    left, right = text.split("-", 1)
    if left in _MONTHS:  # Mon-YY
        yy = int(right)
        return (1900 + yy if yy >= 50 else 2000 + yy), _MONTHS[left]
    if right in _MONTHS:  # Y-Mon, the year 200Y mangled into a day number
        return 2000 + int(left), _MONTHS[right]
    raise ValueError(f"unrecognised month {text!r}")


def _month_start_s(year: int, month: int) -> float:
    return (datetime(year, month, 1) - _EPOCH).total_seconds()


def _month_end_s(year: int, month: int) -> float:
    nxt = datetime(year + (month == 12), month % 12 + 1, 1)
    return (nxt - _EPOCH).total_seconds()


@dataclass(frozen=True)
class LanlNodes:
    """Every node of the kept systems, failing or not, and every failure, as flat arrays."""

    system: np.ndarray  # (n_nodes,) int system id
    node_label: list[str]  # "sys/nodenum", or "sys/unlisted-k" for nodes that never failed
    prod_start_s: np.ndarray  # (n_nodes,) start of production (s since 1970)
    prod_end_s: np.ndarray  # (n_nodes,) end of production, exclusive
    fail_node: np.ndarray  # (n_failures,) index into the node arrays
    fail_start_s: np.ndarray  # (n_failures,) `Prob Started`, sorted by (node, time)
    fail_end_s: np.ndarray  # (n_failures,) `Prob Fixed`
    records_end_s: float  # midnight after the last recorded failure

    @property
    def n_nodes(self) -> int:
        return int(self.system.size)


def load_lanl(path: Path | str, systems: set[int] | None = None) -> LanlNodes:
    """Read the CSV into `LanlNodes` (see the module docstring for the choices made)."""
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["nodenum"].strip() != ""]
    if systems is not None:
        rows = [r for r in rows if int(r["System"]) in systems]
    starts = np.array([parse_event_time(r["Prob Started"]) for r in rows])
    ends = np.array([parse_event_time(r["Prob Fixed"]) for r in rows])
    records_end = (np.floor(starts.max() / DAY_S) + 1.0) * DAY_S  # midnight after the last record

    first_fail_of_system: dict[int, float] = {}
    for r, t in zip(rows, starts, strict=True):
        s = int(r["System"])
        first_fail_of_system[s] = min(first_fail_of_system.get(s, np.inf), t)

    def period(sys_id: int, prod: str, decom: str) -> tuple[float, float]:
        p = parse_month(prod)
        d = parse_month(decom)
        day0 = first_fail_of_system[sys_id] - first_fail_of_system[sys_id] % DAY_S
        start = _month_start_s(*p) if p else day0
        end = min(_month_end_s(*d), records_end) if d else records_end
        return start, end

    node_index: dict[tuple[int, str], int] = {}
    system: list[int] = []
    labels: list[str] = []
    pstart: list[float] = []
    pend: list[float] = []
    periods_seen: dict[int, dict[tuple[str, str], int]] = {}
    listed_size: dict[int, int] = {}
    fail_node = np.empty(len(rows), dtype=np.int64)
    for i, r in enumerate(rows):
        s = int(r["System"])
        key = (s, r["nodenum"].strip())
        if key not in node_index:
            node_index[key] = len(system)
            system.append(s)
            labels.append(f"{s}/{key[1]}")
            a, b = period(s, r["node prod"], r["node decom"])
            pstart.append(a)
            pend.append(b)
            cohort = (r["node prod"], r["node decom"])
            periods_seen.setdefault(s, {})
            periods_seen[s][cohort] = periods_seen[s].get(cohort, 0) + 1
            listed_size[s] = int(r["nodes"])
        fail_node[i] = node_index[key]

    # Nodes that never failed: the system lists more nodes than appear in the records.
    for s in sorted(listed_size):
        missing = listed_size[s] - sum(periods_seen[s].values())
        prod, decom = max(periods_seen[s].items(), key=lambda kv: kv[1])[0]
        a, b = period(s, prod, decom)
        for k in range(max(missing, 0)):
            system.append(s)
            labels.append(f"{s}/unlisted-{k}")
            pstart.append(a)
            pend.append(b)

    order = np.lexsort((starts, fail_node))
    return LanlNodes(
        system=np.array(system, dtype=np.int64),
        node_label=labels,
        prod_start_s=np.array(pstart),
        prod_end_s=np.array(pend),
        fail_node=fail_node[order],
        fail_start_s=starts[order],
        fail_end_s=ends[order],
        records_end_s=float(records_end),
    )


@dataclass(frozen=True)
class NodeDays:
    """One row per (node, calendar day) in production: predict at the day's midnight."""

    node: np.ndarray  # (n,) node index
    day_start_s: np.ndarray  # (n,) midnight opening the day
    label: np.ndarray  # (n,) bool: a failure of this node starts within [day, day + 24 h)


def node_day_grid(data: LanlNodes) -> NodeDays:
    """Every node-day of every node's production period, with its 24 h label."""
    first = np.ceil(data.prod_start_s / DAY_S).astype(np.int64)
    last = np.floor(data.prod_end_s / DAY_S).astype(np.int64)  # exclusive
    counts = np.maximum(last - first, 0)
    node = np.repeat(np.arange(data.n_nodes), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    day = (np.repeat(first, counts) + offsets).astype(np.float64) * DAY_S
    # label: any failure of the node with start in [day, day + 1 day)
    span = 1e11  # > any timestamp: one sorted key space for all nodes
    fkey = data.fail_node * span + data.fail_start_s
    qkey = node * span + day
    hits = np.searchsorted(fkey, qkey + DAY_S, side="left") - np.searchsorted(fkey, qkey, "left")
    return NodeDays(node=node, day_start_s=day, label=hits > 0)


def rack_groups(data: LanlNodes, rack_size: int = 32) -> np.ndarray:
    """Neighbourhood of each node: (system, nodenum // rack_size); -1 for unlisted nodes.

    LANL gives no rack map; consecutive node numbers are the closest stand-in for shared
    hardware (in systems 18/19 every 32nd node fails far more often than the rest).
    """
    out = np.full(data.n_nodes, -1, dtype=np.int64)
    for i, label in enumerate(data.node_label):
        sys_id, num = label.split("/")
        if not num.startswith("unlisted"):
            out[i] = int(sys_id) * 100_000 + int(num) // rack_size
    return out
