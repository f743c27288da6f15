"""The machine facts every benchmark writes beside its figures (one place, so they agree).

Benchmarks run as scripts (`python bench/bench_x.py`), so this folder is on sys.path.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

OTP_RELEASE_EXPR = 'io:format("~s", [erlang:system_info(otp_release)]), halt().'


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _first_line(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line for line in out.splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


def machine_facts(**extra: Any) -> dict[str, Any]:
    """CPU, cores, load, OS, Python/numpy/OTP/Elixir versions and the date, plus `extra`."""
    try:
        import numpy

        numpy_version: str | None = numpy.__version__
    except ImportError:
        numpy_version = None
    facts: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "numpy": numpy_version,
        "otp_release": _first_line(["erl", "-noshell", "-eval", OTP_RELEASE_EXPR]),
        "elixir": _first_line(["elixir", "--version"]),
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    facts.update(extra)
    return facts
