"""Erlang's own clients as test peers: the real `erl_call` and a C node built at test time against
erl_interface's `ei` (both ship with Debian's `erlang-dev`, which `make setup` installs).

Reuses the interop epmd fixture and tests/agents/beam_app.py (BEAM nodes running the app)."""

from __future__ import annotations

import glob
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "agents"))

from beam_app import interop_conftest  # noqa: E402

epmd = interop_conftest("interop_conftest_for_clients").epmd
pytestmark = pytest.mark.otp


def erl_root() -> Path:
    erl = shutil.which("erl")
    if erl is None:
        raise RuntimeError("erl not found: run make setup")
    out = subprocess.run(
        [erl, "-noshell", "-eval", 'io:format("~s", [code:root_dir()]), halt().'],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return Path(out.stdout.strip())


@pytest.fixture(scope="session")
def erl_call() -> str:
    """The erl_call of Debian's erlang-dev (OTP 25)."""
    found = shutil.which("erl_call") or next(
        iter(sorted(glob.glob(str(erl_root() / "lib" / "erl_interface-*" / "bin" / "erl_call")))),
        None,
    )
    if found is None:
        raise RuntimeError("erl_call not found: install erlang-dev (make setup does)")
    return found


@pytest.fixture(scope="session")
def cnode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """tests/clients/cnode_rpc.c compiled against ei (gcc, -lei)."""
    root = erl_root()
    out = tmp_path_factory.mktemp("cnode") / "cnode_rpc"
    subprocess.run(
        [
            "gcc",
            "-O1",
            "-o",
            str(out),
            str(HERE / "cnode_rpc.c"),
            f"-I{root / 'usr' / 'include'}",
            f"-L{root / 'usr' / 'lib'}",
            "-lei",
            "-lpthread",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    yield str(out)
