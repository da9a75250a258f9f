"""Simulators, one module per simulator, each registered once by name in ``SIMULATORS``.

- :mod:`vlaforge.sim.metaworld`: ``MetaWorldEnv`` (Gymnasium, DESIGN frame dicts), scripted
  experts, derived tasks. Imports gymnasium; MuJoCo and Meta-World load when an env is built.
- :mod:`vlaforge.sim.instructions`: the task catalogue (names, ``TASK_SETS``, ``resolve_tasks``,
  ``instructions``), pure Python.
- :mod:`vlaforge.sim.robosuite`: ``RobosuiteEnv`` (the same frame dicts) with scripted experts
  (:mod:`vlaforge.sim.robosuite_experts`); one entry per robot set-up (Panda, UR5e, two Pandas), each its own
  embodiment with its own sizes; catalogues in :mod:`vlaforge.sim.robosuite_tasks`.

    sim = SIMULATORS.get("metaworld")            # an unknown name: a KeyError with a did-you-mean
    env = sim.make_env("drawer-open-v3", cameras=("corner",), image_size=96)
    sim.resolve_tasks("mt10"); sim.embodiment    # "sawyer"
    simulator_for_task("lift-panda").name        # "robosuite-panda": the entry whose catalogue has the task

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
    catalogue: str  # pure Python, a module or "module:object": all_tasks(), resolve_tasks(spec),
    # instructions(task), TASK_SETS
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

    def task_sets(self) -> dict[str, list[str]]:
        return self._catalogue().TASK_SETS

    def names(self) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """What a dataset calls each dimension: ``(state names, action names, environment-state names)``."""
        cat = self._catalogue()
        return tuple(cat.STATE_NAMES), tuple(cat.ACTION_NAMES), tuple(cat.ENV_STATE_NAMES)

    def _catalogue(self) -> ModuleType | Any:
        name = self.catalogue
        return load_object(name) if ":" in name else importlib.import_module(name)


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

_ROBOSUITE_CAMERAS = ("agentview", "robot0_eye_in_hand", "frontview", "birdview", "sideview")
register_simulator(SimulatorSpec(
    "robosuite-panda", env="vlaforge.sim.robosuite:RobosuiteEnv",
    catalogue="vlaforge.sim.robosuite_tasks:PANDA", embodiment="panda", state_dim=9, action_dim=7,
    cameras=_ROBOSUITE_CAMERAS, expert=True, control_hz=20.0,
    doc="robosuite 1.5 (MuJoCo) with a Panda arm: Lift, Stack, Door; end-effector delta control, "
        "scripted experts"))
register_simulator(SimulatorSpec(
    "robosuite-ur5e", env="vlaforge.sim.robosuite:RobosuiteEnv",
    catalogue="vlaforge.sim.robosuite_tasks:UR5E", embodiment="ur5e", state_dim=13, action_dim=7,
    cameras=_ROBOSUITE_CAMERAS, expert=True, control_hz=20.0,
    doc="robosuite 1.5 with a UR5e arm and a Robotiq 85 gripper: Lift; scripted expert"))
register_simulator(SimulatorSpec(
    "robosuite-bimanual", env="vlaforge.sim.robosuite:RobosuiteEnv",
    catalogue="vlaforge.sim.robosuite_tasks:BIMANUAL", embodiment="panda-bimanual", state_dim=18,
    action_dim=14, cameras=(*_ROBOSUITE_CAMERAS, "robot1_eye_in_hand"), expert=True, control_hz=20.0,
    doc="robosuite 1.5 with two Panda arms facing each other: TwoArmLift (14-D actions); scripted expert"))


def simulator_for_task(task: str) -> SimulatorSpec:
    """The registered simulator whose catalogue has ``task`` (an unknown task: a ValueError naming the
    closest known tasks of every simulator)."""
    from vlaforge.names import unknown_name

    known: list[str] = []
    for name in SIMULATORS.names(sort=False):
        spec = SIMULATORS.get(name)
        tasks = spec.tasks()
        if task in tasks:
            return spec
        known += tasks
    raise unknown_name("task", task, known, known_label="Known tasks", n=3)


def resolve_tasks(spec: Any) -> list[str]:
    """Task names from set names and task names of any simulator (``"mt10"``, ``"lift-panda,stack-panda"``,
    a list): each part goes to the simulator whose catalogue knows it. Order kept, duplicates dropped."""
    from vlaforge.names import unknown_name

    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [p.strip() for p in parts if p.strip()]
    if not names:
        raise ValueError(f"expected a task set name or comma-separated task names, got {spec!r}")
    specs = [SIMULATORS.get(n) for n in SIMULATORS.names(sort=False)]
    out: list[str] = []
    for name in names:
        owner = next((s for s in specs if name.lower() in s.task_sets() or name.lower() in s.tasks()), None)
        if owner is None:
            known = [k for s in specs for k in (*s.tasks(), *s.task_sets())]
            raise unknown_name("task or task set", name, known, n=3, known_label="Known tasks and sets")
        out.extend(t for t in owner.resolve_tasks(name.lower()) if t not in out)
    return out
