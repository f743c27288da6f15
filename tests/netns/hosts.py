"""Several hosts on one machine: Linux network namespaces joined by a bridge.

`Network` makes one "switch" namespace holding a bridge and N host namespaces. Each host has a veth
pair (`eth0` inside the host, `pN` on the bridge), an address in a /24 chosen at random for the
session, `lo` up, a multicast route over `eth0`, and its own `epmd` (our child, stopped by PID).
Every link is created directly inside the namespaces, so the root namespace's networking is never
touched, and all traffic stays between addresses made here.

Namespace names are `dxn<pid>-<token>-<role>`: a later session deletes the namespaces of a session
whose process is gone (left behind by a crash) and nobody else's.

`NamespaceLoop` runs an asyncio loop on a thread that has entered a host's network namespace, so
a `dspex_cluster.Node` living in the test process opens all its sockets on that host.
`LauncherNode` is `beam/bin/dspex-node` run inside a host namespace, in its own process group.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "beam" / "bin" / "dspex-node"
NAME_FAMILY = "dxn"
STALE_NAME = re.compile(rf"^{NAME_FAMILY}(\d+)-[0-9a-f]+-")
CLONE_NEWNET = 0x40000000

T = TypeVar("T")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS`; on failure raise with its stderr."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def netns_unavailable_reason() -> str | None:
    """Why these tests cannot run here (not root, no `ip netns`), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    try:
        listing = ip("netns", "list", check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`ip netns` unavailable: {exc}"
    if listing.returncode != 0:
        return f"`ip netns` unavailable: {listing.stderr.strip()}"
    # root in a container without CAP_SYS_ADMIN may list but not create namespaces
    probe = f"{NAME_FAMILY}{os.getpid()}-{secrets.token_hex(3)}-probe"
    added = ip("netns", "add", probe, check=False)
    if added.returncode != 0:
        return f"`ip netns add` not permitted here: {added.stderr.strip()}"
    ip("netns", "delete", probe, check=False)
    return None


def namespaces() -> list[str]:
    """Names of the namespaces `ip netns list` shows."""
    return [line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete_namespace(name: str) -> list[int]:
    """Kill what still runs in namespace `name` (processes started there by these tests), then
    delete it; its veth ends, and so their peers, go with it. Returns the PIDs it had to kill."""
    pids = [int(p) for p in ip("netns", "pids", name, check=False).stdout.split() if p.isdigit()]
    killed = []
    for pid in pids:
        if pid == os.getpid():  # never ourselves (only a thread of ours may sit in there)
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    ip("netns", "delete", name, check=False)
    return killed


def clean_stale_namespaces() -> list[str]:
    """Delete namespaces of our family whose creating test process is gone."""
    stale = [
        name
        for name in namespaces()
        if (m := STALE_NAME.match(name)) and not _pid_alive(int(m.group(1)))
    ]
    for name in stale:
        delete_namespace(name)
    return stale


@dataclass
class Host:
    """One host: a namespace with `eth0` at `address`, and an epmd on `epmd_port`."""

    netns: str
    address: str
    bridge_port: str  # its veth peer on the bridge, in the switch namespace
    switch_netns: str
    epmd_port: int
    epmd: subprocess.Popen[bytes] | None = None

    def command(self, *argv: str) -> list[str]:
        """`argv` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def start_epmd(self) -> None:
        epmd = shutil.which("epmd")
        if epmd is None:
            raise RuntimeError("epmd not found")
        self.epmd = subprocess.Popen(
            self.command(epmd, "-port", str(self.epmd_port)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = subprocess.run(
                self.command(epmd, "-port", str(self.epmd_port), "-names"),
                capture_output=True,
                timeout=10,
            )
            if probe.returncode == 0:
                return
            if self.epmd.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"epmd did not start in {self.netns}")

    def epmd_names(self) -> str:
        """What this host's epmd lists (`epmd -names` output)."""
        epmd = shutil.which("epmd") or "epmd"
        return subprocess.run(
            self.command(epmd, "-port", str(self.epmd_port), "-names"),
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout

    def stop_epmd(self) -> None:
        if self.epmd is not None and self.epmd.poll() is None:
            self.epmd.kill()
        if self.epmd is not None:
            self.epmd.wait(timeout=5)

    def link_down(self) -> None:
        """Cut this host off the bridge (a partition): its bridge port goes down."""
        ip("-n", self.switch_netns, "link", "set", self.bridge_port, "down")

    def link_up(self) -> None:
        ip("-n", self.switch_netns, "link", "set", self.bridge_port, "up")


@dataclass
class Network:
    """A switch namespace with a bridge and `count` hosts on one private /24."""

    count: int
    token: str = field(default_factory=lambda: secrets.token_hex(3))
    epmd_port: int = 4369
    hosts: list[Host] = field(default_factory=list)
    created: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.prefix = f"{NAME_FAMILY}{os.getpid()}-{self.token}"
        self.switch = f"{self.prefix}-sw"
        # 10.X.Y.0/24 exists only inside these namespaces; random so two sessions never mix
        self.subnet = f"10.{secrets.randbelow(150) + 100}.{secrets.randbelow(256)}"

    def create(self) -> None:
        try:
            self._add_namespace(self.switch)
            ip("-n", self.switch, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
            ip("-n", self.switch, "link", "set", "br0", "up")
            for i in range(self.count):
                self.hosts.append(self._add_host(i))
            for host in self.hosts:
                host.start_epmd()
        except BaseException:
            self.destroy()
            raise

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self.created.append(name)

    def _add_host(self, i: int) -> Host:
        ns = f"{self.prefix}-h{i}"
        self._add_namespace(ns)
        port = f"p{i}"
        address = f"{self.subnet}.{i + 2}"
        ip(
            "-n",
            self.switch,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        )
        ip("-n", self.switch, "link", "set", port, "master", "br0")
        ip("-n", self.switch, "link", "set", port, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        # gossip sends to a multicast group; without a default route it needs this one
        ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
        return Host(ns, address, port, self.switch, self.epmd_port)

    def destroy(self) -> list[int]:
        """Stop the epmds, delete every namespace made; the PIDs of stray processes that were
        still running in them and had to be killed (none when every test cleaned up)."""
        for host in self.hosts:
            try:
                host.stop_epmd()
            except (OSError, subprocess.SubprocessError):
                pass
        strays = []
        for name in reversed(self.created):
            strays += delete_namespace(name)
        self.created.clear()
        return strays

    def leftovers(self) -> list[str]:
        """Our namespaces still listed (empty after destroy)."""
        return [n for n in namespaces() if n.startswith(self.prefix)]


# -- a Python node's event loop inside a host -----------------------------------------------------


def enter_netns(name: str) -> None:
    """Move the calling thread (only it) into network namespace `name`."""
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if hasattr(os, "setns"):  # Python 3.12+
            os.setns(fd, CLONE_NEWNET)
        else:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


class NamespaceLoop:
    """An asyncio loop on its own thread inside `netns`: sockets it opens are on that host (and
    so are those of the executor threads it starts, which inherit the namespace)."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"netns {netns}", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        try:
            enter_netns(self.netns)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run `coro` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        if not self.loop.is_running():
            self.loop.close()


# -- BEAM nodes started by the launcher inside a host ---------------------------------------------


class LauncherNode:
    """`beam/bin/dspex-node` inside `host`'s namespace; stopped by killing its process group."""

    def __init__(
        self,
        host: Host,
        alive: str,
        cookie_file: Path,
        args: list[str],
        log_dir: Path,
        erl_flags: str = "",
    ) -> None:
        self.host = host
        self.name = f"{alive}@{host.address}"
        self.log_path = log_dir / f"{alive}.log"
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        argv = host.command(
            "env",
            f"ERL_EPMD_PORT={host.epmd_port}",
            # our epmd runs already; the node must not start (and orphan) a daemon of its own
            f"ERL_FLAGS=-start_epmd false {erl_flags}".strip(),
            str(LAUNCHER),
            "--name",
            self.name,
            "--cookie-file",
            str(cookie_file),
            *args,
        )
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            # whatever is left of the group (erl_child_setup, inet_gethost, a stuck beam)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)
        self._log.close()
