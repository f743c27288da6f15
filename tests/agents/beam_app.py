"""BEAM nodes running the :dspex_cluster application, driven over stdio by `otp.ErlNode`.

The node is a plain `erl` (OTP 25) with the app's and Elixir's ebin directories on the code path;
the app is started with `application:ensure_all_started(dspex_cluster)` after its settings are put
in the application environment — the same code `beam/bin/dspex-node` runs, minus mix. Being an
`ErlNode`, a test can evaluate Erlang on it (publish signals, call Python agents, collect signals).
"""

from __future__ import annotations

import atexit
import fcntl
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BEAM_DIR = REPO / "beam"
sys.path.insert(0, str(REPO / "tests" / "interop"))

from otp import ErlNode, unique  # noqa: E402

COOKIE = "dspex-test-cookie"


def interop_conftest(alias: str) -> Any:
    """tests/interop/conftest.py loaded under `alias`, to share its fixtures (the private epmd)."""
    spec = importlib.util.spec_from_file_location(alias, REPO / "tests" / "interop" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The strong state's Ra data of this session's nodes (<dir>/<node>), removed at exit.
STATE_DIR = tempfile.mkdtemp(prefix="dspex-test-state.")
atexit.register(shutil.rmtree, STATE_DIR, True)

# Fast reports keep the tests short; discovery off: tests connect nodes themselves.
TEST_ENV: dict[str, Any] = {
    "state_dir": f'<<"{STATE_DIR}">>',
    "discovery": "[]",
    "health_interval_ms": "200",
    "load_interval_ms": "200",
}


@cache
def compiled_paths() -> tuple[str, ...]:
    """Compile the app once (under the launcher's lock) and return the code paths it needs."""
    env = dict(os.environ, MIX_ENV="dev")
    (BEAM_DIR / "_build").mkdir(exist_ok=True)
    with open(BEAM_DIR / "_build" / ".compile.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(
            ["mix", "compile"], cwd=BEAM_DIR, env=env, check=True, capture_output=True, timeout=600
        )
    out = subprocess.run(
        ["elixir", "-e", "IO.puts(:code.lib_dir(:elixir)); IO.puts(:code.lib_dir(:logger))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    app = BEAM_DIR / "_build" / "dev" / "lib" / "dspex_cluster" / "ebin"
    # Ra and its dependencies, unpacked by `make setup` (see beam/mix.exs)
    otp_libs = sorted(str(p) for p in (REPO / ".cache" / "otp-libs").glob("*/ebin"))
    return (str(app), *(str(Path(p) / "ebin") for p in out), *otp_libs)


def start_app_node(
    epmd_port: int,
    cookie: str,
    prefix: str = "beam",
    env: dict[str, str] | None = None,
    name: str | None = None,
    erl_args: tuple[str, ...] = (),
) -> ErlNode:
    """A BEAM node with :dspex_cluster running (settings: TEST_ENV overridden by `env`);
    `name` (without host) reuses a name, e.g. to restart a node; `erl_args` go to `erl`."""
    extra: list[str] = list(erl_args)
    for path in compiled_paths():
        extra += ["-pa", path]
    node = ErlNode(epmd_port, "otp25", name=name or unique(prefix), cookie=cookie, extra=extra)
    try:
        settings = {**TEST_ENV, **(env or {})}
        node.eval("application:load(dspex_cluster)")
        for key, value in settings.items():
            node.eval(f"application:set_env(dspex_cluster, {key}, {value})")
        # Elixir switches stdio to binary mode; the eval loop reads charlists
        started = node.eval(
            "R = application:ensure_all_started(dspex_cluster), "
            "io:setopts(standard_io, [{binary, false}]), R"
        )
        if started[0] != "ok":
            raise RuntimeError(f"dspex_cluster did not start on {node.name}: {started!r}")
    except BaseException:
        node.stop()
        raise
    return node


# Erlang snippets tests evaluate on such a node ------------------------------------------------

# A collector: a registered process that keeps every {signal, S} it gets; `collected(Name)` reads
# them back (oldest first) without removing them.
COLLECTOR = (
    "Collect = fun Collect(Acc) -> receive "
    "{get, From} -> From ! {collected, lists:reverse(Acc)}, Collect(Acc); "
    "{signal, S} -> Collect([S | Acc]) end end"
)


@contextmanager
def connected_app_nodes(epmd_port: int, prefixes: tuple[str, ...]) -> Iterator[list[ErlNode]]:
    """App nodes, one per prefix, connected to each other; all stopped on exit."""
    nodes: list[ErlNode] = []
    try:
        for prefix in prefixes:
            nodes.append(start_app_node(epmd_port, COOKIE, prefix))
        for other in nodes[1:]:
            assert nodes[0].eval(f"net_kernel:connect_node('{other.name}')") is True
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def start_collector(beam: ErlNode, name: str, pattern: str) -> None:
    """Register `name` on `beam`: a process subscribed to `pattern` that keeps what it receives."""
    beam.eval(
        f"{COLLECTOR}, P = spawn(fun() -> Collect([]) end), register({name}, P), "
        f"'Elixir.DSPEx.Clustering':subscribe(<<\"{pattern}\">>, P)"
    )


def collected(beam: ErlNode, name: str) -> list[Any]:
    """The signal maps `name` has received so far."""
    return beam.eval(
        f"{name} ! {{get, self()}}, receive {{collected, L}} -> L after 5000 -> timeout end"
    )
