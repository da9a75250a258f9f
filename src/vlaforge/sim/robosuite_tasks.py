"""The robosuite task catalogue: our task names, the robosuite environment and robots behind each, the
embodiment it records, and language instructions.

Pure Python, no simulator import (like :mod:`vlaforge.sim.instructions` for Meta-World): datasets, the CLI
and the trainer can look up names and sentences without loading MuJoCo or robosuite. The simulator itself is
in :mod:`vlaforge.sim.robosuite`.

A task is one robosuite environment with one robot set-up, so a task name says both: ``lift-panda`` is
robosuite's ``Lift`` with a Panda arm, ``lift-ur5e`` the same task with a UR5e. Each robot set-up is its own
embodiment with its own sizes (no padding): its own catalogue object below, registered as its own simulator
entry in :mod:`vlaforge.sim` (``robosuite-panda``, ``robosuite-ur5e``, ``robosuite-bimanual``).

Per arm, ``observation.state`` is robosuite's (and robomimic's) low-dimensional proprioception:
end-effector position (3), end-effector quaternion (4, xyzw) and the gripper's joint positions (2 for Panda's
gripper, 6 for the Robotiq 85 the UR5e carries); a two-arm robot concatenates its arms in order. The action
per arm is robosuite's default controller input: a 6-D end-effector delta (OSC_POSE: position up to 5 cm,
rotation up to 0.5 rad per step at full scale) and the gripper (-1 open, +1 closed), each in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from vlaforge.names import unknown_name

CONTROL_HZ = 20.0  # robosuite's default control frequency


@dataclass(frozen=True)
class RobosuiteTask:
    """One task: a robosuite environment with a robot set-up, what it is called and how long it may run."""

    name: str  # ours: "lift-panda"
    env_name: str  # robosuite's: "Lift"
    robots: tuple[str, ...]  # robosuite robot names, one per arm: ("Panda",) or ("Panda", "Panda")
    sentences: tuple[str, ...]  # canonical instruction first
    max_steps: int  # episode length at CONTROL_HZ
    env_kwargs: tuple[tuple[str, object], ...] = ()  # extra suite.make arguments (env_configuration, ...)


#: gripper joints each robot's default gripper reports in ``<arm>_gripper_qpos``
_GRIPPER_JOINTS = {"Panda": 2, "UR5e": 6}
#: ``observation.environment_state``: up to three task objects' positions (zeros where a task has fewer)
ENV_STATE_NAMES = tuple(f"obj{i}_{a}" for i in (1, 2, 3) for a in "xyz")


@dataclass(frozen=True)
class Catalogue:
    """The tasks of one embodiment (a robot set-up), with what :class:`vlaforge.sim.SimulatorSpec` expects of
    a catalogue: ``all_tasks``, ``resolve_tasks``, ``instructions``, ``TASK_SETS`` and the dimension names
    (``STATE_NAMES``, ``ACTION_NAMES``, ``ENV_STATE_NAMES``)."""

    embodiment: str
    robots: tuple[str, ...]  # every task of an embodiment has this robot set-up
    tasks: tuple[RobosuiteTask, ...]
    TASK_SETS: dict[str, list[str]] = field(default_factory=dict)
    ENV_STATE_NAMES: tuple[str, ...] = ENV_STATE_NAMES

    def __post_init__(self) -> None:
        odd = [t.name for t in self.tasks if t.robots != self.robots]
        if odd:
            raise ValueError(f"{self.embodiment}: tasks {odd} use other robots than {self.robots}")

    def _arms(self) -> list[tuple[str, str]]:
        """(name prefix, robot) per arm: no prefix for a single arm, ``arm0_``, ``arm1_`` for two."""
        return [("" if len(self.robots) == 1 else f"arm{i}_", r) for i, r in enumerate(self.robots)]

    @property
    def STATE_NAMES(self) -> tuple[str, ...]:  # noqa: N802 (the catalogue protocol's name)
        return tuple(f"{p}{n}" for p, robot in self._arms()
                     for n in ("eef_x", "eef_y", "eef_z", "eef_qx", "eef_qy", "eef_qz", "eef_qw",
                               *(f"gripper_q{j}" for j in range(_GRIPPER_JOINTS[robot]))))

    @property
    def ACTION_NAMES(self) -> tuple[str, ...]:  # noqa: N802
        return tuple(f"{p}{n}" for p, _ in self._arms()
                     for n in ("eef_dx", "eef_dy", "eef_dz", "eef_drx", "eef_dry", "eef_drz", "gripper"))

    def all_tasks(self) -> list[str]:
        return [t.name for t in self.tasks]

    def task(self, name: str) -> RobosuiteTask:
        for t in self.tasks:
            if t.name == name:
                return t
        raise unknown_name(f"{self.embodiment} robosuite task", name, self.all_tasks(),
                           known_label="Known tasks")

    def instructions(self, task: str) -> list[str]:
        return list(self.task(task).sentences)

    def resolve_tasks(self, spec: str | Iterable[str]) -> list[str]:
        names = spec.split(",") if isinstance(spec, str) else list(spec)
        out: list[str] = []
        for name in (n.strip() for n in names):
            if name in self.TASK_SETS:
                out += self.TASK_SETS[name]
            elif name:
                out.append(self.task(name).name)
        if not out:
            raise ValueError(f"robosuite tasks: expected a task or set name, got {spec!r}")
        return out


_PANDA_EYE = "robot0_eye_in_hand"

PANDA = Catalogue("panda", ("Panda",), (
    RobosuiteTask("lift-panda", "Lift", ("Panda",),
                  ("lift the cube", "pick up the red cube", "grasp the cube and raise it"), 150),
    RobosuiteTask("stack-panda", "Stack", ("Panda",),
                  ("stack the red cube on the green cube", "put the red block on top of the green block"),
                  250),
    RobosuiteTask("door-panda", "Door", ("Panda",),
                  ("open the door", "turn the handle and pull the door open"), 250),
))
PANDA.TASK_SETS["panda"] = PANDA.all_tasks()

UR5E = Catalogue("ur5e", ("UR5e",), (
    RobosuiteTask("lift-ur5e", "Lift", ("UR5e",),
                  ("lift the cube", "pick up the red cube", "grasp the cube and raise it"), 150),
))

BIMANUAL = Catalogue("panda-bimanual", ("Panda", "Panda"), (
    RobosuiteTask("two-arm-lift-panda", "TwoArmLift", ("Panda", "Panda"),
                  ("lift the pot with both arms", "grab both handles and raise the pot"), 250,
                  (("env_configuration", "opposed"),)),
))

CATALOGUES: dict[str, Catalogue] = {c.embodiment: c for c in (PANDA, UR5E, BIMANUAL)}


def find_task(name: str) -> tuple[Catalogue, RobosuiteTask]:
    """The catalogue (embodiment) and task of a robosuite task name."""
    for cat in CATALOGUES.values():
        if name in cat.all_tasks():
            return cat, cat.task(name)
    known = [t for c in CATALOGUES.values() for t in c.all_tasks()]
    raise unknown_name("robosuite task", name, known, known_label="Known tasks")
