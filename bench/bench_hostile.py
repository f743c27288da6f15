"""Benchmark: what hostile inputs cost a Python node (issue 13, points 1, 2, 3 and 7).

    .venv/bin/python bench/bench_hostile.py --out reports/bench     -> reports/bench/hostile.json
    (--quick: smaller inputs; --scenario NAME --impl native|pure runs one measurement, in the
    process that prints its JSON: every measurement runs in a fresh child so that its peak RSS
    is its own)

1. map_collisions: decoding a map of 10,000 2-tuple keys that share one Python hash, against a
   map of 10,000 random tuple keys decoded in the same run (target: < 100 ms, or refused).
2. log_flood: one frame whose control tuple starts with a 50 MB binary, sent to a real node over
   a real handshake: the largest log record it causes and the node's RSS growth.
3. nil_flood / list_tails: a frame of [] elements (15.6 MB) and a list built from 999 nested
   LIST_EXT tails (about 2 MB): time, peak RSS growth relative to the input (target: linear time,
   peak <= 16x the frame + a constant, or refused), beside decoding a plain list of as many
   small ints.
7. epmd_stream: a fake epmd that answers PORT_PLEASE2 with an endless stream: how long the lookup
   takes to fail and how much the client's RSS grows.
Run it against an older checkout with PYTHONPATH=<old>/python to get the "before" figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "etf"))
sys.path.insert(0, str(REPO / "tests" / "interop"))

from hostile_inputs import colliding_pairs, list_of_tails, map_bytes, nil_list  # noqa: E402

from dspex_cluster import etf  # noqa: E402
from machine_facts import machine_facts  # noqa: E402

MB = 1024 * 1024


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak so far, MiB


def _codec(impl: str) -> Any:
    return etf.native if impl == "native" else etf.pure


def _timed_decode(codec: Any, data: bytes) -> dict[str, Any]:
    base = _rss_mb()
    start = time.perf_counter()
    try:
        term = codec.decode(data)
        outcome = f"decoded ({type(term).__name__} of {len(term)})"
    except etf.ETFError as err:
        outcome = f"refused: {str(err)[:90]}"
    seconds = time.perf_counter() - start
    grown = _rss_mb() - base
    return {
        "seconds": round(seconds, 4),
        "outcome": outcome,
        "input_mb": round(len(data) / MB, 2),
        "peak_rss_growth_mb": round(grown, 1),
        "peak_growth_per_input_byte": round(grown * MB / len(data), 2),
    }


def map_collisions(impl: str, quick: bool) -> dict[str, Any]:
    n = 2_000 if quick else 10_000
    codec = _codec(impl)
    keys = colliding_pairs(n)
    reference = [(i, i * 7919 + 13) for i in range(n)]
    ref = _timed_decode(codec, map_bytes(reference))
    hostile = _timed_decode(codec, map_bytes(keys))
    ratio = round(hostile["seconds"] / max(ref["seconds"], 1e-6), 1)
    return {"keys": n, "hostile": hostile, "reference_random_keys": ref,
            "ratio_to_reference": ratio}  # fmt: skip


def nil_flood(impl: str, quick: bool) -> dict[str, Any]:
    n = 2_000_000 if quick else 15_600_000
    codec = _codec(impl)
    ints = b"\x83l" + struct.pack(">I", n // 2) + b"a\x07" * (n // 2) + b"j"  # as many bytes
    ref = _timed_decode(codec, ints)
    del ints
    hostile = _timed_decode(codec, nil_list(n))
    return {"frame_mb": round(n / MB, 1), "hostile": hostile, "reference_small_ints": ref}


def list_tails(impl: str, quick: bool) -> dict[str, Any]:
    segments, per = (999, 200) if quick else (999, 1000)
    codec = _codec(impl)
    flat = b"\x83l" + struct.pack(">I", segments * per) + b"a\x07" * (segments * per) + b"j"
    ref = _timed_decode(codec, flat)
    hostile = _timed_decode(codec, list_of_tails(segments, per))
    ratio = round(hostile["seconds"] / max(ref["seconds"], 1e-6), 1)
    return {"segments": segments, "items": segments * per, "hostile": hostile,
            "reference_one_list": ref, "ratio_to_reference": ratio}  # fmt: skip


class _Largest(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.largest = 0
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        try:
            size = len(logging.Formatter().format(record))
        except Exception as exc:  # the old abort path could not even format some records
            size = -1
            record.msg = f"unformattable: {type(exc).__name__}"
        self.largest = max(self.largest, size)


async def _log_flood(quick: bool) -> dict[str, Any]:
    from otp import Epmd, unique

    from dspex_cluster import Atom, Node
    from dspex_cluster.dist import flags as F
    from dspex_cluster.dist.handshake import Established, InitiatorHandshake

    size = 5 * MB if quick else 50 * MB
    handler = _Largest()
    root = logging.getLogger("dspex_cluster")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # as with -v -v: the worst case
    epmd = Epmd()
    node = Node(f"{unique('bh')}@127.0.0.1", cookie="c", epmd_port=epmd.port)
    try:
        await node.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        hs = InitiatorHandshake(f"{unique('x')}@127.0.0.1", F.node_flags(True), 3, "c", node.name)
        writer.write(hs.data_to_send())
        while not any(isinstance(e, Established) for e in hs.receive_data(await reader.read(4096))):
            writer.write(hs.data_to_send())
        writer.write(hs.data_to_send())
        body = b"p" + etf.encode((b"x" * size, Atom("a"), 1))
        base = _rss_mb()
        start = time.perf_counter()
        writer.write(struct.pack(">I", len(body)) + body)
        while await reader.read(65536):
            pass
        seconds = time.perf_counter() - start
        return {"binary_mb": size // MB, "largest_log_record_bytes": handler.largest,
                "records": handler.records, "seconds_to_close": round(seconds, 3),
                "peak_rss_growth_mb": round(_rss_mb() - base, 1)}  # fmt: skip
    finally:
        await node.stop()
        epmd.stop()


def log_flood(impl: str, quick: bool) -> dict[str, Any]:
    return asyncio.run(_log_flood(quick))


async def _epmd_stream() -> dict[str, Any]:
    from dspex_cluster.runtime import epmd_client

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(struct.pack(">BBHBBHHH", 119, 0, 4321, 77, 0, 6, 6, 65535))
        try:
            while True:
                writer.write(b"\x00" * 65536)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    base = _rss_mb()
    start = time.perf_counter()
    try:
        await epmd_client.port_please("127.0.0.1", "x", port, 7)
        outcome = "answered"
    except Exception as err:
        outcome = f"{type(err).__name__}: {str(err)[:80]}"
    seconds = time.perf_counter() - start
    server.close()
    return {"outcome": outcome, "seconds": round(seconds, 3),
            "peak_rss_growth_mb": round(_rss_mb() - base, 1)}  # fmt: skip


def epmd_stream(impl: str, quick: bool) -> dict[str, Any]:
    return asyncio.run(_epmd_stream())


SCENARIOS = {
    "map_collisions": (map_collisions, ("native", "pure")),
    "nil_flood": (nil_flood, ("native", "pure")),
    "list_tails": (list_tails, ("native", "pure")),
    "log_flood": (log_flood, ("native",)),
    "epmd_stream": (epmd_stream, ("native",)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--scenario")
    parser.add_argument("--impl", default="native")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    if args.scenario:
        fn, _ = SCENARIOS[args.scenario]
        print(json.dumps(fn(args.impl, args.quick)))
        return
    results: dict[str, Any] = {}
    for name, (_, impls) in SCENARIOS.items():
        for impl in impls:
            cmd = [sys.executable, __file__, "--scenario", name, "--impl", impl]
            if args.quick:
                cmd.append("--quick")
            try:
                run = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                last = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
                got = json.loads(last) if last.startswith("{") else {"error": run.stderr[-300:]}
            except subprocess.TimeoutExpired:
                got = {"error": f"no answer within {args.timeout} s"}
            results[f"{name}/{impl}"] = got
            print(f"{name}/{impl}: {json.dumps(got)}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    out = {"machine": machine_facts(quick=args.quick), "results": results}
    (args.out / "hostile.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
