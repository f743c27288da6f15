"""docker/docker-compose.yml's services, run as the compose file says but on network-namespace
hosts instead of containers (no Docker engine runs here): each service gets a host, its host
name resolves through that namespace's /etc/hosts (`ip netns exec` binds /etc/netns/NS/hosts),
and `docker/entrypoint.sh` runs with the service's command and environment, the cookie as the
secret file. The three BEAM nodes must find each other (epmd discovery), both Python agent nodes
must join, every healthcheck must pass, and py1's dashboard must name all five nodes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hosts import REPO, Network

pytestmark = [pytest.mark.netns, pytest.mark.otp, pytest.mark.slow]

ENTRYPOINT = REPO / "docker" / "entrypoint.sh"


def in_host(netns: str, code: str) -> str:
    """Python `code` run inside a host namespace; its stdout ('' on failure)."""
    done = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return done.stdout if done.returncode == 0 else ""


def fetch(netns: str, url: str) -> str:
    return in_host(
        netns,
        f"import urllib.request\nprint(urllib.request.urlopen({url!r}, timeout=5).read().decode())",
    )


def members_up(netns: str, kind: str) -> int:
    for line in fetch(netns, "http://127.0.0.1:9568/metrics").splitlines():
        if line.startswith(f'dspex_members{{kind="{kind}",status="up"}}'):
            return int(float(line.split()[-1]))
    return 0


def test_compose_services_run_from_their_entrypoints(network: Network, cookie_file: Path) -> None:
    services = yaml.safe_load((REPO / "docker" / "docker-compose.yml").read_text())["services"]
    hosts = dict(zip(services, network.hosts, strict=True))
    etc = [Path("/etc/netns") / h.netns for h in hosts.values()]
    procs: list[subprocess.Popen[bytes]] = []
    logs = cookie_file.parent
    try:
        lines = "".join(f"{h.address} {name}\n" for name, h in hosts.items())
        for d in etc:
            d.mkdir(parents=True, exist_ok=True)
            (d / "hosts").write_text(f"127.0.0.1 localhost\n{lines}")
        for name, s in services.items():
            env = {f"{k}": str(v) for k, v in (s.get("environment") or {}).items()}
            env |= {
                "DSPEX_COOKIE_FILE": str(cookie_file),
                "ERL_EPMD_PORT": str(network.epmd_port),
                # each host's epmd runs already (the harness's); a node must not start another
                "ERL_FLAGS": "-start_epmd false",
                "DSPEX_PYTHON": sys.executable,
            }
            argv = ["ip", "netns", "exec", hosts[name].netns, "env"]
            argv += [f"{k}={v}" for k, v in env.items()]
            argv += [str(ENTRYPOINT), *s["command"]]
            with open(logs / f"compose-{name}.log", "wb") as out:
                procs.append(
                    subprocess.Popen(
                        argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
        beams = [n for n, s in services.items() if s["command"][0] == "beam"]
        agents = [n for n, s in services.items() if s["command"][0] == "agent"]
        deadline = time.monotonic() + 150
        while True:
            counts = {
                n: (members_up(hosts[n].netns, "beam"), members_up(hosts[n].netns, "python"))
                for n in beams
            }
            if all(c == (len(beams), len(agents)) for c in counts.values()):
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                tails = {
                    n: (logs / f"compose-{n}.log").read_text(errors="replace")[-1500:]
                    for n in services
                }
                pytest.fail(f"cluster did not form: {counts}\n{tails}")
            time.sleep(1.0)
        for name, s in services.items():
            health = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    hosts[name].netns,
                    "env",
                    f"DSPEX_PYTHON={sys.executable}",
                    *s["healthcheck"]["test"][1:],
                ],
                cwd=REPO,
                timeout=30,
            )
            assert health.returncode == 0, f"{name}: healthcheck failed"
        page = fetch(hosts["py1"].netns, "http://127.0.0.1:8080/")
        for name in services:
            assert f"{name}@{name}" in page
    finally:
        for p in procs:
            with _gone():
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            with _gone():
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
        for d in etc:
            shutil.rmtree(d, ignore_errors=True)
        # the launcher's cookie-directory cleaners (own sessions) follow their node within ~1 s
        wait_quiet(list(hosts.values()))


def wait_quiet(hosts: list, timeout: float = 10.0) -> None:  # type: ignore[type-arg]
    """Until nothing but each host's epmd runs in its namespace."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [
            pid
            for h in hosts
            for pid in subprocess.run(
                ["ip", "netns", "pids", h.netns], capture_output=True, text=True
            ).stdout.split()
            if h.epmd is None or int(pid) != h.epmd.pid
        ]
        if not left:
            return
        time.sleep(0.2)


class _gone:
    """Ignores a process group that has already exited."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, *rest: object) -> bool:
        return exc_type is ProcessLookupError
