"""Node: a Python peer in an Erlang cluster. It owns the tables (processes, names, aliases,
connections) and is the only place that changes them."""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import itertools
import logging
import os
import secrets
import signal
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from dspex_cluster import names
from dspex_cluster.dist import control as C
from dspex_cluster.dist import flags as F
from dspex_cluster.dist.framing import DEFAULT_MAX_FRAME, OFFLOAD_FRAME_BYTES, encode_frame
from dspex_cluster.etf import NO_MESSAGE, Atom, ImproperList, Pid, Reference
from dspex_cluster.nodeconfig import expand_node_name, read_cookie
from dspex_cluster.runtime import epmd_client
from dspex_cluster.runtime.atoms import ALIAS, GEN_CALL, NOCONNECTION, NOPROC, NORMAL, SHUTDOWN
from dspex_cluster.runtime.connection import DistConnection
from dspex_cluster.runtime.dispatch import ControlDispatcher
from dspex_cluster.runtime.genserver import GenServer
from dspex_cluster.runtime.process import Endpoint, Exit, Process, exception_reason
from dspex_cluster.runtime.rpc import CallTimeout, RpcWaiter, _CallWaiter
from dspex_cluster.runtime.services import install_services
from dspex_cluster.runtime.tls import TlsGate, TlsOptions, open_tls_connection

log = logging.getLogger("dspex_cluster.runtime.node")

_MAX_PID_ID = 1 << 15  # keep ids and serials in the classic ranges every OTP accepts
_MAX_PID_SERIAL = 1 << 13


class _PendingConnect:
    """A connection to one peer being set up: queued frames and everyone waiting for it.

    As in net_kernel there is one entry per peer, whichever side started it; `owner` is the
    connection whose handshake currently counts (our dial or the peer's), so that we never dial
    a peer that is already dialling us, and a dial overtaken by the peer's answers "alive" with
    false instead of tearing down a connection the peer already has up.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.future: asyncio.Future[DistConnection] = loop.create_future()
        self.future.add_done_callback(_retrieve)
        self.queue: list[bytes] = []
        self.owner: DistConnection | None = None
        self.task: asyncio.Task[None] | None = None


class Node:
    """A distributed Erlang node implemented in asyncio. See the package README for the API."""

    def __init__(
        self,
        name: str,
        cookie: str | None = None,
        hidden: bool = True,
        epmd_port: int | None = None,
        *,
        cookie_file: str | os.PathLike[str] | None = None,
        net_ticktime: float = 60.0,
        listen_host: str | None = None,
        listen_port: int = 0,
        max_frame: int = DEFAULT_MAX_FRAME,
        setup_time: float = 7.0,
        tls: TlsOptions | None = None,
    ) -> None:
        name = expand_node_name(name)  # NodeNameError (a ValueError) says what is wrong
        self.name = Atom(name)
        self.alive, self.host = name.split("@")
        # CookieError (a ValueError) when there is none; an explicit cookie= wins
        self._cookie = read_cookie(None, cookie) if cookie is not None else read_cookie(cookie_file)
        self.hidden = hidden
        self.epmd_port = epmd_port if epmd_port is not None else epmd_client.default_epmd_port()
        self.flags = F.node_flags(hidden)
        self.net_ticktime = net_ticktime
        self.listen_host = listen_host
        # the distribution port (0: any free one); a fixed one for firewalls and containers, as
        # inet_dist_listen_min = inet_dist_listen_max on a BEAM node
        self.listen_port = listen_port
        # TLS distribution (inet_tls_dist): contexts made now, so a bad file fails here
        self.tls = tls
        self._tls_server = tls.server_context() if tls is not None else None
        self._tls_client = tls.client_context() if tls is not None else None
        self.max_frame = max_frame
        self.decode_in_thread_above = OFFLOAD_FRAME_BYTES  # frame bytes; see DistConnection
        self._decode_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.setup_time = setup_time
        self.creation = 0
        self.port = 0
        self._procs: dict[Pid, Endpoint] = {}
        self._names: dict[Atom, Pid] = {}
        self._named: dict[Atom, Endpoint] = {}  # the same names, straight to the endpoint
        self._names_of: dict[Pid, Atom] = {}
        self._aliases: dict[Reference, Endpoint] = {}
        self._conns: dict[Atom, DistConnection] = {}
        self._pending: dict[Atom, _PendingConnect] = {}
        self._exposed: dict[str, dict[str, Callable[..., Any]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pid_counter = itertools.count(1)
        self._ref_counter = itertools.count(1)
        self._ref_salt = secrets.randbits(32)
        self._unlink_ids = itertools.count(1)
        self._dispatcher = ControlDispatcher(self)
        self._control_encodings: dict[tuple, bytes] = {}
        self._nodedown_callbacks: list[Callable[[Atom, Any], None]] = []
        self._nodeup_callbacks: list[Callable[[Atom], None]] = []
        self._joined: set[Atom] = set()  # BEAM nodes we announced ourselves to (see join)
        self._on_stop: list[Callable[[], None]] = []  # serve_forever's wake-ups
        self._server: asyncio.Server | None = None
        self._registration: epmd_client.Registration | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop
        self.system_pid: Pid
        self.started = False

    def __repr__(self) -> str:
        return f"<Node {self.name} {'hidden' if self.hidden else 'visible'}>"

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, register with epmd and start the node's services (rex, net_kernel, ...)."""
        if self.started:
            return
        self.loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.Protocol] = lambda: DistConnection(self)  # noqa: E731
        if self._tls_server is not None:
            tls_server, plain = self._tls_server, factory
            factory = lambda: TlsGate(tls_server, plain, self.setup_time)  # noqa: E731
        self._server = await self.loop.create_server(
            factory, host=self._bind_host(), port=self.listen_port
        )
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            self._registration = await epmd_client.register(
                self.alive, self.port, self.hidden, self.epmd_port
            )
        except BaseException:
            self._server.close()
            raise
        self.creation = self._registration.creation
        self.started = True
        install_services(self)
        self._ticker = self.loop.create_task(self._tick_loop(), name=f"{self.name} ticker")
        log.info("node %s up on port %d (%s)", self.name, self.port, self._kind())

    async def stop(self) -> None:
        """Stop every process, close every connection, unregister from epmd."""
        if not self.started:
            return
        self.started = False
        for wake in list(self._on_stop):
            wake()
        for ep in list(self._procs.values()):
            if isinstance(ep, Process):
                ep._kill(SHUTDOWN)
            else:
                self._terminate(ep, SHUTDOWN)
        tasks = [ep._task for ep in self._procs.values() if isinstance(ep, Process) and ep._task]
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        if self._ticker is not None:
            self._ticker.cancel()
        for pending in list(self._pending.values()):
            if pending.task is not None:
                pending.task.cancel()
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._conns.values()):
            conn.close()
        if self._server is not None:
            self._server.close()
        if self._registration is not None:
            self._registration.close()
        pending_tasks = [t for t in [self._ticker, *self._tasks] if t is not None]
        if pending_tasks:
            await asyncio.wait(pending_tasks, timeout=2)
        if self._decode_pool is not None:
            self._decode_pool.shutdown(wait=False, cancel_futures=True)
            self._decode_pool = None
        await asyncio.sleep(0)
        log.info("node %s stopped", self.name)

    async def serve_forever(
        self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """Start the node if needed and run until one of `signals` arrives (SIGTERM, Ctrl-C) or
        `stop()` is called elsewhere; then stop it: every process, connection and the epmd
        registration. Signal handlers are installed only while it runs, in the main thread."""
        await self.start()
        done = asyncio.Event()
        self._on_stop.append(done.set)
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in signals:
            try:
                loop.add_signal_handler(sig, done.set)
                installed.append(sig)
            except (ValueError, RuntimeError, NotImplementedError):
                pass  # not the main thread, or no signals here: stop() still ends the wait
        try:
            if self.started:
                await done.wait()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            if done.set in self._on_stop:
                self._on_stop.remove(done.set)
            await self.stop()

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _bind_host(self) -> str | None:
        if self.listen_host is not None:
            return self.listen_host
        try:
            ipaddress.ip_address(self.host)
            return self.host
        except ValueError:
            return None  # a host name: listen on every interface

    def _kind(self) -> str:
        return "hidden" if self.hidden else "visible"

    # -- identifiers ---------------------------------------------------------------------------

    def _new_pid(self) -> Pid:
        n = next(self._pid_counter)
        return Pid(self.name, n % _MAX_PID_ID, (n // _MAX_PID_ID) % _MAX_PID_SERIAL, self.creation)

    def make_ref(self) -> Reference:
        """A new unique reference of this node (erlang:make_ref/0)."""
        n = next(self._ref_counter)
        return Reference(
            self.name, self.creation, (n & 0x3FFFF, (n >> 18) & 0xFFFFFFFF, self._ref_salt)
        )

    def _is_local(self, node: Any) -> bool:
        return node == self.name

    # -- processes -----------------------------------------------------------------------------

    async def spawn(self, proc: Process, name: str | None = None) -> Pid:
        """Start `proc`; a GenServer's init has run when this returns."""
        pid = self._new_pid()
        proc._attach(self, pid)
        self._procs[pid] = proc
        if name is not None:
            self.register(name, pid)
        started: asyncio.Future[None] | None = None
        if isinstance(proc, GenServer):
            started = self.loop.create_future()
            proc._started = started  # type: ignore[attr-defined]
        proc._task = self.loop.create_task(self._run_process(proc), name=repr(pid))
        proc._task.add_done_callback(lambda task: self._process_task_done(proc, task))
        if started is not None:
            await asyncio.wait({started, proc._task}, return_when=asyncio.FIRST_COMPLETED)
            if not started.done():
                raise Exit(getattr(proc, "_exit_reason", NORMAL))
        return pid

    def _attach_endpoint(self, ep: Endpoint) -> Pid:
        pid = self._new_pid()
        ep._attach(self, pid)
        self._procs[pid] = ep
        return pid

    async def _run_process(self, proc: Process) -> None:
        reason: Any = NORMAL
        try:
            await proc._main()
        except Exit as ex:
            reason = ex.reason
        except asyncio.CancelledError:
            reason = proc._kill_reason if proc._kill_reason is not None else SHUTDOWN
        except Exception as exc:
            reason = exception_reason(exc)
            log.error("process %r (%s) crashed", proc.pid, type(proc).__name__, exc_info=exc)
        proc._exit_reason = reason  # type: ignore[attr-defined]
        self._terminate(proc, reason)

    def _process_task_done(self, proc: Process, task: asyncio.Task[None]) -> None:
        """A task cancelled before it ever ran never reached _run_process's handlers."""
        if proc._alive:
            reason = proc._kill_reason if proc._kill_reason is not None else SHUTDOWN
            proc._exit_reason = reason  # type: ignore[attr-defined]
            self._terminate(proc, reason)

    def _terminate(self, ep: Endpoint, reason: Any) -> None:
        """An endpoint is gone: notify its links and monitors, drop it from every table."""
        if not ep._alive:
            return
        ep._alive = False
        pid = ep.pid
        self._procs.pop(pid, None)
        name = self._names_of.pop(pid, None)
        if name is not None:
            self._names.pop(name, None)
            self._named.pop(name, None)
        for alias in ep._alias_refs:
            self._aliases.pop(alias, None)
        links, ep._links = ep._links, set()
        for other in links:
            self._send_exit(pid, other, reason, link=True)
        watchers, ep._monitored_by = ep._monitored_by, {}
        for ref, (watcher, named_as) in watchers.items():
            self._send_down(ref, named_as, watcher, reason)
        held, ep._monitors = ep._monitors, {}
        for ref, target in held.items():
            self._drop_monitor(pid, ref, target)

    def register(self, name: str, pid: Pid) -> None:
        """Register a live local process under `name` (erlang:register/2); ValueError if taken."""
        atom = Atom(name)
        if atom in self._names and self._names[atom] != pid:
            raise ValueError(f"name {name!r} is already registered")
        if pid not in self._procs:
            raise ValueError(f"{pid!r} is not a live local process")
        self._names[atom] = pid
        self._named[atom] = self._procs[pid]
        self._names_of[pid] = atom

    def unregister(self, name: str) -> None:
        """Remove the registered name `name` (no error if it is not registered)."""
        pid = self._names.pop(Atom(name), None)
        self._named.pop(Atom(name), None)
        if pid is not None:
            self._names_of.pop(pid, None)

    def whereis(self, name: str) -> Pid | None:
        """The pid registered as `name`, or None (erlang:whereis/1)."""
        return self._names.get(Atom(name))

    def registered(self) -> list[Atom]:
        """Every registered name on this node (erlang:registered/0)."""
        return list(self._names)

    def is_alive(self, pid: Pid) -> bool:
        """Whether `pid` is a live local process."""
        return pid in self._procs

    def create_alias(self, pid: Pid) -> Reference:
        """A reference that routes messages to `pid` (erlang:alias/0)."""
        ref = self.make_ref()
        ep = self._procs[pid]
        self._aliases[ref] = ep
        ep._alias_refs.append(ref)
        return ref

    def remove_alias(self, ref: Reference) -> None:
        """Deactivate an alias made by create_alias (erlang:unalias/1)."""
        self._aliases.pop(ref, None)

    # -- sending -------------------------------------------------------------------------------

    def send(self, dest: Any, message: Any, sender: Pid | None = None) -> None:
        """dest: Pid, alias Reference, local name, or (name, node). Like `!`, never blocks."""
        if isinstance(dest, Pid):
            if dest.node == self.name:
                ep = self._procs.get(dest)
                if ep is not None:
                    ep._deliver(message)
                return
            conn = self._conns.get(dest.node)
            fl = conn.flags if conn is not None else F.SEND_SENDER
            ctrl = (
                C.send_sender(sender or self.system_pid, dest)
                if fl & F.SEND_SENDER
                else C.send(dest)
            )
            self._send_control(dest.node, ctrl, message)
        elif isinstance(dest, Reference):
            if dest.node == self.name:
                ep = self._aliases.get(dest)
                if ep is not None:
                    ep._deliver(message)
                return
            self._send_control(dest.node, C.alias_send(sender or self.system_pid, dest), message)
        elif isinstance(dest, tuple) and len(dest) == 2:
            name, node = dest
            if node == self.name:
                self.send(Atom(name), message, sender)
                return
            self._send_control(
                Atom(node), C.reg_send(sender or self.system_pid, Atom(name)), message
            )
        elif isinstance(dest, str):
            ep = self._named.get(Atom(dest))
            if ep is None:
                raise ValueError(f"no process registered as {dest!r}")  # erlang: badarg
            ep._deliver(message)
        else:
            raise TypeError(f"cannot send to {dest!r}")

    def _send_control(self, node: Atom, ctrl: tuple, message: Any = NO_MESSAGE) -> None:
        frame = encode_frame(ctrl, message, self._control_encodings)
        conn = self._conns.get(node)
        if conn is not None:
            conn.send_frame(frame)
            return
        if not self.started:
            return
        self._connect_pending(node).queue.append(frame)

    async def drain(self) -> None:
        """Wait until every connection's write buffer is below its high-water mark."""
        for conn in list(self._conns.values()):
            await conn.drain()

    # -- links, monitors, exits ----------------------------------------------------------------

    def link(self, a: Pid, b: Pid) -> None:
        """Link local process `a` to `b` (local or remote), as erlang:link/1 run by `a`."""
        ep = self._procs.get(a)
        if ep is None:
            raise ValueError(f"{a!r} is not a live local process")
        if b == a:
            return
        if b.node == self.name:
            other = self._procs.get(b)
            if other is None:
                ep._exit_signal(b, NOPROC, True)
                return
            ep._links.add(b)
            other._links.add(a)
        else:
            ep._links.add(b)
            self._send_control(b.node, C.link(a, b))

    def unlink(self, a: Pid, b: Pid) -> None:
        """Remove the link between local process `a` and `b` (erlang:unlink/1 run by `a`)."""
        ep = self._procs.get(a)
        if ep is not None:
            ep._links.discard(b)
        if b.node == self.name:
            other = self._procs.get(b)
            if other is not None:
                other._links.discard(a)
        elif b.node in self._conns:
            self._send_control(b.node, C.unlink_id(next(self._unlink_ids), a, b))

    def monitor(self, watcher: Pid, target: Any) -> Reference:
        """Make local process `watcher` monitor `target` (a pid, a local name or a (name, node)
        pair); its reference. A DOWN reaches `watcher` when the target ends."""
        ref = self.make_ref()
        ep = self._procs.get(watcher)
        if ep is None:
            raise ValueError(f"{watcher!r} is not a live local process")
        if isinstance(target, tuple) and len(target) == 2 and Atom(target[1]) == self.name:
            target = Atom(target[0])
        if isinstance(target, Pid):
            if target.node == self.name:
                watched = self._procs.get(target)
                if watched is None:
                    ep._down(ref, target, NOPROC)
                else:
                    watched._monitored_by[ref] = (watcher, target)
                    ep._monitors[ref] = target
            else:
                ep._monitors[ref] = target
                self._send_control(target.node, C.monitor_p(watcher, target, ref))
        elif isinstance(target, tuple) and len(target) == 2:
            name, node = Atom(target[0]), Atom(target[1])
            ep._monitors[ref] = (name, node)
            self._send_control(node, C.monitor_p(watcher, name, ref))
        elif isinstance(target, str):
            name = Atom(target)
            pid = self._names.get(name)
            named = (name, self.name)
            if pid is None:
                ep._down(ref, named, NOPROC)
            else:
                self._procs[pid]._monitored_by[ref] = (watcher, named)
                ep._monitors[ref] = pid
        else:
            raise TypeError(f"cannot monitor {target!r}")
        return ref

    def demonitor(self, watcher: Pid, ref: Reference) -> None:
        """Remove the monitor `ref` held by `watcher` (erlang:demonitor/1)."""
        ep = self._procs.get(watcher)
        target = ep._monitors.pop(ref, None) if ep is not None else None
        if target is not None:
            self._drop_monitor(watcher, ref, target)

    def _drop_monitor(self, watcher: Pid, ref: Reference, target: Any) -> None:
        if isinstance(target, Pid):
            if target.node == self.name:
                watched = self._procs.get(target)
                if watched is not None:
                    watched._monitored_by.pop(ref, None)
            elif target.node in self._conns:
                self._send_control(target.node, C.demonitor_p(watcher, target, ref))
        elif isinstance(target, tuple) and target[1] in self._conns:
            self._send_control(target[1], C.demonitor_p(watcher, target[0], ref))

    def exit(self, pid: Pid, reason: Any, sender: Pid | None = None) -> None:
        """erlang:exit/2: an exit signal that is not from a link."""
        self._send_exit(sender or self.system_pid, pid, reason, link=False)

    def _send_exit(self, sender: Pid, to: Pid, reason: Any, link: bool) -> None:
        if to.node == self.name:
            ep = self._procs.get(to)
            if ep is not None:
                if link:
                    ep._links.discard(sender)
                ep._exit_signal(sender, reason, link)
            return
        conn = self._conns.get(to.node)
        if conn is None and link:
            return  # the link died with the connection; nothing to tell
        payload = conn is not None and bool(conn.flags & F.EXIT_PAYLOAD)
        if link:
            if payload:
                self._send_control(to.node, C.payload_exit(sender, to), reason)
            else:
                self._send_control(to.node, C.exit_(sender, to, reason))
        elif payload:
            self._send_control(to.node, C.payload_exit2(sender, to), reason)
        else:
            self._send_control(to.node, C.exit2(sender, to, reason))

    def _send_down(self, ref: Reference, named_as: Any, watcher: Pid, reason: Any) -> None:
        if watcher.node == self.name:
            ep = self._procs.get(watcher)
            if ep is not None and ep._monitors.pop(ref, None) is not None:
                ep._down(ref, named_as, reason)
            return
        conn = self._conns.get(watcher.node)
        if conn is None:
            return
        if conn.flags & F.EXIT_PAYLOAD:
            self._send_control(
                watcher.node, C.payload_monitor_p_exit(named_as, watcher, ref), reason
            )
        else:
            self._send_control(watcher.node, C.monitor_p_exit(named_as, watcher, ref, reason))

    # -- calls ---------------------------------------------------------------------------------

    async def call(self, dest: Any, request: Any, timeout: float = 5.0) -> Any:
        """gen_server:call. Raises Exit(reason) if the server dies or is absent (noproc,
        noconnection), CallTimeout (an Exit and a TimeoutError) after `timeout` seconds."""
        waiter = _CallWaiter(self.loop.create_future())
        pid = self._attach_endpoint(waiter)
        try:
            monitor_target = Atom(dest) if isinstance(dest, str) else dest
            ref = self.monitor(pid, monitor_target)
            waiter.tag = ImproperList([ALIAS], ref)
            self._aliases[ref] = waiter
            waiter._alias_refs.append(ref)
            if not waiter.future.done():
                try:
                    self.send(dest, (GEN_CALL, (pid, waiter.tag), request), sender=pid)
                except ValueError:
                    pass  # an unregistered local name: the monitor already said noproc
            try:
                return await asyncio.wait_for(waiter.future, timeout)
            except TimeoutError:
                raise CallTimeout(Atom("timeout")) from None
        finally:
            self._terminate(waiter, NORMAL)

    async def rpc(
        self, node: Any, module: str, fun: str, args: list[Any], timeout: float = 5.0
    ) -> Any:
        """erpc:call from Python: apply(Module, Fun, Args) on `node`; its return value.
        Errors raise RpcError (class, reason, stack) or Exit(noconnection)."""
        node = Atom(node)
        waiter = RpcWaiter(self.loop.create_future())
        pid = self._attach_endpoint(waiter)
        try:
            waiter.req_id = self.make_ref()
            waiter.res_ref = self.make_ref()
            waiter.target_node = node
            waiter._monitors[waiter.req_id] = NodeWatch(node)  # nodedown -> noconnection
            ctrl = C.spawn_request(
                waiter.req_id,
                pid,
                self.system_pid,
                (Atom("erpc"), Atom("execute_call"), 4),
                [Atom("monitor")],
            )
            args_list = [waiter.res_ref, Atom(module), Atom(fun), list(args)]
            self._send_control(node, ctrl, args_list)
            try:
                return await asyncio.wait_for(waiter.future, timeout)
            except TimeoutError:
                raise CallTimeout(Atom("timeout")) from None
        finally:
            self._terminate(waiter, NORMAL)

    # -- exposing Python to :erpc / :rpc -------------------------------------------------------

    def expose(self, module_name: str, module_or_mapping: ModuleType | Mapping[str, Any]) -> None:
        """Let :erpc/:rpc call `module_name:fun(...)`: the public callables of a module, or a
        mapping of name -> callable (sync or async). Nothing else is ever reachable."""
        if isinstance(module_or_mapping, Mapping):
            funs = {str(k): v for k, v in module_or_mapping.items() if callable(v)}
        else:
            # Only what the module itself defines (or lists in __all__): a name it imported,
            # say `from os import system`, is not part of what it exposes.
            module = module_or_mapping
            public = getattr(module, "__all__", None)
            funs = {
                k: v
                for k, v in vars(module).items()
                if callable(v)
                and not isinstance(v, type)
                and (
                    k in public
                    if public is not None
                    else not k.startswith("_") and getattr(v, "__module__", None) == module.__name__
                )
            }
        self._exposed[str(module_name)] = funs

    def exposed_function(self, module: Any, fun: Any) -> Callable[..., Any] | None:
        """The callable exposed as module:fun, or None (what :erpc/:rpc may call)."""
        funs = self._exposed.get(str(module))
        return None if funs is None else funs.get(str(fun))

    # -- connections ---------------------------------------------------------------------------

    def nodes(self) -> list[Atom]:
        """Connected nodes (hidden and visible)."""
        return [n for n, c in self._conns.items() if c.is_up]

    def connection(self, node: Any) -> DistConnection | None:
        """The distribution connection to `node`, or None."""
        return self._conns.get(Atom(node))

    async def connect(self, node: Any) -> bool:
        """net_kernel:connect_node: True once connected, False if that fails."""
        try:
            await self._ensure_connection(Atom(node))
            return True
        except (OSError, ConnectionError, TimeoutError, ValueError) as err:
            log.info("could not connect to %s: %s", node, err)
            return False

    async def disconnect(self, node: Any) -> None:
        """Close the connection to `node` (erlang:disconnect_node/1); links and monitors fire
        noconnection."""
        conn = self._conns.get(Atom(node))
        if conn is not None:
            conn.close()
            await asyncio.sleep(0)

    async def join(self, node: Any) -> bool:
        """Connect to a BEAM node of the cluster and announce this node as a cluster member, as
        `--join` does: the BEAM side lists it in `DSPEx.Clustering.members()` (kind `:python`)
        and watches it with its failure detector. The announcement is repeated on every
        reconnect and every tick period, so a restarted BEAM agent learns it again. A node
        that only `connect`s is a client: the BEAM side then sends it nothing unasked.
        True once connected (and announced), False if connecting failed."""
        try:
            await self._join(Atom(node))
            return True
        except (OSError, ConnectionError, TimeoutError, ValueError) as err:
            log.info("could not join %s: %s", node, err)
            return False

    async def _join(self, target: Atom) -> None:
        """join, raising what connecting raised (for callers that report why)."""
        self._joined.add(target)
        await self._ensure_connection(target)
        self._announce(target)

    def _announce(self, node: Atom) -> None:
        hello = (Atom(names.HELLO), self.name, {Atom("kind"): Atom("python")})
        for agent in (names.MEMBERSHIP, names.NODE_DISCOVERY):
            self.send((Atom(agent), node), hello)

    def on_nodeup(self, callback: Callable[[Atom], None]) -> None:
        """Call `callback(node)` whenever a connection comes up."""
        self._nodeup_callbacks.append(callback)

    def on_nodedown(self, callback: Callable[[Atom, Any], None]) -> None:
        """Call `callback(node, why)` whenever a connection goes down."""
        self._nodedown_callbacks.append(callback)

    async def _ensure_connection(self, node: Atom) -> DistConnection:
        conn = self._conns.get(node)
        if conn is not None:
            return conn
        if node == self.name:
            raise ValueError("a node does not connect to itself")
        return await asyncio.shield(self._connect_pending(node).future)

    def _connect_pending(self, node: Atom) -> _PendingConnect:
        pending = self._pending.get(node)
        if pending is None:
            pending = self._pending[node] = _PendingConnect(self.loop)
            pending.task = self.loop.create_task(self._dial(node, pending), name=f"dial {node}")
        return pending

    async def _dial(self, node: Atom, pending: _PendingConnect) -> None:
        conn: DistConnection | None = None
        try:
            alive, _, host = node.partition("@")
            if not host:
                raise ValueError(f"bad node name {node!r}")
            info = await epmd_client.port_please(host, alive, self.epmd_port, self.setup_time)
            if pending.owner is not None or self._pending.get(node) is not pending:
                return  # the peer dialled us meanwhile: its connection is the one set up
            conn = pending.owner = DistConnection(self, node)
            await asyncio.wait_for(
                self.loop.create_connection(lambda: conn, host, info.port)
                if self._tls_client is None
                else open_tls_connection(
                    self.loop, conn, host, info.port, self._tls_client, self.setup_time
                ),
                self.setup_time,
            )
            try:
                await asyncio.wait_for(asyncio.shield(conn.established), self.setup_time)
            except ConnectionError:
                if not conn.refused_nok or pending.owner is not conn:
                    raise
                # nok: the peer's own attempt towards us wins; wait for it to arrive
                pending.owner = None
                await asyncio.wait_for(asyncio.shield(pending.future), self.setup_time)
        except asyncio.CancelledError:
            self._fail_pending(node, pending, "node stopping")
            raise
        except Exception as err:
            if self._pending.get(node) is pending and pending.owner in (None, conn):
                # INFO, as net_kernel says nothing: a caller that retries (the signal bus, a
                # --join) reports a lasting failure once per back-off step, not every attempt
                log.info("cannot connect to %s: %s", node, err or type(err).__name__)
                self._fail_pending(node, pending, str(err) or type(err).__name__)
            # otherwise the peer's connection took over and settles `pending` itself

    def _fail_pending(self, node: Atom, pending: _PendingConnect, why: str) -> None:
        if self._pending.get(node) is pending:
            del self._pending[node]
        if not pending.future.done():
            pending.future.set_exception(ConnectionError(f"cannot connect to {node}: {why}"))
            self._nodedown(node, NOCONNECTION)

    def _accept_status(self, conn: DistConnection, peer: Atom) -> str:
        """The acceptor's answer to a name, resolving simultaneous connects as net_kernel does:
        the greater node name keeps its own attempt."""
        if not self.started:
            return "not_allowed"
        if peer == self.name:
            return "nok"
        existing = self._conns.get(peer)
        if existing is not None and existing is not conn:
            return "alive"
        pending = self._pending.get(peer)
        if pending is None:
            pending = self._pending[peer] = _PendingConnect(self.loop)
            pending.owner = conn
            return "ok"
        if self.name > peer:
            log.info("simultaneous connect with %s: ours wins (nok)", peer)
            return "nok"
        log.info("simultaneous connect with %s: theirs wins (ok_simultaneous)", peer)
        old, pending.owner = pending.owner, conn
        if old is not None:
            old.superseded = True
            old.close(abort=True)
        return "ok_simultaneous"

    def _still_pending(self, conn: DistConnection) -> bool:
        """The initiator's answer to "alive" (net_kernel's is_pending): is this dial still the
        attempt we want? Not if a connection of ours came up or another attempt took over."""
        pending = self._pending.get(conn.peer_name) if conn.peer_name is not None else None
        return pending is not None and pending.owner is conn

    def _connection_up(self, conn: DistConnection) -> None:
        peer = conn.peer_name
        assert peer is not None
        old = self._conns.get(peer)
        if old is not None and old is not conn:
            # the peer restarted ("alive" + strue): the old connection is dead
            self._conns.pop(peer)
            old.close(abort=True)
            self._nodedown(peer, NOCONNECTION)
        self._conns[peer] = conn
        kind = "hidden" if not conn.peer_flags & F.PUBLISHED else "visible"
        log.info("connected to %s (%s, %s)", peer, kind, "out" if conn.initiator else "in")
        pending = self._pending.pop(peer, None)
        if pending is not None:
            if pending.owner is not None and pending.owner is not conn:
                pending.owner.superseded = True
                pending.owner.close(abort=True)
            for frame in pending.queue:
                conn.send_frame(frame)
            if not pending.future.done():
                pending.future.set_result(conn)
        if peer in self._joined:
            self._announce(peer)
        for callback in list(self._nodeup_callbacks):
            callback(peer)

    def _handshake_ended(self, conn: DistConnection, why: str) -> None:
        """A connection closed before its handshake finished (the dialler handles its own)."""
        if conn.initiator or conn.peer_name is None:
            return
        pending = self._pending.get(conn.peer_name)
        if pending is not None and pending.owner is conn:
            self._fail_pending(conn.peer_name, pending, why)

    def _connection_down(self, conn: DistConnection, why: str) -> None:
        peer = conn.peer_name
        if peer is None or self._conns.get(peer) is not conn:
            return
        del self._conns[peer]
        if self.started:
            log.info("connection to %s lost: %s", peer, why)
        self._nodedown(peer, NOCONNECTION)
        for callback in list(self._nodedown_callbacks):
            callback(peer, why)

    def _nodedown(self, node: Atom, reason: Any) -> None:
        """Links and monitors across `node` fire with `reason` (noconnection)."""
        for ep in list(self._procs.values()):
            if not ep._alive:
                continue
            for ref, target in [(r, t) for r, t in ep._monitors.items() if _node_of(t) == node]:
                del ep._monitors[ref]
                ep._down(ref, target, reason)
            for ref in [r for r, (w, _) in ep._monitored_by.items() if w.node == node]:
                del ep._monitored_by[ref]
            for other in [p for p in ep._links if p.node == node]:
                ep._links.discard(other)
                if ep._alive:
                    ep._exit_signal(other, reason, True)

    async def _tick_loop(self) -> None:
        """Send a tick when we have written nothing for net_ticktime/4; drop a connection that
        has been silent for net_ticktime."""
        interval = self.net_ticktime / 4
        while True:
            await asyncio.sleep(interval)
            for joined in self._joined:
                if joined in self._conns:
                    self._announce(joined)
            for conn in list(self._conns.values()):
                if not conn.sent_since_tick:
                    conn.send_frame(b"\x00\x00\x00\x00")
                conn.sent_since_tick = False
                if conn.received_since_tick:
                    conn.missed_ticks = 0
                else:
                    conn.missed_ticks += 1
                    if conn.missed_ticks >= 4:
                        conn.abort(f"net_tick_timeout (nothing heard for {self.net_ticktime} s)")
                conn.received_since_tick = False

    def _decoder(self) -> concurrent.futures.ThreadPoolExecutor:
        """The thread large frames are decoded in (one for the node: the GIL lets one decode
        run at a time anyway; the point is that the event loop runs beside it)."""
        if self._decode_pool is None:
            self._decode_pool = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix=f"{self.alive}-decode"
            )
        return self._decode_pool

    def _spawn_task(self, coro: Any, name: str) -> asyncio.Task[Any]:
        """A task the node owns (stop() cancels it)."""
        task = self.loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


class NodeWatch:
    """A monitor entry that only watches a connection (until the real monitor replaces it);
    it is never sent anywhere, so dropping it sends no DEMONITOR."""

    __slots__ = ("node",)

    def __init__(self, node: Atom) -> None:
        self.node = node


def _node_of(target: Any) -> Any:
    if isinstance(target, (Pid, NodeWatch)):
        return target.node
    if isinstance(target, tuple) and len(target) == 2:
        return target[1]
    return None


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
