"""The OS processes of a local cluster: a private epmd, BEAM nodes started by `beam/bin/dspex-node`
and Python agent nodes started by `python -m dspex_cluster agent-node`. Every process is our child
in its own session (a Ctrl-C in the terminal reaches only us), and `stop_all` ends each one by its
PID: SIGTERM, then SIGKILL after a grace period."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[3]
BEAM_DIR = REPO / "beam"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    os_pid: int | None = None  # the beam.smp pid once known (the launcher execs into it)

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class LocalCluster:
    """Processes of one run; logs go to `workdir`."""

    workdir: Path
    epmd_port: int = field(default_factory=free_port)
    children: dict[str, Child] = field(default_factory=dict)
    cookie_file: Path | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)

    def write_cookie(self, cookie: str) -> Path:
        """The run's cookie in a private temporary directory (never among the logs, which are
        kept after the run); stop_all removes it."""
        secret_dir = Path(tempfile.mkdtemp(prefix="dspex-cookie-"))  # mode 0700
        path = secret_dir / "cookie"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(cookie)
        self.cookie_file = path
        return path

    def remove_cookie(self) -> None:
        if self.cookie_file is not None:
            shutil.rmtree(self.cookie_file.parent, ignore_errors=True)
            self.cookie_file = None

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ, ERL_EPMD_PORT=str(self.epmd_port), **extra)
        env.pop("ERL_LIBS", None)
        return env

    def _spawn(self, name: str, args: list[str], env: dict[str, str], cwd: Path = REPO) -> Child:
        log_path = self.workdir / f"{name}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - closed in stop_all
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        child = self.children[name] = Child(name, proc, log_path, log)
        return child

    def start_epmd(self) -> None:
        epmd = shutil.which("epmd")
        if epmd is None:
            raise RuntimeError("epmd not found: run `make setup` (installs Erlang/OTP)")
        self._spawn(
            "epmd", [epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"], self.env()
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.epmd_port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"epmd did not start on port {self.epmd_port}")

    def compile_beam(self) -> None:
        """Compile once up front (the launchers would otherwise queue on the compile lock)."""
        (BEAM_DIR / "_build").mkdir(exist_ok=True)
        subprocess.run(
            ["flock", str(BEAM_DIR / "_build" / ".compile.lock"), "mix", "compile"],
            cwd=BEAM_DIR,
            env=self.env(MIX_ENV="dev"),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start_beam(
        self, name: str, erl_options: str = "", discovery: str = "epmd", extra: Sequence[str] = ()
    ) -> Child:
        assert self.cookie_file is not None
        env = self.env(MIX_ENV="dev", ELIXIR_ERL_OPTIONS=erl_options)
        args = [str(BEAM_DIR / "bin" / "dspex-node"), "--name", name]
        args += ["--cookie-file", str(self.cookie_file), "--discovery", discovery, *extra]
        return self._spawn(name, args, env)

    def start_agent_node(self, name: str, join: list[str], extra: Sequence[str] = ()) -> Child:
        """`extra`: more agent-node flags (e.g. --dashboard-port P)."""
        assert self.cookie_file is not None
        args = [sys.executable, "-m", "dspex_cluster", "agent-node", "--name", name]
        args += ["--cookie-file", str(self.cookie_file), "--epmd-port", str(self.epmd_port)]
        for j in join:
            args += ["--join", j]
        return self._spawn(name, [*args, *extra], self.env())

    def kill9(self, name: str) -> int:
        """kill -9 the node's OS process (its beam.smp); returns the pid."""
        child = self.children[name]
        pid = child.os_pid or child.proc.pid
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self, name: str, grace_s: float = 5.0) -> None:
        child = self.children.get(name)
        if child is None:
            return
        if child.alive():
            _signal(child.proc.pid, signal.SIGTERM)
            try:
                child.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _signal(child.proc.pid, signal.SIGKILL)
                child.proc.wait(timeout=5)
        # the launcher normally execs into beam.smp (same pid); if not, its beam.smp too
        if child.os_pid and child.os_pid != child.proc.pid and _is_beam(child.os_pid):
            _signal(child.os_pid, signal.SIGKILL)
        child.log.close()

    def stop_all(self) -> None:
        """Every node first, epmd last, each by its PID."""
        for name in [n for n in self.children if n != "epmd"]:
            self.stop(name)
        self.stop("epmd", grace_s=1.0)
        self.children.clear()
        self.remove_cookie()


def _is_beam(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().startswith("beam")
    except OSError:
        return False


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
