"""Skills: a model from `dspex_cluster.skills` with the actions, signal routes and sensors that
put it to work inside an agent.

    class AnomalySkill(Skill):
        name = "anomaly"
        def routes(self):  return [("cluster.health.data", self.on_health)]
        def actions(self): return [Action("scores", lambda agent: self.scores())]

An agent mounts each of its skills once (`mount` gets the agent); a skill keeps its own state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from dspex_cluster.agents.action import Action
from dspex_cluster.agents.sensor import Sensor
from dspex_cluster.signals import Signal

if TYPE_CHECKING:
    from dspex_cluster.agents.agent import Agent

Route = tuple[str, Callable[[Signal], Awaitable[None] | None]]


class Skill:
    """Override `actions`, `routes`, `sensors`; `self.agent` is set once mounted."""

    name: str = "skill"
    agent: Agent

    def mount(self, agent: Agent) -> None:
        """Called when the agent starts, before its actions and routes are collected."""
        self.agent = agent

    def actions(self) -> list[Action]:
        """The actions this skill adds to its agent."""
        return []

    def routes(self) -> list[Route]:
        """The signal routes this skill adds to its agent."""
        return []

    def sensors(self) -> list[Sensor]:
        """The sensors this skill adds to its agent."""
        return []

    def describe(self) -> dict[str, Any]:
        """A summary for the agent's `state` call."""
        return {}
