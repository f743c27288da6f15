"""A few seconds of differential fuzzing inside `make test` (`make fuzz` runs it for minutes):
the C and pure decoders must agree on mutated real term_to_binary outputs. See fuzz_etf.py."""

from __future__ import annotations

import os
import time

import pytest

from dspex_cluster import etf

from .fuzz_etf import load_seeds, run


def test_seeds_are_real_term_to_binary_outputs() -> None:
    seeds = load_seeds()
    assert len(seeds) > 100 and all(s[0] == 131 for s in seeds)
    for data in seeds:
        etf.pure.decode(data)  # every one is a valid term


def test_c_and_pure_agree_on_mutated_terms() -> None:
    if etf.native is None:
        pytest.skip("the C extension is not built")
    seed = int(time.time())
    report = run(float(os.environ.get("DSPEX_FUZZ_SECONDS", "3")), seed)
    assert report.inputs > 1000
    assert not report.disagreements, f"seed {seed}:\n" + "\n".join(report.disagreements)
