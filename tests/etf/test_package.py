"""The package picks the C codec when it is built, unless DSPEX_PURE_ETF=1, and exports the API."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from dspex_cluster import etf

API = [
    "encode", "decode", "decode_from", "decode_dist_frame", "Atom", "Pid", "Reference", "Port",
    "ImproperList", "BitString", "ExportFun", "Fun", "ETFError", "DecodeLimits", "FrozenTerm",
    "NO_MESSAGE", "DEFAULT_LIMITS", "pure", "native",
]  # fmt: skip


def test_public_api() -> None:
    for name in API:
        assert hasattr(etf, name), name
    assert issubclass(etf.ETFError, ValueError)
    assert etf.DEFAULT_LIMITS.max_depth == 1000
    assert etf.DEFAULT_LIMITS.max_uncompressed_size == 64 * 1024 * 1024


def test_native_is_built_where_a_compiler_exists() -> None:
    if shutil.which(os.environ.get("CC", "gcc")) is None:
        pytest.skip("no C compiler: the pure codec is the only one")
    assert etf.native is not None, "dspex_cluster.etf._cetf did not build (pip install -e .)"


@pytest.mark.parametrize("flag, expected", [("1", "pure"), ("", None)])
def test_implementation_choice(flag: str, expected: str | None) -> None:
    expected = expected or ("native" if etf.native is not None else "pure")
    code = "from dspex_cluster import etf; print(etf.IMPLEMENTATION, etf.decode is etf.pure.decode)"
    env = dict(os.environ, DSPEX_PURE_ETF=flag)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [expected, str(expected == "pure")]


def test_decode_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        etf.DecodeLimits(max_depth=0)
    with pytest.raises(ValueError):
        etf.DecodeLimits(max_depth=1_000_000)  # would overflow the C stack
    with pytest.raises(ValueError):
        etf.DecodeLimits(max_elements=-1)
