"""Command line: `python -m dspex_cluster node|agent-node ...` runs a node; `demo`, `platform`.

    python -m dspex_cluster [-v] node --name py1 [--cookie-file F] [--join beam1 ...]
        [--expose [NAME=]MODULE ...] [--epmd-port P] [--net-ticktime S] [--profile P]
        [--discovery epmd|static] [--hosts h1,h2] [--hidden | --visible] [-v]
    python -m dspex_cluster agent-node --name py1 ... (the same node options, no --expose)
    python -m dspex_cluster demo
    python -m dspex_cluster platform [--quick | --duration S] [--out reports/latest]
    python -m dspex_cluster --version

The node options are the launcher's (`beam/bin/dspex-node`): the same flags, the same
environment variables (a flag wins over its variable), the same name and cookie rules; the
README's "Flags and environment variables" table lists them all. To add an option to both kinds
of node, add a `NodeOption` to NODE_OPTIONS here and a line to the launcher's `env_flags`.

A cookie given with `--cookie` is moved off the command line at once: the process starts itself
over (same PID) with the cookie in an inherited pipe, so `ps` and /proc/PID/cmdline never show
it for longer than the interpreter takes to start.

Errors a user can fix (a bad name, no cookie, epmd not running, a name in use, ...) are one line
on stderr and exit status 1 (2 for a bad command line), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from dspex_cluster import __version__
from dspex_cluster.nodeconfig import (
    CookieError,
    NodeNameError,
    expand_node_name,
    read_cookie,
)

log = logging.getLogger("dspex_cluster.cli")

PROG = "dspex-cluster"
PROFILES = ("development", "production")
PYTHON_DISCOVERY = ("static", "epmd")  # dns, gossip, consul: BEAM nodes only
BEAM_DISCOVERY = ("dns", "gossip", "consul")
NODE_COMMANDS = ("node", "agent-node")


class UsageError(Exception):
    """A bad command line or environment variable: one line, exit status 2."""


# -- value parsers (each raises ValueError with a message fit for one line) --------------------


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"not a number of seconds: {text!r}") from None
    if not seconds > 0:
        raise ValueError(f"must be more than 0 seconds: {text!r}")
    return seconds


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"not a port number: {text!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"not a port number (1-65535): {text!r}")
    return port


def _port_or_any(text: str) -> int:
    """A port, or 0 for any free one."""
    return 0 if text.strip() == "0" else _port(text)


def _profile(text: str) -> str:
    if text not in PROFILES:
        raise ValueError(f"must be development or production, not {text!r}")
    return text


def _discovery(text: str) -> str:
    if text in BEAM_DISCOVERY:
        raise ValueError(
            f"{text} discovery runs on BEAM nodes only; a Python node takes static (its --join "
            "list) or epmd (every node epmd lists on --hosts): --join a BEAM node that uses it"
        )
    if text not in PYTHON_DISCOVERY:
        raise ValueError(f"unknown strategy {text!r} (static, epmd; BEAM nodes also dns, ...)")
    return text


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no", ""):
        return False
    raise ValueError(f"not true or false: {text!r}")


@dataclass(frozen=True)
class NodeOption:
    """A flag of both kinds of node, with the environment variable that gives its default.

    `many`: repeatable and comma-separated (a list). `beam_only`: the Python CLI refuses the flag
    with this reason (and ignores the variable, so one environment can serve both kinds).
    `commands`: the Python subcommands that take it.
    """

    flag: str
    env: str
    help: str
    parse: Callable[[str], Any] = str
    default: Any = None
    metavar: str | None = None
    many: bool = False
    beam_only: str | None = None
    commands: tuple[str, ...] = ("node", "agent-node")

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


NODE_OPTIONS: tuple[NodeOption, ...] = (
    NodeOption(
        "--name",
        "DSPEX_NAME",
        "node name: name@host, or name for name@127.0.0.1",
        expand_node_name,
        metavar="NAME",
    ),
    NodeOption(
        "--join",
        "DSPEX_JOIN",
        "node(s) to stay connected to (repeat or a,b); retried with back-off",
        expand_node_name,
        many=True,
        metavar="NODE",
    ),
    NodeOption("--epmd-port", "ERL_EPMD_PORT", "epmd's port (default 4369)", _port, 4369, "PORT"),
    NodeOption(
        "--net-ticktime",
        "DSPEX_NET_TICKTIME",
        "a connection silent this long is dropped (default 60, as the BEAM's; keep it equal "
        "on all nodes)",
        _positive_seconds,
        60.0,
        "SECONDS",
    ),
    NodeOption(
        "--profile",
        "DSPEX_PROFILE",
        "development (default) or production (never logs at debug level)",
        _profile,
        "development",
        "PROFILE",
    ),
    NodeOption(
        "--discovery",
        "DSPEX_DISCOVERY",
        "static (the --join list, default) or epmd (also every node epmd lists on --hosts)",
        _discovery,
        many=True,
        metavar="STRATEGY",
    ),
    NodeOption(
        "--hosts",
        "DSPEX_HOSTS",
        "hosts whose epmd the epmd strategy asks (default 127.0.0.1)",
        many=True,
        metavar="HOST",
    ),
    NodeOption(
        "--capabilities",
        "DSPEX_CAPABILITIES",
        "this node's capabilities (BEAM nodes only)",
        many=True,
        beam_only="Python nodes run no placed work",
    ),
    NodeOption(
        "--tls-certfile",
        "DSPEX_TLS_CERTFILE",
        "TLS distribution (inet_tls_dist): this node's certificate (PEM)",
        metavar="FILE",
    ),
    NodeOption(
        "--tls-keyfile",
        "DSPEX_TLS_KEYFILE",
        "its private key (default: in the certificate file)",
        metavar="FILE",
    ),
    NodeOption(
        "--tls-cacertfile",
        "DSPEX_TLS_CACERTFILE",
        "the CA(s) that peers' certificates must chain to (mutual TLS)",
        metavar="FILE",
    ),
    NodeOption(
        "--ssl-dist-optfile",
        "DSPEX_SSL_DIST_OPTFILE",
        "TLS distribution configured by a BEAM ssl_dist_optfile instead of the --tls-* files",
        metavar="FILE",
    ),
    NodeOption(
        "--dist-port",
        "DSPEX_DIST_PORT",
        "a fixed distribution port (default 0: any free one)",
        _port_or_any,
        0,
        "PORT",
    ),
    NodeOption("--metrics-port", "DSPEX_METRICS_PORT", "serve Prometheus /metrics", _port),
    NodeOption(
        "--dashboard-port",
        "DSPEX_DASHBOARD_PORT",
        "serve the live dashboard",
        _port,
        commands=("agent-node",),
    ),
    NodeOption(
        "--http-host",
        "DSPEX_METRICS_BIND",
        "address the metrics/dashboard ports listen on (default 127.0.0.1)",
        default="127.0.0.1",
        metavar="ADDRESS",
    ),
)


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (not the usage text first)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _add_node_options(parser: argparse.ArgumentParser, command: str) -> None:
    for opt in NODE_OPTIONS:
        if command not in opt.commands:
            continue
        env_note = f" [${opt.env}]"
        parser.add_argument(
            opt.flag,
            dest=opt.dest,
            action="append" if opt.many else "store",
            metavar=opt.metavar or opt.dest.upper(),
            help=argparse.SUPPRESS if opt.beam_only else opt.help + env_note,
        )
    cookie = parser.add_mutually_exclusive_group()
    cookie.add_argument(
        "--cookie-file", metavar="FILE", help="file holding the cookie [$DSPEX_COOKIE_FILE]"
    )
    cookie.add_argument(
        "--cookie",
        help="the cookie (prefer --cookie-file; moved off the command line at once) "
        "[$DSPEX_COOKIE, $ERLANG_COOKIE; else ~/.erlang.cookie]",
    )
    cookie.add_argument("--cookie-fd", type=int, help=argparse.SUPPRESS)  # see _hide_cookie
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument(
        "--hidden",
        dest="hidden",
        action="store_const",
        const=True,
        help="a hidden node, not in nodes() (the default for Python nodes) [$DSPEX_HIDDEN=true]",
    )
    kind.add_argument(
        "--visible",
        dest="hidden",
        action="store_const",
        const=False,
        help="a visible node (it then takes part in `global` as a BEAM node does)",
    )


def _settings(args: argparse.Namespace, environ: os._Environ[str] | dict[str, str]) -> None:
    """Fill each node option from its flag, else its variable, else its default (in place)."""
    for opt in NODE_OPTIONS:
        if args.command not in opt.commands:
            continue
        given = getattr(args, opt.dest)
        if opt.beam_only:
            if given is not None:
                raise UsageError(
                    f"{PROG} {args.command}: {opt.flag} is for BEAM nodes only: {opt.beam_only}"
                )
            continue
        source = opt.flag
        if given is None and environ.get(opt.env):
            given, source = ([environ[opt.env]] if opt.many else environ[opt.env]), f"${opt.env}"
        if given is None:
            setattr(args, opt.dest, [] if opt.many else opt.default)
            continue
        try:
            if opt.many:
                value: Any = [
                    opt.parse(v.strip()) for g in given for v in g.split(",") if v.strip()
                ]
            else:
                value = opt.parse(given)
        except ValueError as err:
            raise UsageError(f"{PROG} {args.command}: {source}: {err}") from None
        setattr(args, opt.dest, value)
    if args.name is None:
        raise UsageError(f"{PROG} {args.command}: --name is required (or $DSPEX_NAME)")
    if args.hidden is None:
        try:
            args.hidden = _boolean(environ.get("DSPEX_HIDDEN", "true") or "true")
        except ValueError as err:
            raise UsageError(f"{PROG} {args.command}: $DSPEX_HIDDEN: {err}") from None
    args.tls = _tls(args)
    if args.cookie_fd is not None:
        args.cookie = _read_cookie_fd(args.cookie_fd)
    args.cookie = read_cookie(args.cookie_file, args.cookie, environ)
    args.cookie_file = None


def _tls(args: argparse.Namespace) -> Any:
    """TlsOptions from --ssl-dist-optfile or the --tls-* files, else None (plain TCP)."""
    files = (args.tls_certfile, args.tls_keyfile, args.tls_cacertfile)
    if args.ssl_dist_optfile is None and not any(files):
        return None
    from dspex_cluster.runtime.tls import TlsOptions

    where = f"{PROG} {args.command}"
    if args.ssl_dist_optfile is not None:
        if any(files):
            raise UsageError(f"{where}: give --ssl-dist-optfile or the --tls-* files, not both")
        return TlsOptions.from_optfile(args.ssl_dist_optfile)
    if args.tls_certfile is None or args.tls_cacertfile is None:
        raise UsageError(f"{where}: TLS needs --tls-certfile and --tls-cacertfile")
    return TlsOptions.from_files(args.tls_certfile, args.tls_keyfile, args.tls_cacertfile)


# -- the cookie off the command line -------------------------------------------------------------


def _hide_cookie(argv: list[str]) -> None:
    """If `argv` (this process's own) holds `--cookie C`, start over (exec: same PID) without it,
    handing the cookie over through an inherited pipe. Returns only when there is none."""
    if any(arg == "--cookie-file" or arg.startswith("--cookie-file=") for arg in argv):
        return  # both: the parser refuses the command line anyway
    for i, arg in enumerate(argv):
        if arg == "--":
            return
        if arg == "--cookie" and i + 1 < len(argv):
            cookie, rest = argv[i + 1], argv[:i] + argv[i + 2 :]
            break
        if arg.startswith("--cookie="):
            cookie, rest = arg.partition("=")[2], argv[:i] + argv[i + 1 :]
            break
    else:
        return
    data = cookie.encode("utf-8", "replace")[:4096]  # within a pipe's buffer: never blocks
    read_end, write_end = os.pipe()
    os.write(write_end, data)
    os.close(write_end)
    os.set_inheritable(read_end, True)
    sys.stdout.flush()
    sys.stderr.flush()
    command = [sys.executable, "-m", "dspex_cluster", *rest, "--cookie-fd", str(read_end)]
    os.execv(sys.executable, command)


def _read_cookie_fd(fd: int) -> str:
    try:
        with os.fdopen(fd, "rb") as pipe:
            return pipe.read(4097).decode("utf-8", "replace")
    except OSError as err:
        raise CookieError(f"cannot read the cookie handed over on fd {fd}: {err}") from None


# -- commands ------------------------------------------------------------------------------------


def _join_keeper(node: Any, args: argparse.Namespace, *, with_join: bool) -> Any:
    from dspex_cluster.runtime.joiner import JoinKeeper

    hosts = args.hosts or ["127.0.0.1"]
    return JoinKeeper(
        node,
        args.join if with_join else [],
        epmd_hosts=hosts if "epmd" in args.discovery else [],
    )


def _node_command(args: argparse.Namespace) -> int:
    from dspex_cluster.runtime import Node

    node = Node(
        args.name,
        cookie=args.cookie,
        hidden=args.hidden,
        epmd_port=args.epmd_port,
        net_ticktime=args.net_ticktime,
        listen_port=args.dist_port,
        tls=args.tls,
    )
    for spec in args.expose:
        erl_name, _, path = spec.rpartition("=")
        try:
            module = importlib.import_module(path)  # named explicitly by the operator
        except ImportError as err:
            raise UsageError(f"{PROG} node: --expose {spec}: cannot import {path}: {err}") from None
        node.expose(erl_name or path.rsplit(".", 1)[-1], module)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await node.start()
        ops = None
        try:
            if args.metrics_port is not None:
                from dspex_cluster.ops import OpsServer

                ops = OpsServer(node, metrics_port=args.metrics_port, host=args.http_host)
                await ops.start()
                print(f"metrics at {ops.metrics_url}", flush=True)
            keeper = _join_keeper(node, args, with_join=True)
            await keeper.first_round()  # failures are logged; the node runs on and retries
            joining = loop.create_task(keeper.run(), name="join keeper")
            print(f"{node.name} up ({node._kind()}); SIGTERM to stop", flush=True)
            await stop.wait()
            joining.cancel()
            await asyncio.gather(joining, return_exceptions=True)
        finally:
            if ops is not None:
                await ops.stop()
            await node.stop()

    asyncio.run(main())
    return 0


def _agent_node_command(args: argparse.Namespace) -> int:
    try:
        from dspex_cluster.cluster import AgentSettings, run_agent_node
    except ModuleNotFoundError as err:  # scipy is the optional `skills` extra
        print(
            f"{PROG}: agent-node needs the numeric skills ({err.name} is missing): "
            "pip install 'dspex-cluster[skills]'",
            file=sys.stderr,
        )
        return 1

    async def main() -> None:
        loop = asyncio.get_running_loop()
        agents = asyncio.current_task()
        assert agents is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agents.cancel)
        ready = asyncio.Event()
        joining: list[asyncio.Task[None]] = []

        def on_ready(agent_node: Any) -> None:
            _print_ops_urls(agent_node)
            # the signal bus keeps the --join nodes (its relays); this keeps discovered ones
            keeper = _join_keeper(agent_node.node, args, with_join=False)
            joining.append(loop.create_task(keeper.run(), name="join keeper"))

        runner = asyncio.create_task(
            run_agent_node(
                args.name,
                args.cookie,
                args.join,
                args.hidden,
                epmd_port=args.epmd_port,
                net_ticktime=args.net_ticktime,
                ready=ready,
                metrics_port=args.metrics_port,
                dashboard_port=args.dashboard_port,
                http_host=args.http_host,
                on_ready=on_ready,
                dist_port=args.dist_port,
                settings=AgentSettings(state_dir=args.state_dir),
                tls=args.tls,
            )
        )
        try:
            await asyncio.wait(
                {runner, asyncio.create_task(ready.wait())}, return_when="FIRST_COMPLETED"
            )
            if ready.is_set():
                print(f"{args.name} up with the clustering agents; SIGTERM to stop", flush=True)
            await runner
        except asyncio.CancelledError:
            for task in [runner, *joining]:
                task.cancel()
            await asyncio.gather(runner, *joining, return_exceptions=True)

    asyncio.run(main())
    return 0


def _print_ops_urls(agent_node: object) -> None:
    ops = getattr(agent_node, "ops", None)
    if ops is not None and ops.metrics_url:
        print(f"metrics at {ops.metrics_url}", flush=True)
    if ops is not None and ops.dashboard_url:
        print(f"dashboard at {ops.dashboard_url}", flush=True)


def _platform_command(args: argparse.Namespace) -> int:
    from dspex_cluster.showcase import run_platform

    return run_platform(
        quick=args.quick, duration_s=args.duration, out=args.out, dashboard_port=args.dashboard_port
    )


def _demo_command(args: argparse.Namespace) -> int:
    from dspex_cluster.demo import run_demo

    return asyncio.run(run_demo())


# -- the parser ----------------------------------------------------------------------------------


def _add_common(parser: argparse.ArgumentParser, top: bool) -> None:
    """-v and --version, before or after the subcommand."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        # the subcommand's own -v must not reset the count given before it
        default=0 if top else argparse.SUPPRESS,
        help="log at INFO level; -vv at DEBUG (never with --profile production)",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (also what `--help` shows)."""
    parser = _Parser(prog=PROG, allow_abbrev=False, description="DSPEx Cluster nodes and tools")
    _add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    node = sub.add_parser(
        "node", help="a Python node serving --expose'd modules until SIGTERM", allow_abbrev=False
    )
    _add_common(node, top=False)
    _add_node_options(node, "node")
    node.add_argument(
        "--expose",
        action="append",
        default=[],
        metavar="[NAME=]MODULE",
        help="a Python module :erpc/:rpc may call (as NAME, default its last path part)",
    )
    node.set_defaults(func=_node_command)

    agent = sub.add_parser(
        "agent-node",
        help="a Python node with the four clustering agents, until SIGTERM",
        allow_abbrev=False,
    )
    _add_common(agent, top=False)
    _add_node_options(agent, "agent-node")
    agent.add_argument(
        "--state-dir",
        default=None,
        help="keep the agents' learned state under DIR/<node name>/ for warm restarts "
        "(default $DSPEX_STATE_DIR; neither: start cold)",
    )
    agent.set_defaults(func=_agent_node_command)

    plat = sub.add_parser(
        "platform",
        help="the main job (make run): 3 BEAM nodes + a Python agent node, a workload, "
        "a degraded node killed; writes reports/latest/report.{json,html}",
    )
    _add_common(plat, top=False)
    plat.add_argument("--quick", action="store_true", help="short phases (about 40 s in all)")
    plat.add_argument(
        "--duration", type=float, default=None, help="seconds per workload phase (default 30)"
    )
    plat.add_argument("--out", default="reports/latest", help="report directory")
    plat.add_argument(
        "--dashboard-port", type=int, default=None, help="live dashboard port (default: a free one)"
    )
    plat.set_defaults(func=_platform_command)

    demo = sub.add_parser("demo", help="a BEAM node and a Python node calling each other")
    _add_common(demo, top=False)
    demo.set_defaults(func=_demo_command)
    return parser


def log_level(profile: str, verbose: int) -> int:
    """WARNING by default, INFO with -v, DEBUG with -vv, but never DEBUG in production."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    return max(level, logging.INFO) if profile == "production" else level


def _fail(message: str, status: int) -> int:
    print(message, file=sys.stderr, flush=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (errors are one line on stderr)."""
    if argv is None:
        argv = sys.argv[1:]
        _hide_cookie(list(argv))  # execs itself without --cookie when it is there
    try:
        args = build_parser().parse_args(list(argv))
        if args.command in NODE_COMMANDS:
            _settings(args, os.environ)
        profile = getattr(args, "profile", None) or os.environ.get("DSPEX_PROFILE", "")
        logging.basicConfig(
            level=log_level(profile, args.verbose),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        if args.command in NODE_COMMANDS:
            log.debug(
                "%s %s: profile %s, join %s, epmd port %d, net_ticktime %s s, %s, discovery %s",
                args.command,
                args.name,
                args.profile,
                args.join or "-",
                args.epmd_port,
                args.net_ticktime,
                "hidden" if args.hidden else "visible",
                args.discovery or ["static"],
            )
        return int(args.func(args))
    except UsageError as err:
        return _fail(str(err), 2)
    except (NodeNameError, CookieError) as err:
        return _fail(f"{PROG}: {err}", 2 if isinstance(err, NodeNameError) else 1)
    except OSError as err:  # e.g. cannot listen on the name's host address
        return _fail(f"{PROG}: {err.strerror or err}", 1)
    except Exception as err:
        from dspex_cluster.dist.epmd import EPMDError  # not imported up front: start-up time
        from dspex_cluster.runtime.tls import TlsConfigError

        if isinstance(err, EPMDError | TlsConfigError):
            return _fail(f"{PROG}: {err}", 1)
        raise
    except KeyboardInterrupt:
        return 130


__all__ = ["NODE_OPTIONS", "NodeOption", "build_parser", "log_level", "main"]
