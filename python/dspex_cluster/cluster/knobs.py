"""Knobs: platform settings that follow a Cognitive Variable when one exists.

An operator gets one knob for the whole cluster by starting the variable once, from iex:

    DSPEx.Clustering.Variable.start("lb.exploration", type: :float, range: {0.0, 2.0}, value: 0.5)
    DSPEx.Clustering.Variable.set("lb.exploration", 0.2)          # every load balancer, at once

Until such a variable exists (or after it is deleted) the agent keeps its own default. A `Knob`
holds the value in use; a `KnobSensor` (one per agent) follows each knob's variable through a
subscription (`dspex_cluster.variable`), retrying every `retry_s` while none exists or no BEAM
node answers, and every `feedback_interval_s` sends the mean of the rewards the agent recorded
(`Knob.reward`) as `Variable.feedback`, so the variable adapts from the agent's outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dspex_cluster.agents.sensor import Sensor
from dspex_cluster.runtime import Exit
from dspex_cluster.runtime.rpc import CallTimeout, RpcError
from dspex_cluster.variable import Variable, VariableError

if TYPE_CHECKING:
    from dspex_cluster.agents.agent import Agent

log = logging.getLogger(__name__)


class Knob:
    """A setting named `name` (the variable's name): `value` is `default` until a variable with
    that name exists; `apply(value)` is called on every change of the value in use."""

    def __init__(self, name: str, default: float, apply: Callable[[float], None]) -> None:
        self.name = name
        self.default = default
        self.value = default
        self.version: int | None = None  # of the variable; None while the default is in use
        self._apply = apply
        self._rewards: list[float] = []
        self.feedback_sent = 0

    def use(self, value: Any, version: int | None) -> None:
        """Takes `value` (from the variable, or the default when `version` is None)."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            log.warning("knob %s: ignoring non-numeric value %.80r", self.name, value)
            return
        self.value, self.version = number, version
        self._apply(number)

    def reward(self, reward: float) -> None:
        """Records an outcome's reward for the value in use (sent in batches)."""
        if self.version is not None:
            self._rewards.append(float(reward))
            del self._rewards[:-10_000]

    def take_rewards(self) -> float | None:
        """The mean reward recorded since the last call (None if none)."""
        if not self._rewards:
            return None
        mean = sum(self._rewards) / len(self._rewards)
        self._rewards.clear()
        return mean


class KnobSensor(Sensor):
    """Keeps an agent's knobs on their variables; see the module docstring."""

    name = "knobs"

    def __init__(
        self, knobs: list[Knob], retry_s: float = 2.0, feedback_interval_s: float = 5.0
    ) -> None:
        super().__init__()
        self.knobs = knobs
        self.retry_s = retry_s
        self.feedback_interval_s = feedback_interval_s
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, agent: Agent) -> None:
        for knob in self.knobs:
            self._tasks.append(asyncio.create_task(self._follow(agent, knob)))
            self._tasks.append(asyncio.create_task(self._feedback(agent, knob)))

    def stop(self, agent: Agent) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()

    async def _follow(self, agent: Agent, knob: Knob) -> None:
        while agent.alive:
            var = Variable(agent.node, knob.name)
            try:
                reading = await var.get()
                knob.use(reading.value, reading.version)
                sub = await var.subscribe(from_version=reading.version)
                try:
                    while (change := await sub.next()) is not None:
                        knob.use(change.value, change.version)
                finally:
                    await sub.close()
            except (VariableError, Exit, RpcError, CallTimeout, ConnectionError):
                pass  # no such variable (yet), or no BEAM node: the default, and try again
            if knob.version is not None:
                knob.use(knob.default, None)
            await asyncio.sleep(self.retry_s)

    async def _feedback(self, agent: Agent, knob: Knob) -> None:
        while agent.alive:
            await asyncio.sleep(self.feedback_interval_s)
            mean = knob.take_rewards()
            if mean is None or knob.version is None:
                continue
            with contextlib.suppress(VariableError, Exit, RpcError, CallTimeout, ConnectionError):
                await Variable(agent.node, knob.name).feedback(mean)
                knob.feedback_sent += 1
