"""Command line: `python -m dspex_cluster node ...` runs a node; `... demo` shows calls both ways.

python -m dspex_cluster node --name py1@127.0.0.1 (--cookie C | --cookie-file F) [--hidden]
    [--visible] [--expose module.path | name=module.path ...] [--join beam1@127.0.0.1 ...]
    [--epmd-port P] [--net-ticktime SECONDS]
python -m dspex_cluster agent-node --name py1@127.0.0.1 (--cookie C | --cookie-file F)
    [--join beam1@127.0.0.1 ...] [--epmd-port P] [--net-ticktime SECONDS]
python -m dspex_cluster demo
python -m dspex_cluster platform [--quick | --duration S] [--out reports/latest]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

log = logging.getLogger("dspex_cluster.cli")


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return seconds


def _join_list(joins: list[str]) -> list[str]:
    """--join values, each repeated or comma-separated."""
    return [j for js in joins for j in js.split(",") if j]


def _node_command(args: argparse.Namespace) -> int:
    from dspex_cluster.runtime import Node

    node = Node(
        args.name,
        cookie=args.cookie,
        cookie_file=args.cookie_file,
        hidden=not args.visible,
        epmd_port=args.epmd_port,
        net_ticktime=args.net_ticktime,
        listen_port=args.dist_port,
    )
    for spec in args.expose:
        erl_name, _, path = spec.rpartition("=")
        module = importlib.import_module(path)  # named explicitly by the operator
        node.expose(erl_name or path.rsplit(".", 1)[-1], module)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await node.start()
        ops = None
        if args.metrics_port is not None:
            from dspex_cluster.ops import OpsServer

            ops = OpsServer(node, metrics_port=args.metrics_port, host=args.http_host)
            await ops.start()
            print(f"metrics at {ops.metrics_url}", flush=True)
        for target in _join_list(args.join):
            # once, at start: the node runs on either way (the peer may dial us later)
            if not await node.connect(target):
                log.warning("could not join %s; running without it", target)
        print(
            f"{node.name} up ({'hidden' if node.hidden else 'visible'}); SIGTERM to stop",
            flush=True,
        )
        await stop.wait()
        if ops is not None:
            await ops.stop()
        await node.stop()

    asyncio.run(main())
    return 0


def _agent_node_command(args: argparse.Namespace) -> int:
    try:
        from dspex_cluster.cluster import run_agent_node
    except ModuleNotFoundError as err:  # scipy is the optional `skills` extra
        print(
            f"agent-node needs the numeric skills ({err.name} is missing): "
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
        runner = asyncio.create_task(
            run_agent_node(
                args.name,
                args.cookie,
                _join_list(args.join),
                cookie_file=args.cookie_file,
                epmd_port=args.epmd_port,
                net_ticktime=args.net_ticktime,
                ready=ready,
                metrics_port=args.metrics_port,
                dashboard_port=args.dashboard_port,
                http_host=args.http_host,
                on_ready=_print_ops_urls,
                dist_port=args.dist_port,
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
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(main())
    return 0


def _print_ops_urls(agent_node: object) -> None:
    ops = getattr(agent_node, "ops", None)
    if ops is not None and ops.metrics_url:
        print(f"metrics at {ops.metrics_url}", flush=True)
    if ops is not None and ops.dashboard_url:
        print(f"dashboard at {ops.dashboard_url}", flush=True)


def _add_ops(parser: argparse.ArgumentParser, dashboard: bool) -> None:
    parser.add_argument(
        "--metrics-port", type=int, default=None, metavar="P", help="serve Prometheus /metrics"
    )
    if dashboard:
        parser.add_argument(
            "--dashboard-port", type=int, default=None, metavar="P", help="serve the live dashboard"
        )
    parser.add_argument(
        "--dist-port",
        type=int,
        default=int(os.environ.get("DSPEX_DIST_PORT") or 0),
        metavar="P",
        help="fixed distribution port (default $DSPEX_DIST_PORT, else any free one)",
    )
    parser.add_argument(
        "--http-host",
        default="127.0.0.1",
        help="address the metrics/dashboard ports listen on (default 127.0.0.1)",
    )


def _platform_command(args: argparse.Namespace) -> int:
    from dspex_cluster.showcase import run_platform

    return run_platform(
        quick=args.quick, duration_s=args.duration, out=args.out, dashboard_port=args.dashboard_port
    )


def _demo_command(args: argparse.Namespace) -> int:
    from dspex_cluster.demo import run_demo

    return asyncio.run(run_demo())


def _add_net_ticktime(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--net-ticktime",
        type=_positive_seconds,
        default=60.0,
        metavar="SECONDS",
        help="a connection silent this long is dropped; ticks go every quarter (default 60, "
        "as the BEAM's net_ticktime: keep it equal on all nodes)",
    )


def _version() -> str:
    from dspex_cluster import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dspex_cluster")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--version", action="version", version=f"dspex-cluster {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    node = sub.add_parser("node", help="run a Python node until SIGTERM")
    node.add_argument("--name", required=True, help="name@host, e.g. py1@127.0.0.1")
    cookie = node.add_mutually_exclusive_group()
    cookie.add_argument("--cookie", help="the cluster cookie (prefer --cookie-file)")
    cookie.add_argument("--cookie-file", help="file holding the cookie (default ~/.erlang.cookie)")
    kind = node.add_mutually_exclusive_group()
    kind.add_argument("--hidden", action="store_true", help="hidden node (the default)")
    kind.add_argument("--visible", action="store_true", help="visible node (in nodes())")
    node.add_argument(
        "--expose",
        action="append",
        default=[],
        metavar="[NAME=]MODULE",
        help="a Python module :erpc/:rpc may call (as NAME, default its last path part)",
    )
    node.add_argument(
        "--join",
        action="append",
        default=[],
        help="BEAM node(s) to connect to at start (repeat or a,b); a failure is logged",
    )
    node.add_argument("--epmd-port", type=int, default=None, help="default $ERL_EPMD_PORT/4369")
    _add_net_ticktime(node)
    _add_ops(node, dashboard=False)
    node.set_defaults(func=_node_command)

    agent = sub.add_parser(
        "agent-node", help="a Python node with the four clustering agents, until SIGTERM"
    )
    agent.add_argument("--name", required=True, help="name@host, e.g. py1@127.0.0.1")
    agent_cookie = agent.add_mutually_exclusive_group()
    agent_cookie.add_argument("--cookie", help="the cluster cookie (prefer --cookie-file)")
    agent_cookie.add_argument("--cookie-file", help="file holding the cookie")
    agent.add_argument(
        "--join", action="append", default=[], help="BEAM node(s) to join (repeat or a,b)"
    )
    agent.add_argument("--epmd-port", type=int, default=None, help="default $ERL_EPMD_PORT/4369")
    _add_net_ticktime(agent)
    _add_ops(agent, dashboard=True)
    agent.set_defaults(func=_agent_node_command)

    plat = sub.add_parser(
        "platform",
        help="the main job (make run): 3 BEAM nodes + a Python agent node, a workload, "
        "a degraded node killed; writes reports/latest/report.{json,html}",
    )
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
    demo.set_defaults(func=_demo_command)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return int(args.func(args))
