"""`OpsServer`: aiohttp in the node's own event loop, serving `GET /metrics` on the metrics port
and the live dashboard on the dashboard port (agent nodes only).

Dashboard routes: `/` (the page, with the members already rendered in its HTML), `/events`
(server-sent events: `snapshot` twice a second, `signal` as each arrives), `/api/snapshot`
(the same snapshot as JSON) and `/static/dashboard.js`. The script is shipped in the package;
nothing is fetched from elsewhere at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from dspex_cluster.ops import metrics
from dspex_cluster.ops.dashboard import DashboardState
from dspex_cluster.runtime import Node

if TYPE_CHECKING:
    from dspex_cluster.cluster.node import AgentNode

log = logging.getLogger("dspex_cluster.ops")

STATIC = resources.files("dspex_cluster.ops") / "static"


class OpsServer:
    """Metrics (any node) and dashboard (agent node) HTTP endpoints; `await start()`, `stop()`.

    A port of 0 picks a free one (read it back from `metrics_port` / `dashboard_port`)."""

    def __init__(
        self,
        node: Node,
        agent_node: AgentNode | None = None,
        *,
        metrics_port: int | None = None,
        dashboard_port: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        if dashboard_port is not None and agent_node is None:
            raise ValueError("the dashboard runs on an agent node (agent-node --dashboard-port)")
        self.node = node
        self.agent_node = agent_node
        self.host = host
        self.metrics_port = metrics_port
        self.dashboard_port = dashboard_port
        self.registry = metrics.node_registry(node, agent_node)
        self.dashboard: DashboardState | None = None
        self._runners: list[web.AppRunner] = []
        self._streams: set[web.StreamResponse] = set()

    @property
    def dashboard_url(self) -> str | None:
        return None if self.dashboard_port is None else f"http://{self.host}:{self.dashboard_port}/"

    @property
    def metrics_url(self) -> str | None:
        if self.metrics_port is None:
            return None
        return f"http://{self.host}:{self.metrics_port}/metrics"

    async def start(self) -> None:
        try:
            if self.metrics_port is not None:
                app = web.Application()
                app.router.add_get("/metrics", self._metrics)
                self.metrics_port = await self._serve(app, self.metrics_port)
            if self.dashboard_port is not None:
                assert self.agent_node is not None
                self.dashboard = DashboardState(self.agent_node)
                await self.dashboard.start()
                app = web.Application()
                app.router.add_get("/", self._page)
                app.router.add_get("/events", self._events)
                app.router.add_get("/api/snapshot", self._snapshot)
                app.router.add_get("/static/dashboard.js", self._script)
                app.router.add_post("/api/variables", self._set_variable)
                self.dashboard_port = await self._serve(app, self.dashboard_port)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for stream in list(self._streams):  # open SSE streams would hold the runner's cleanup
            with contextlib.suppress(Exception):
                await stream.write_eof()
        if self.dashboard is not None:
            await self.dashboard.stop()
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    async def _serve(self, app: web.Application, port: int) -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, self.host, port)
        await site.start()
        server = site._server
        assert server is not None
        return int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    # -- handlers ------------------------------------------------------------------------------

    async def _metrics(self, request: web.Request) -> web.Response:
        body = metrics.render(self.registry)
        return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})

    async def _snapshot(self, request: web.Request) -> web.Response:
        assert self.dashboard is not None
        return web.json_response(self.dashboard.snapshot())

    async def _set_variable(self, request: web.Request) -> web.Response:
        """`{"name": shown name, "value": JSON}` -> `Variable.set/2`; its answer as JSON."""
        assert self.dashboard is not None
        try:
            body = await request.json()
            name, value = body["name"], body["value"]
            if not isinstance(name, str):
                raise TypeError("name must be a string")
        except (ValueError, KeyError, TypeError) as err:
            return web.json_response({"ok": False, "error": f"bad request: {err}"}, status=400)
        result = await self.dashboard.set_variable(name, value)
        return web.json_response(result, status=200 if result["ok"] else 422)

    async def _script(self, request: web.Request) -> web.Response:
        text = (STATIC / "dashboard.js").read_text(encoding="utf-8")
        return web.Response(text=text, content_type="application/javascript")

    async def _page(self, request: web.Request) -> web.Response:
        assert self.dashboard is not None
        snap = self.dashboard.snapshot()
        rows = "".join(member_row_html(m) for m in snap["members"])
        page = (STATIC / "dashboard.html").read_text(encoding="utf-8")
        page = page.replace("{{node}}", html.escape(snap["node"]))
        page = page.replace("{{member_rows}}", rows)
        # raw JSON inside <script type="application/json">: only "<" must not appear as such
        page = page.replace("{{snapshot}}", json.dumps(snap).replace("<", "\\u003c"))
        return web.Response(text=page, content_type="text/html")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        assert self.dashboard is not None
        stream = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await stream.prepare(request)
        queue = self.dashboard.subscribe()
        self._streams.add(stream)
        try:
            await stream.write(sse("snapshot", json.dumps(self.dashboard.snapshot())))
            for row in list(self.dashboard.signals):
                await stream.write(sse("signal", json.dumps(row)))
            while True:
                try:
                    event, data = await asyncio.wait_for(queue.get(), 15.0)
                    await stream.write(sse(event, data))
                except TimeoutError:
                    await stream.write(b": keep-alive\n\n")
        except (ConnectionResetError, asyncio.CancelledError, RuntimeError):
            pass  # the browser went away, or the server stops
        finally:
            self.dashboard.unsubscribe(queue)
            self._streams.discard(stream)
        return stream


def sse(event: str, data: str) -> bytes:
    """One server-sent event (data is one JSON line)."""
    return f"event: {event}\ndata: {data}\n\n".encode()


def member_row_html(m: dict[str, Any]) -> str:
    """A member's table row as the page renders it before the script takes over."""

    def cell(v: Any) -> str:
        return "" if v is None else html.escape(str(v))

    node = html.escape(m["node"])
    return (
        f'<tr data-node="{node}" class="status-{cell(m["status"])}"><td class="node">{node}</td>'
        f'<td>{cell(m["kind"])}</td><td class="status">{cell(m["status"])}</td>'
        f"<td>{cell(m['phi'])}</td><td>{cell(m['cpu'])}</td><td>{cell(m['memory'])}</td>"
        f"<td>{cell(m['vm_memory_mb'])}</td><td>{'yes' if m['drained'] else ''}</td></tr>"
    )
