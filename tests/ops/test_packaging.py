"""The Python package as a user installs it: `pip wheel` builds it with the C term codec, it
installs into a fresh venv with only its core dependencies (no scipy, no matplotlib), and the
installed command answers `--version` and runs a node's import path without the numeric stack."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run(args: list[str | Path], **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=400, **kw)
    assert done.returncode == 0, f"{args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_wheel_builds_with_c_extension_and_runs_in_a_fresh_venv(tmp_path: Path) -> None:
    # build from a copy of what the sdist holds, so the work tree gets no build/ or egg-info
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(
        REPO / "python",
        src / "python",
        ignore=shutil.ignore_patterns("*.so", "__pycache__", "*.egg-info"),
    )
    wheels = tmp_path / "wheels"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            # the backend pyproject.toml names is in this venv (test extra): no build env to fetch
            "--no-build-isolation",
            "-w",
            wheels,
            src,
        ]
    )
    (wheel,) = wheels.glob("dspex_cluster-*.whl")
    assert "-cp3" in wheel.name, f"not a platform wheel (no C extension?): {wheel.name}"
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("dspex_cluster/etf/_cetf") and n.endswith(".so") for n in names)
    assert "dspex_cluster/ops/static/dashboard.js" in names
    assert "dspex_cluster/ops/static/dashboard.html" in names
    assert "dspex_cluster/py.typed" in names  # PEP 561: the type hints are part of the package

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    py = venv / "bin" / "python"
    # this venv's pip installs into the fresh one (its own would first have to be installed)
    pip = [sys.executable, "-m", "pip", "--python", py, "install", "-q"]
    run([*pip, wheel], cwd=tmp_path)
    version = run([py, "-m", "dspex_cluster", "--version"], cwd=tmp_path).stdout
    assert "0.1.0" in version
    probe = (
        "import importlib.util, sys\n"
        "from dspex_cluster import cli, etf\n"
        "from dspex_cluster.runtime import Node\n"
        "from dspex_cluster.ops import OpsServer\n"
        "from dspex_cluster.etf import _cetf\n"
        "absent = [importlib.util.find_spec(m) is None for m in ('scipy', 'matplotlib')]\n"
        "print(*absent, sorted({'scipy', 'matplotlib'} & set(sys.modules)))\n"
    )
    out = run([py, "-c", probe], cwd=tmp_path).stdout.split()
    assert out == ["True", "True", "[]"], out
    # the agent node needs the skills extra, and says so in one line
    agent = subprocess.run(
        [py, "-m", "dspex_cluster", "agent-node", "--name", "x@127.0.0.1", "--cookie", "c"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert agent.returncode == 1
    assert "dspex-cluster[skills]" in agent.stderr and "Traceback" not in agent.stderr
