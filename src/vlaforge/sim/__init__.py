"""Simulators, one module per simulator, each registered once by name in ``SIMULATORS``.

- :mod:`vlaforge.sim.metaworld`: ``MetaWorldEnv`` (Gymnasium, DESIGN frame dicts), scripted
  experts, derived tasks. Imports gymnasium; MuJoCo and Meta-World load when an env is built.
- :mod:`vlaforge.sim.instructions`: the task catalogue (names, ``TASK_SETS``, ``resolve_tasks``,
  ``instructions``), pure Python.

    sim = SIMULATORS.get("metaworld")            # an unknown name: a KeyError with a did-you-mean
    env = sim.make_env("drawer-open-v3", cameras=("corner",), image_size=96)
    sim.resolve_tasks("mt10"); sim.embodiment    # "sawyer"

This file imports nothing heavy: ``import vlaforge.sim`` stays fast (a spec names its env class and catalogue
by import path; they load when used). tests/test_contracts.py runs the simulator contract over every entry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from vlaforge.names import Registry, load_object


@dataclass(frozen=True)
class SimulatorSpec:
    """What a caller needs to know about a simulator before (and for) building one of its envs."""

    name: str
    env: str  # "module:Class", a Gymnasium env: Class(task, cameras=, image_size=, max_steps=, instruction=)
    catalogue: str  # pure-Python module: all_tasks(), resolve_tasks(spec), instructions(task), TASK_SETS
    embodiment: str  # the robot: frames carry embodiment=this; a policy needs an EmbodimentSpec of this name
    state_dim: int  # observation.state
    action_dim: int  # action, in [-1, 1]
    cameras: tuple[str, ...]  # the camera names an env accepts
    expert: bool  # env.expert_action(): a scripted expert for every task (collection, corrections)
    control_hz: float | None = None  # env steps per second (a served policy's chunk timestamps use it)
    doc: str = ""

    def env_class(self) -> type:
        return load_object(self.env)

    def make_env(self, task: str, **kwargs: Any) -> Any:
        return self.env_class()(task, **kwargs)

    def tasks(self) -> list[str]:
        """Every task name of the catalogue."""
        return self._catalogue().all_tasks()

    def resolve_tasks(self, spec: Any) -> list[str]:
        """Task names from a set name, comma-separated names or a list (the catalogue's ``resolve_tasks``)."""
        return self._catalogue().resolve_tasks(spec)

    def instructions(self, task: str) -> list[str]:
        """The task's sentences, canonical first."""
        return self._catalogue().instructions(task)

    def _catalogue(self) -> ModuleType:
        return importlib.import_module(self.catalogue)


SIMULATORS: Registry[SimulatorSpec] = Registry("simulator", known_label="Known simulators")


def register_simulator(spec: SimulatorSpec) -> SimulatorSpec:
    """Add a simulator: its module in ``vlaforge/sim/`` plus one call here."""
    return SIMULATORS.add(spec.name, spec, spec.doc)


register_simulator(SimulatorSpec(
    "metaworld", env="vlaforge.sim.metaworld:MetaWorldEnv", catalogue="vlaforge.sim.instructions",
    embodiment="sawyer", state_dim=4, action_dim=4,
    cameras=("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV"),
    expert=True, control_hz=80.0,
    doc="Meta-World v3 (MuJoCo): 50 tabletop tasks with a Sawyer arm, scripted experts, derived tasks"))
