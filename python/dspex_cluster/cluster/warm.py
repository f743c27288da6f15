"""Warm agents: what an agent learned, saved and restored across a restart of its node.

Each learning agent (load balancer: node speeds; health monitor: per-node baselines; failure
predictor: failure history) gives `warm_state() -> dict` and takes `restore_state(dict)`. A
`StateStore` keeps one such dict per agent name. `FileStateStore(directory)` is the local store:
one JSON file per agent, `<directory>/<agent name>.json`, written atomically (a temporary file
renamed over the old one), so a node killed mid-write leaves the previous checkpoint. The agent
node uses `<state dir>/<node name>/` (`agent-node --state-dir DIR`, else `$DSPEX_STATE_DIR`; unset:
agents start cold and nothing is written). Another store (e.g. the cluster's eventual state on
the BEAM side, `DSPEx.Clustering.State`) only has to implement `load` and `save`.

Agents checkpoint every `checkpoint_interval_s` when their learned state changed (and not
otherwise: a checkpoint is what was learned, not what was decided since), and restore in `setup`.
Values are JSON: numpy arrays as {"ndarray": dtype, "data": [...]}, non-finite floats as JSON's
NaN/Infinity extensions (Python's json reads them back).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)

STATE_DIR_ENV = "DSPEX_STATE_DIR"


class StateStore(Protocol):
    """Where agents keep their learned state: one JSON-able dict per agent name."""

    def load(self, name: str) -> dict[str, Any] | None:
        """The last saved state of `name`, or None."""
        ...

    def save(self, name: str, state: dict[str, Any]) -> None:
        """Replace the saved state of `name`."""
        ...


class FileStateStore:
    """One JSON file per agent under `directory` (created on first save)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def _path(self, name: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_.@-]+", name):
            raise ValueError(f"not a plain agent name: {name!r}")
        return self.directory / f"{name}.json"

    def load(self, name: str) -> dict[str, Any] | None:
        path = self._path(name)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            state = json.loads(text, object_hook=_decode)
        except ValueError as err:  # a damaged file: start cold, keep the file for a look
            log.warning("ignoring unreadable state file %s: %s", path, str(err)[:200])
            return None
        return state if isinstance(state, dict) else None

    def save(self, name: str, state: dict[str, Any]) -> None:
        path = self._path(name)
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self.directory)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(state, f, default=_encode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def node_state_dir(base: str | os.PathLike[str], node_name: str) -> Path:
    """The state directory of one node under `base` (the node name made a safe file name)."""
    return Path(base) / re.sub(r"[^A-Za-z0-9_.@-]", "_", node_name)


def default_store(node_name: str, state_dir: str | None = None) -> FileStateStore | None:
    """The file store of `node_name` under `state_dir`, else $DSPEX_STATE_DIR; None if neither."""
    base = state_dir or os.environ.get(STATE_DIR_ENV)
    return FileStateStore(node_state_dir(base, node_name)) if base else None


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"ndarray": str(value.dtype), "data": value.tolist()}
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot save a {type(value).__name__}")


def _decode(obj: dict[str, Any]) -> Any:
    if set(obj) == {"ndarray", "data"}:
        return np.array(obj["data"], dtype=obj["ndarray"])
    return obj


class Checkpoint:
    """Saves an agent's `warm_state()` to a store when its `version()` moved since the last save."""

    def __init__(self, store: StateStore | None, name: str) -> None:
        self.store = store
        self.name = name
        self.saved_version: Any = None
        self.saves = 0

    def restore(self) -> dict[str, Any] | None:
        if self.store is None:
            return None
        try:
            return self.store.load(self.name)
        except Exception:
            log.warning("%s: could not load its saved state", self.name, exc_info=True)
            return None

    def maybe_save(self, version: Any, state: Any) -> bool:
        """`state`: a callable building the dict (only called when a save is due)."""
        if self.store is None or version == self.saved_version:
            return False
        try:
            self.store.save(self.name, state())
        except Exception:
            log.warning("%s: could not save its state", self.name, exc_info=True)
            return False
        self.saved_version = version
        self.saves += 1
        return True


class WarmAgent:
    """Mixin for an Agent that saves what it learned (`warm_state`) and restores it in `setup`.

    Set `warm_store` (and `checkpoint_interval_s`) before the agent is spawned; call
    `_warm_start()` at the end of `setup()` and add `_checkpoint_sensor()` to `sensors()`.
    """

    name: str
    warm_store: StateStore | None = None
    checkpoint_interval_s: float = 5.0
    restored = False  # whether the last setup restored a saved state

    def warm_version(self) -> Any:
        """Changes whenever the learned state does (a save is due when it moved)."""
        raise NotImplementedError

    def warm_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def restore_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def setup(self) -> None:  # the agent's own setup (this mixin comes first in the bases)
        raise NotImplementedError

    def _warm_start(self) -> None:
        self._checkpoint = Checkpoint(self.warm_store, self.name)
        self.restored = False
        if getattr(self, "_starting_cold", False):
            return
        state = self._checkpoint.restore()
        if state is None:
            return
        try:
            self.restore_state(state)
        except Exception:
            log.warning("%s: saved state not usable; starting cold", self.name, exc_info=True)
            self._starting_cold = True
            try:
                self.setup()  # a clean state again, without a second restore
            finally:
                self._starting_cold = False
            return
        self.restored = True
        self._checkpoint.saved_version = self.warm_version()

    async def _main(self) -> None:
        try:
            await super()._main()  # type: ignore[misc]
        finally:
            self.checkpoint()  # a clean stop saves the latest state

    def checkpoint(self) -> bool:
        """Save now if the learned state changed since the last save."""
        cp = getattr(self, "_checkpoint", None)
        return bool(cp and cp.maybe_save(self.warm_version(), self.warm_state))

    def _checkpoint_sensor(self) -> list[Any]:
        from dspex_cluster.agents import FunctionSensor

        if self.warm_store is None:
            return []

        def tick(_agent: Any) -> None:
            self.checkpoint()

        return [FunctionSensor("checkpoint", self.checkpoint_interval_s, tick)]
