"""What a node needs before it starts, the same for both kinds of node: its name, its cookie, and
the back-off of retry loops. `beam/bin/dspex-node` applies the same rules in bash (the README's
"Flags and environment variables" table is the one description of both).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
"""A name without `@host` means `name@127.0.0.1` (on both kinds of node)."""

_ALIVE = re.compile(r"[A-Za-z0-9_-]{1,200}")
_HOST = re.compile(r"[A-Za-z0-9_.-]{1,255}")

COOKIE_SOURCES = (
    "--cookie-file, --cookie, $DSPEX_COOKIE_FILE, $DSPEX_COOKIE, $ERLANG_COOKIE, ~/.erlang.cookie"
)
"""Where a cookie is looked for, first found wins (the launcher uses the same order)."""

MAX_COOKIE_LENGTH = 255  # it becomes an atom on a BEAM node


class NodeNameError(ValueError):
    """A node name that no node can have; the message says what is wrong in one line."""


class CookieError(ValueError):
    """No usable cookie; the message says where it was looked for, never the cookie itself."""


def expand_node_name(text: str) -> str:
    """`foo` -> `foo@127.0.0.1`; `foo@host` and `foo@host.domain` as given; else NodeNameError.

    The part before `@` may hold letters, digits, `_` and `-`; the host letters, digits, `.`,
    `-` and `_` (a host name or an IPv4 address).
    """
    hint = "give name@host, or a bare name for name@127.0.0.1"
    alive, at, host = text.partition("@")
    if not at:
        host = DEFAULT_HOST
    if not alive:
        raise NodeNameError(f"bad node name {text!r}: nothing before the @ ({hint})")
    if at and not host:
        raise NodeNameError(f"bad node name {text!r}: nothing after the @ ({hint})")
    if "@" in host:
        raise NodeNameError(f"bad node name {text!r}: more than one @ ({hint})")
    if not _ALIVE.fullmatch(alive):
        raise NodeNameError(
            f"bad node name {text!r}: the part before the @ may hold only letters, digits, "
            "_ and - (at most 200)"
        )
    if not _HOST.fullmatch(host):
        raise NodeNameError(
            f"bad node name {text!r}: the host may hold only letters, digits, '.', '-' and '_'"
        )
    return f"{alive}@{host}"


def clean_cookie(text: str, source: str) -> str:
    """The cookie with surrounding white space removed (as the BEAM does); it must be non-empty
    printable ASCII. `source` names where it came from, for the error message."""
    cookie = text.strip()
    if not cookie:
        raise CookieError(f"the cookie from {source} is empty")
    if len(cookie) > MAX_COOKIE_LENGTH:
        raise CookieError(f"the cookie from {source} is longer than {MAX_COOKIE_LENGTH} characters")
    if not all(" " <= ch <= "~" for ch in cookie):
        raise CookieError(f"the cookie from {source} must be printable ASCII")
    return cookie


def read_cookie_file(path: str | os.PathLike[str]) -> str:
    """The cookie in `path`; CookieError (one line) when it cannot be read."""
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace")
    except OSError as err:
        raise CookieError(f"cannot read cookie file {path}: {err.strerror or err}") from None
    return clean_cookie(text, f"cookie file {path}")


def read_cookie(
    cookie_file: str | os.PathLike[str] | None = None,
    cookie: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The first cookie found in `cookie_file`, `cookie`, $DSPEX_COOKIE_FILE, $DSPEX_COOKIE,
    $ERLANG_COOKIE (older name), ~/.erlang.cookie; CookieError when there is none."""
    env = os.environ if environ is None else environ
    if cookie_file is not None:
        return read_cookie_file(cookie_file)
    if cookie is not None:
        return clean_cookie(cookie, "--cookie")
    if env.get("DSPEX_COOKIE_FILE"):
        return read_cookie_file(env["DSPEX_COOKIE_FILE"])
    for var in ("DSPEX_COOKIE", "ERLANG_COOKIE"):
        if env.get(var):
            return clean_cookie(env[var], f"${var}")
    default = Path.home() / ".erlang.cookie"
    if default.is_file():
        return read_cookie_file(default)
    raise CookieError(f"no cookie given: looked in {COOKIE_SOURCES}")


class Backoff:
    """Delays for a retry loop: `initial`, doubling up to `maximum`; `reset()` after a success.

    A loop logs a repeated failure once per call of `next()`, so a peer that stays away costs a
    log line per step (0.5, 1, 2, 4 ... s), not one per attempt at a fixed short interval.
    """

    def __init__(self, initial: float = 0.5, maximum: float = 30.0) -> None:
        if not 0 < initial <= maximum:
            raise ValueError("need 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self.delay = initial

    def next(self) -> float:
        """The delay to wait now; the one after it doubles (up to `maximum`)."""
        delay = self.delay
        self.delay = min(self.delay * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.delay = self.initial


__all__ = [
    "COOKIE_SOURCES",
    "DEFAULT_HOST",
    "Backoff",
    "CookieError",
    "NodeNameError",
    "clean_cookie",
    "expand_node_name",
    "read_cookie",
    "read_cookie_file",
]
