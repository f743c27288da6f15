"""Distribution over TLS, as OTP's `inet_tls_dist` (`-proto_dist inet_tls -ssl_dist_optfile F`).

epmd is used as with TCP; TLS wraps each distribution connection from its first byte, so the
distribution handshake and all traffic after it are inside TLS. Both sides verify each other's
certificate against the CA file (mutual TLS), as an `ssl_dist_optfile` with `{verify,
verify_peer}` and `{fail_if_no_peer_cert, true}` asks of the BEAM. As OTP's TLS client does, a
node that dials checks the chain and that the certificate names the host of the node name it
dials (`py1@10.0.0.5`: 10.0.0.5, `py1@host.example`: host.example).

    tls = TlsOptions(certfile="node.pem", keyfile="node.key", cacertfile="ca.pem")
    tls = TlsOptions.from_optfile("ssl_dist.conf")   # the BEAM's own file
    node = Node("py1@127.0.0.1", cookie_file=..., tls=tls)

A peer whose TLS handshake fails (no certificate, one from another CA, plain TCP) is refused and
logged at WARNING with the reason; it never reaches the distribution handshake.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("dspex_cluster.runtime.tls")


class TlsConfigError(ValueError):
    """Unusable TLS settings (a missing file, a key that does not match, an unreadable optfile)."""


@dataclass(frozen=True)
class TlsSide:
    """The options of one side (server: we accept; client: we dial)."""

    certfile: str | None = None
    keyfile: str | None = None
    cacertfile: str | None = None
    verify: bool = True  # {verify, verify_peer}
    fail_if_no_peer_cert: bool = True  # server side only


@dataclass(frozen=True)
class TlsOptions:
    """TLS for every distribution connection; `server` and `client` as in an ssl_dist_optfile."""

    server: TlsSide
    client: TlsSide

    @classmethod
    def from_files(
        cls, certfile: str | os.PathLike[str], keyfile: str | os.PathLike[str] | None,
        cacertfile: str | os.PathLike[str],
    ) -> TlsOptions:  # fmt: skip
        """The same certificate both ways, verified against `cacertfile` both ways."""
        side = TlsSide(str(certfile), str(keyfile) if keyfile else None, str(cacertfile))
        return cls(server=side, client=side)

    @classmethod
    def from_optfile(cls, path: str | os.PathLike[str]) -> TlsOptions:
        """Read the BEAM's `ssl_dist_optfile` (`[{server, Opts}, {client, Opts}].`): certfile,
        keyfile, cacertfile, verify and fail_if_no_peer_cert are used; other options (ciphers,
        versions, ...) are left to Python's defaults (TLS 1.2 and later)."""
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise TlsConfigError(f"cannot read ssl_dist_optfile {path}: {err.strerror}") from None
        try:
            terms = parse_erlang_terms(text)
        except ValueError as err:
            raise TlsConfigError(f"ssl_dist_optfile {path}: {err}") from None
        if len(terms) != 1 or not isinstance(terms[0], list):
            raise TlsConfigError(
                f"ssl_dist_optfile {path}: expected one list [{{server, ...}}, ...]"
            )
        sides: dict[str, TlsSide] = {}
        for entry in terms[0]:
            if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], list)):
                raise TlsConfigError(f"ssl_dist_optfile {path}: not {{server|client, [...]}}")
            kind, opts = entry
            if kind in ("server", "client"):
                sides[kind] = _side(dict(o for o in opts if isinstance(o, tuple) and len(o) == 2))
        if "server" not in sides:
            raise TlsConfigError(f"ssl_dist_optfile {path}: no {{server, [...]}} options")
        # as in inet_tls_dist: the client options default to the server's
        return cls(server=sides["server"], client=sides.get("client", sides["server"]))

    def server_context(self) -> ssl.SSLContext:
        """The context for connections we accept."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _load(ctx, self.server, "server")
        if not self.server.verify:
            log.warning("TLS distribution: peers' certificates are not verified (verify_none)")
            ctx.verify_mode = ssl.CERT_NONE
        elif self.server.fail_if_no_peer_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
        else:
            ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """The context for connections we dial."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        _load(ctx, self.client, "client")
        if not self.client.verify:
            log.warning("TLS distribution: the certificates of nodes we dial are not verified")
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:  # the chain and the host name, as OTP's client
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.check_hostname = True
        return ctx


def _side(opts: dict[Any, Any]) -> TlsSide:
    def path(key: str) -> str | None:
        value = opts.get(key)
        return str(value) if value is not None else None

    return TlsSide(
        certfile=path("certfile"),
        keyfile=path("keyfile"),
        cacertfile=path("cacertfile"),
        verify=opts.get("verify") == "verify_peer",
        fail_if_no_peer_cert=opts.get("fail_if_no_peer_cert") is True,
    )


def _load(ctx: ssl.SSLContext, side: TlsSide, what: str) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if side.certfile is None:
        raise TlsConfigError(f"TLS {what} options name no certfile")
    for kind, path in (("certificate", side.certfile), ("key", side.keyfile),
                       ("CA file", side.cacertfile)):  # fmt: skip
        if path is not None and not os.access(path, os.R_OK):
            raise TlsConfigError(f"TLS {what} {kind}: cannot read {path}")
    try:
        ctx.load_cert_chain(side.certfile, side.keyfile)
    except (OSError, ssl.SSLError) as err:
        raise TlsConfigError(
            f"TLS {what} certificate {side.certfile} / key {side.keyfile}: {err}"
        ) from None
    if side.cacertfile is not None:
        try:
            ctx.load_verify_locations(side.cacertfile)
        except (OSError, ssl.SSLError) as err:
            raise TlsConfigError(f"TLS {what} CA file {side.cacertfile}: {err}") from None
    elif side.verify:
        raise TlsConfigError(f"TLS {what} options verify peers but name no cacertfile")


# -- accepting: TCP first, then TLS, then the distribution protocol ----------------------------


class TlsGate(asyncio.Protocol):
    """The protocol of an accepted TCP connection until its TLS handshake is done; then the
    connection goes to `make_protocol()` (the distribution connection). A failed handshake is
    logged and the socket closed."""

    def __init__(
        self, context: ssl.SSLContext, make_protocol: Callable[[], asyncio.Protocol], timeout: float
    ) -> None:
        self._context = context
        self._make_protocol = make_protocol
        self._timeout = timeout
        self._early: list[bytes] = []  # data that came with the end of the handshake
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._handshake(loop, transport))

    def data_received(self, data: bytes) -> None:
        self._early.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        pass

    async def _handshake(self, loop: asyncio.AbstractEventLoop, raw: asyncio.Transport) -> None:
        peer = raw.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if peer else "unknown peer"
        try:
            tls = await loop.start_tls(
                raw, self, self._context, server_side=True, ssl_handshake_timeout=self._timeout
            )
        except (OSError, ssl.SSLError, ConnectionError, TimeoutError) as err:
            log.warning("TLS distribution: refused %s: %s", where, _reason(err))
            raw.abort()
            return
        if tls is None:
            raw.abort()
            return
        protocol = self._make_protocol()
        tls.set_protocol(protocol)
        protocol.connection_made(tls)
        for data in self._early:
            protocol.data_received(data)
        self._early.clear()


def _reason(err: BaseException) -> str:
    return (str(err) or type(err).__name__)[:300]


async def open_tls_connection(
    loop: asyncio.AbstractEventLoop,
    protocol: asyncio.Protocol,
    host: str,
    port: int,
    context: ssl.SSLContext,
    timeout: float,
) -> None:
    """Dial `host:port` with TLS for `protocol`; a failed handshake is logged and raised."""
    try:
        await loop.create_connection(
            lambda: protocol,
            host,
            port,
            ssl=context,
            server_hostname=host,
            ssl_handshake_timeout=timeout,
        )
    except ssl.SSLError as err:
        log.warning("TLS distribution: handshake with %s:%d failed: %s", host, port, _reason(err))
        raise ConnectionError(f"TLS handshake failed: {_reason(err)}") from None


# -- a small reader for the Erlang terms of an ssl_dist_optfile --------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<comment>%[^\n]*)
      | (?P<punct>[\[\]{},.])
      | (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<quoted>'(?:[^'\\]|\\.)*')
      | (?P<integer>-?\d+)
      | (?P<atom>[a-z][A-Za-z0-9_@]*)
    )""",
    re.VERBOSE,
)


def parse_erlang_terms(text: str) -> list[Any]:
    """The dot-terminated terms of `text` (file:consult's format) for the subset a config file
    uses: lists, tuples, atoms (str), strings (str), integers; `true`/`false` become bool."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"cannot read the term at character {pos}: {text[pos : pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        assert kind is not None
        if kind != "comment":
            tokens.append((kind, m.group(kind)))
    terms: list[Any] = []
    i = 0
    while i < len(tokens):
        term, i = _term(tokens, i)
        if i >= len(tokens) or tokens[i] != ("punct", "."):
            raise ValueError("a term must end with a dot")
        terms.append(term)
        i += 1
    return terms


def _term(tokens: list[tuple[str, str]], i: int) -> tuple[Any, int]:
    if i >= len(tokens):
        raise ValueError("the file ends inside a term")
    kind, value = tokens[i]
    if kind == "punct" and value in "[{":
        close = "]" if value == "[" else "}"
        items: list[Any] = []
        i += 1
        if tokens[i : i + 1] == [("punct", close)]:
            return ([] if close == "]" else ()), i + 1
        while True:
            item, i = _term(tokens, i)
            items.append(item)
            if i >= len(tokens):
                raise ValueError("the file ends inside a list or tuple")
            if tokens[i] == ("punct", ","):
                i += 1
                continue
            if tokens[i] == ("punct", close):
                return (items if close == "]" else tuple(items)), i + 1
            raise ValueError(f"expected , or {close}, found {tokens[i][1]!r}")
    if kind == "string":
        return _unescape(value[1:-1]), i + 1
    if kind == "quoted":
        return _unescape(value[1:-1]), i + 1
    if kind == "integer":
        return int(value), i + 1
    if kind == "atom":
        return {"true": True, "false": False}.get(value, value), i + 1
    raise ValueError(f"unexpected {value!r}")


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


__all__ = ["TlsConfigError", "TlsGate", "TlsOptions", "TlsSide", "parse_erlang_terms"]
