"""The BEAM application as a `mix release` (prod profile): built into a temporary directory,
started by beam/bin/dspex-node (DSPEX_RELEASE_ROOT, DSPEX_RELEASE=1) with no mix and no
compilation at start; the node joins epmd under its name, serves /metrics, keeps its cookie off
the command line and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
from e2e_cluster import wait_for
from otp import free_port, unique
from test_ops_cluster import epmd_ports

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.otp, pytest.mark.slow]


def test_release_built_and_started_by_the_launcher(epmd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rel = tmp_path / "rel"
    build = subprocess.run(
        ["mix", "release", "--overwrite", "--quiet", "--path", str(rel)],
        cwd=REPO / "beam",
        env=dict(os.environ, MIX_ENV="prod"),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert (rel / "releases" / "start_erl.data").is_file()
    assert list((rel / "lib").glob("ra-*")), "Ra is not in the release"

    cookie = "release-test-cookie-" + unique("c")
    cookie_file = tmp_path / "cookie"
    cookie_file.write_text(cookie)
    cookie_file.chmod(0o600)
    alive, port = unique("orel"), free_port()
    env = dict(os.environ, ERL_EPMD_PORT=str(epmd.port), DSPEX_RELEASE_ROOT=str(rel))
    env.update(DSPEX_RELEASE="1", PATH=f"{tmp_path}:{os.environ['PATH']}")
    # a `mix` that fails: the release must not need it
    (tmp_path / "mix").write_text("#!/bin/sh\necho 'mix was called' >&2\nexit 97\n")
    (tmp_path / "mix").chmod(0o755)
    log = tmp_path / "node.log"
    args = [str(REPO / "beam" / "bin" / "dspex-node"), "--name", f"{alive}@127.0.0.1"]
    args += ["--cookie-file", str(cookie_file), "--metrics-port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: epmd_ports(epmd.port).get(alive) or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, log.read_text()[-3000:]
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert str(rel) in cmdline and "-boot" in cmdline
        assert cookie not in cmdline
        text = wait_for(lambda: scrape_text(port), timeout=30)
        assert "dspex_members{" in text
        assert "mix was called" not in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0 or proc.returncode == -signal.SIGTERM


def scrape_text(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return r.read().decode()
    except OSError:
        return None
