"""Errors a user can fix are one line on stderr and a non-zero exit, on both kinds of node, with
the same words: `python -m dspex_cluster node|agent-node` and `beam/bin/dspex-node`.

Every case here fails before the BEAM launcher compiles or starts anything, so each costs a
fraction of a second.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from otp import Epmd, free_port, unique

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = str(REPO / "beam" / "bin" / "dspex-node")
CLIS = {
    "python-node": [sys.executable, "-m", "dspex_cluster", "node"],
    "python-agent-node": [sys.executable, "-m", "dspex_cluster", "agent-node"],
    "launcher": [LAUNCHER],
}
BOTH = ("python-node", "launcher")  # where agent-node shares node's code path


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """No cookie anywhere (an empty HOME), no DSPEX_* settings from the caller."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DSPEX_") and k not in ("ERLANG_COOKIE", "ERL_EPMD_PORT")
    }
    env["HOME"] = str(home)
    env.update(extra)
    return env


def run(cli: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        CLIS[cli] + args,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def one_line_error(done: subprocess.CompletedProcess[str], cli: str) -> str:
    """The single stderr line (without the program's prefix); asserts the shape of a clean error."""
    assert done.returncode != 0, done
    assert "Traceback" not in done.stderr and "crash" not in done.stderr.lower(), done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, f"{cli}: {len(lines)} lines on stderr:\n{done.stderr}"
    prefix = "dspex-node" if cli == "launcher" else "dspex-cluster"
    assert lines[0].startswith(prefix), lines[0]
    return lines[0].split(": ", 1)[1] if ": " in lines[0] else lines[0]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("@host", "bad node name '@host': nothing before the @"),
        ("foo@", "bad node name 'foo@': nothing after the @"),
        ("a b@h/st", "bad node name 'a b@h/st': the part before the @ may hold only letters"),
        ("a@b@c", "bad node name 'a@b@c': more than one @"),
    ],
)
def test_bad_node_name_is_one_line_with_the_same_words_on_both_sides(
    name: str, says: str, home: Path
) -> None:
    messages = set()
    for cli in BOTH:
        done = run(cli, ["--name", name, "--cookie", "c"], clean_env(home))
        assert done.returncode == 2
        message = one_line_error(done, cli)
        assert says in message, message
        messages.add(message[message.index("bad node name") :])
    assert len(messages) == 1, messages  # word for word the same


def test_missing_cookie_names_every_place_looked(home: Path) -> None:
    for cli in CLIS:
        message = one_line_error(run(cli, ["--name", "nocookie"], clean_env(home)), cli)
        assert message.startswith("no cookie given: looked in --cookie-file, --cookie, "), message
        assert "$DSPEX_COOKIE_FILE, $DSPEX_COOKIE, $ERLANG_COOKIE, ~/.erlang.cookie" in message


def test_missing_cookie_file(home: Path) -> None:
    absent = home / "no-such-cookie"
    for cli in BOTH:
        done = run(cli, ["--name", "x", "--cookie-file", str(absent)], clean_env(home))
        assert done.returncode == 1
        message = one_line_error(done, cli)
        assert message == f"cannot read cookie file {absent}: No such file or directory"
        # the variable gives the same error
        done = run(cli, ["--name", "x"], clean_env(home, DSPEX_COOKIE_FILE=str(absent)))
        assert one_line_error(done, cli) == message


def test_empty_cookie(home: Path) -> None:
    empty = home / "empty"
    empty.write_text("  \n")
    for cli in BOTH:
        done = run(cli, ["--name", "x", "--cookie-file", str(empty)], clean_env(home))
        assert one_line_error(done, cli) == f"the cookie from cookie file {empty} is empty"


def test_name_in_use(home: Path, epmd: Epmd) -> None:
    alive = unique("taken")
    holder = subprocess.Popen(
        [*CLIS["python-node"], "--name", alive, "--cookie", "c", "--epmd-port", str(epmd.port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(home),
    )
    try:
        assert holder.stdout is not None
        assert f"{alive}@127.0.0.1 up" in holder.stdout.readline()
        for cli in BOTH:
            done = run(
                cli,
                ["--name", alive, "--cookie", "c", "--epmd-port", str(epmd.port)],
                clean_env(home),
            )
            assert done.returncode == 1
            message = one_line_error(done, cli)
            assert message == (
                f"the name '{alive}' is in use: epmd on 127.0.0.1:{epmd.port} already has a node "
                "of that name"
            )
    finally:
        holder.terminate()
        holder.wait(timeout=10)


def test_epmd_not_running_gives_the_command_to_start_it(home: Path) -> None:
    # Python nodes only: a BEAM node starts epmd itself when none runs
    port = free_port()
    for cli in ("python-node", "python-agent-node"):
        done = run(cli, ["--name", "x", "--cookie", "c", "--epmd-port", str(port)], clean_env(home))
        assert done.returncode == 1
        message = one_line_error(done, cli)
        assert (
            message
            == f"epmd is not running on 127.0.0.1:{port}: start it with `epmd -port {port} -daemon`"
        )


@pytest.fixture
def not_epmd() -> Iterator[int]:
    """A port held by a program that is not epmd (it answers like a web server and hangs up)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        server.close()


def test_epmd_port_held_by_another_program(home: Path, not_epmd: int) -> None:
    for cli in BOTH:
        done = run(
            cli, ["--name", "x", "--cookie", "c", "--epmd-port", str(not_epmd)], clean_env(home)
        )
        assert done.returncode == 1
        message = one_line_error(done, cli)
        assert message == (
            f"the program on 127.0.0.1:{not_epmd} does not answer as epmd; is another program "
            f"using port {not_epmd}? Give a free port in ERL_EPMD_PORT or --epmd-port"
        )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--profile", "prod"], "--profile"),
        (["--net-ticktime", "0"], "--net-ticktime"),
        (["--epmd-port", "70000"], "not a port number"),
        (["--bogus"], "--bogus"),
        (["--cookie", "a", "--cookie-file", "b"], "--cookie"),
    ],
)
def test_bad_flag_values_are_one_line_usage_errors(args: list[str], says: str, home: Path) -> None:
    for cli in BOTH:
        done = run(cli, ["--name", "x", *args], clean_env(home))
        assert done.returncode == 2, done
        assert says in one_line_error(done, cli)


def test_python_refuses_beam_only_flags_and_strategies_in_one_line(home: Path) -> None:
    for cli in ("python-node",):
        done = run(cli, ["--name", "x", "--cookie", "c", "--capabilities", "gpu"], clean_env(home))
        assert done.returncode == 2
        assert "--capabilities is for BEAM nodes only" in one_line_error(done, cli)
        done = run(cli, ["--name", "x", "--cookie", "c", "--discovery", "dns"], clean_env(home))
        assert done.returncode == 2
        assert "dns discovery runs on BEAM nodes only" in one_line_error(done, cli)


def test_unreadable_tls_files(home: Path) -> None:
    absent = home / "absent.pem"
    for cli in BOTH:
        args = ["--name", "x", "--cookie", "c", "--tls-certfile", str(absent)]
        done = run(cli, [*args, "--tls-cacertfile", str(absent)], clean_env(home))
        assert done.returncode == 1
        assert str(absent) in one_line_error(done, cli)
        done = run(cli, args, clean_env(home))  # a certificate without a CA to check peers
        assert done.returncode == 2
        assert "TLS needs --tls-certfile and --tls-cacertfile" in one_line_error(done, cli)
