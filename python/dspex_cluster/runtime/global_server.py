"""A visible node's `global_name_server` (placeholder policy: log and drop).

OTP's `global` talks to every visible node; see the notes in this module's tests."""

from __future__ import annotations

import logging
from typing import Any

from dspex_cluster.runtime.process import Endpoint

log = logging.getLogger("dspex_cluster.runtime.global")


class GlobalNameServer(Endpoint):
    def _deliver(self, message: Any) -> None:
        log.debug("global_name_server got %r", message)
