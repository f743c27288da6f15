"""Agents: GenServers with state, actions, sensors, skills and signal routes, bridged to the BEAM
signal bus (see `agent`, `action`, `sensor`, `skill`, `bus`)."""

from dspex_cluster.agents.action import Action, ActionError, Param, action
from dspex_cluster.agents.agent import Agent, BadRequest
from dspex_cluster.agents.bus import ClusterBus
from dspex_cluster.agents.sensor import FunctionSensor, HostVitalsSensor, NodeEventSensor, Sensor
from dspex_cluster.agents.skill import Skill

__all__ = [
    "Action",
    "ActionError",
    "Agent",
    "BadRequest",
    "ClusterBus",
    "FunctionSensor",
    "HostVitalsSensor",
    "NodeEventSensor",
    "Param",
    "Sensor",
    "Skill",
    "action",
]
