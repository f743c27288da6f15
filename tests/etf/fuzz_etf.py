"""Differential fuzzing of the two codecs: mutated real `term_to_binary` outputs are decoded by
the C fast path and by the pure reference, which must agree on every input (the same term, or
the same ETFError), and neither may raise anything but ETFError.

The seeds (fuzz_seeds.txt) are the codec test vectors as OTP 25 encodes them (name, hex), with
pids, references, ports, funs, maps, bignums, bitstrings and improper lists among them.

    python tests/etf/fuzz_etf.py --seconds 600      # what `make fuzz` runs
    (tests/etf/test_fuzz.py runs it for a few seconds inside `make test`)
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspex_cluster import etf
from dspex_cluster.etf import ETFError, same_term

SEEDS_FILE = Path(__file__).with_name("fuzz_seeds.txt")
# Bytes worth planting: tags, length extremes, the version byte and the compressed marker.
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 70, 77, 80, 88, 89, 90, 97, 98, 104, 105, 106, 107, 108,
               109, 110, 111, 112, 113, 116, 118, 119, 120, 131]  # fmt: skip


def load_seeds() -> list[bytes]:
    seeds = []
    for line in SEEDS_FILE.read_text().splitlines():
        name, _, hexdata = line.partition(" ")
        if hexdata:
            seeds.append(bytes.fromhex(hexdata))
    return seeds


def mutate(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 5))):
        op = rng.randrange(9)
        n = len(buf)
        at = rng.randrange(n) if n else 0
        if op == 0 and n:  # flip a bit
            buf[at] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # an interesting byte
            buf[at] = rng.choice(INTERESTING)
        elif op == 2 and n >= 4:  # a length field: tiny, huge or off by one
            at = rng.randrange(n - 3)
            value = rng.choice((0, 1, 2, 255, 256, 65535, 65536, 2**31 - 1, 2**32 - 1))
            buf[at : at + 4] = value.to_bytes(4, "big")
        elif op == 3:  # insert random bytes
            buf[at:at] = rng.randbytes(rng.randrange(1, 9))
        elif op == 4 and n > 1:  # delete a range
            del buf[at : at + rng.randrange(1, 9)]
        elif op == 5 and n > 1:  # repeat a range (nesting, longer lists)
            end = min(n, at + rng.randrange(1, 33))
            buf[at:at] = buf[at:end] * rng.randrange(1, 4)
        elif op == 6:  # splice in part of another seed
            other = rng.choice(seeds)
            start = rng.randrange(len(other))
            buf[at:at] = other[start : start + rng.randrange(1, 65)]
        elif op == 7 and n > 2:  # truncate
            del buf[rng.randrange(1, n) :]
        elif op == 8 and n:  # a byte off by one
            buf[at] = (buf[at] + rng.choice((1, -1))) & 0xFF
    return bytes(buf)


def _outcome(fn: Any, data: bytes) -> tuple[str, Any]:
    try:
        return "ok", fn(data)
    except ETFError as err:
        return "error", str(err)


@dataclass
class Report:
    inputs: int = 0
    decoded: int = 0
    disagreements: list[str] = field(default_factory=list)

    def add(self, what: str, data: bytes, detail: str) -> None:
        if len(self.disagreements) < 20:
            self.disagreements.append(f"{what} on {data.hex()[:400]}: {detail[:300]}")


def compare(report: Report, data: bytes) -> None:
    native = etf.native
    assert native is not None
    for what, c_fn, py_fn in (
        ("decode", native.decode, etf.pure.decode),
        ("frame", native.decode_dist_frame, etf.pure.decode_dist_frame),
    ):
        payload = data if what == "decode" else b"p" + data
        try:
            c = _outcome(c_fn, payload)
            py = _outcome(py_fn, payload)
        except Exception as exc:  # anything but ETFError is a bug
            report.add(what, payload, f"raised {type(exc).__name__}: {exc}")
            continue
        report.inputs += 1
        if c[0] != py[0]:
            detail = f"C {c[0]} {str(c[1])[:120]} / pure {py[0]} {str(py[1])[:120]}"
            report.add(what, payload, detail)
        elif c[0] == "ok":
            report.decoded += 1
            if not same_term(c[1], py[1]):
                report.add(what, payload, "different terms")
        elif c[1] != py[1]:
            report.add(what, payload, f"different errors: {c[1]} / {py[1]}")


def run(seconds: float, seed: int = 0) -> Report:
    """Fuzz for about `seconds`; every disagreement is in the report."""
    rng = random.Random(seed)
    seeds = load_seeds()
    report = Report()
    deadline = time.monotonic() + seconds
    for data in seeds:  # the seeds themselves first
        compare(report, data)
    while time.monotonic() < deadline:
        for _ in range(50):
            compare(report, mutate(rng, rng.choice(seeds), seeds))
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    if etf.native is None:
        print("the C extension is not built: nothing to compare")
        return 1
    report = run(args.seconds, args.seed)
    print(f"seed {args.seed}: {report.inputs} inputs, {report.decoded} decoded, "
          f"{len(report.disagreements)} disagreements")  # fmt: skip
    for line in report.disagreements:
        print(line)
    return 1 if report.disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
