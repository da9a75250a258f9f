"""robosuite (MuJoCo) as a Gymnasium env whose observations are DESIGN frame dicts, like Meta-World's.

    env = RobosuiteEnv("lift-panda", cameras=("agentview", "robot0_eye_in_hand"), image_size=96)
    obs, info = env.reset(seed=3)           # the layout of our seed convention (below)
    obs, reward, terminated, truncated, info = env.step(env.expert_action())
    info["is_success"]                      # the task's own success test
    snap = env.snapshot(); ...; env.restore(snap)

Tasks, robots and instructions are in :mod:`vlaforge.sim.robosuite_tasks` (``lift-panda``, ``stack-panda``,
``door-panda``, ``lift-ur5e``, ``two-arm-lift-panda``); each robot set-up is its own embodiment.

Observation: ``observation.images.<camera>`` uint8 (S, S, 3) upright; ``observation.state`` float32: per arm
end-effector position (3), quaternion (4, xyzw) and gripper joint positions (2 or 6); ``task`` (the
instruction); ``embodiment`` (``panda``, ``ur5e``, ``panda-bimanual``); ``observation.environment_state``
float32 (9,): the positions of up to three task objects (zeros where a task has fewer), an auxiliary training
target a policy does not read. Action: float32 (7 per arm) in [-1, 1], robosuite's default controller input
(end-effector delta pose + gripper), clipped to the box.

Seed convention (the same as Meta-World's): episode seed ``s`` is the layout (object placement and the robot's
initial joint noise) of a fresh ``robosuite.make(ENV, ..., seed=s)`` after its first ``reset()``. robosuite
draws those from one generator, ``default_rng(s)``, once when the env is built and again on that first
reset; :meth:`RobosuiteEnv.reset` gives the env a new generator seeded by ``s`` and resets it twice, which
reproduces the fresh env's placements and joints bit for bit (tests/sim check it) at ~1 ms instead of the
~2.6 s a new env costs. One difference: sizes robosuite draws once, when it builds the model (Lift's cube
half-size, 0.020-0.022 m), are those of seed 0 in every episode here, where a fresh env would draw them from
``s``.

Rendering: our own ``mujoco.Renderer`` per env with shadows and multisampling off (~5x cheaper), robosuite's
renderer is never created. ``robosuite`` is imported when the first env is built (it is an optional
dependency: ``pip install 'vlaforge[robosuite]'``; ``make install`` brings it).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco loads, unless the user chose a backend

from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402

from vlaforge.sim.mujoco_frames import (  # noqa: E402
    TEXT_CHARSET,
    CameraRenderer,
    RendersCameras,
    check_seed,
    check_settings,
    get_state,
    set_state,
    text_charset,
)
from vlaforge.sim.robosuite_tasks import CONTROL_HZ, ENV_STATE_NAMES, find_task  # noqa: E402
from vlaforge.types import EMBODIMENT, OBS_ENV_STATE, OBS_STATE, TASK, image_key  # noqa: E402

__all__ = ["CAMERAS", "ENV_STATE_NAMES", "RobosuiteEnv", "RobosuiteSnapshot"]

#: Cameras every robosuite scene has (robot1_eye_in_hand: two-arm robots only).
CAMERAS = ("agentview", "robot0_eye_in_hand", "robot1_eye_in_hand", "frontview", "birdview", "sideview")
#: robosuite observation keys of each environment's objects, in ``observation.environment_state`` order
_OBJECT_KEYS = {
    "Lift": ("cube_pos",),
    "Stack": ("cubeA_pos", "cubeB_pos"),
    "Door": ("door_pos", "handle_pos"),
    "TwoArmLift": ("pot_pos", "handle0_xpos", "handle1_xpos"),
}


@dataclass(frozen=True)
class RobosuiteSnapshot:
    """Everything :meth:`RobosuiteEnv.restore` needs to return to a moment of an episode."""

    seed: int | None
    sim_state: np.ndarray  # MuJoCo's integration state (mjSTATE_INTEGRATION: time, qpos, qvel, warm start)
    timestep: int
    raw_obs: dict
    steps: int
    expert: Any  # the expert's phase state (a copy), or None
    controllers: list  # per controller part and gripper: its numeric attributes (goal pose, finger command)


class RobosuiteEnv(RendersCameras, gym.Env):
    """One robosuite task with DESIGN frame-dict observations; ``cameras`` may be empty (state only).
    ``terminated`` is always False (read ``info["is_success"]``); episodes are truncated after ``max_steps``
    (default: the task's). ``reset()`` without a seed draws one from the env's generator."""

    default_camera = "agentview"

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(CONTROL_HZ)}

    def __init__(self, task: str, cameras: tuple[str, ...] | list[str] = ("agentview",), image_size: int = 96,
                 max_steps: int | None = None, instruction: str | None = None,
                 render_mode: str | None = "rgb_array"):
        self.catalogue, self.task = find_task(task)  # raises with a did-you-mean for an unknown name
        self.task_name = task
        self.embodiment = self.catalogue.embodiment
        n_arms = len(self.task.robots)
        known = [c for c in CAMERAS if n_arms > 1 or c != "robot1_eye_in_hand"]
        max_steps = self.task.max_steps if max_steps is None else max_steps
        self.instruction = instruction if instruction is not None else self.task.sentences[0]
        self.cameras = check_settings(cameras, known, image_size, max_steps, render_mode, self.instruction,
                                      where=task)
        self.image_size, self.max_steps, self.render_mode = int(image_size), int(max_steps), render_mode

        self._env = _make(self.task, seed=0)
        self._renderer = CameraRenderer(self._env.sim.model._model, self._env.sim.data._data, self.image_size,
                                        CAMERAS)  # robosuite's cameras are upright as rendered
        self._expert = None
        self._raw: dict | None = None
        self._steps = 0
        self.episode_seed: int | None = None

        self._arms = [f"robot{i}" for i in range(n_arms)]
        #: the action dimensions that move the hand (each arm's dx, dy, dz): where collection adds its noise
        self.motion_dims = tuple(7 * i + j for i in range(n_arms) for j in range(3))
        self._raw = self._env.reset()  # to size the state; reset(seed=) draws the episode's layout
        state_dim = len(self._observation(images=False)[OBS_STATE])
        self._raw = None
        s = self.image_size
        charset = text_charset(self.instruction)
        self.observation_space = spaces.Dict({
            **{image_key(c): spaces.Box(0, 255, (s, s, 3), np.uint8) for c in self.cameras},
            OBS_STATE: spaces.Box(-np.inf, np.inf, (state_dim,), np.float32),
            TASK: spaces.Text(max_length=max(256, len(self.instruction)), charset=charset),
            EMBODIMENT: spaces.Text(max_length=64, charset=TEXT_CHARSET),
            OBS_ENV_STATE: spaces.Box(-np.inf, np.inf, (len(ENV_STATE_NAMES),), np.float32),
        })
        self.action_space = spaces.Box(-1.0, 1.0, (self._env.action_dim,), np.float32)

    @property
    def raw_env(self):
        """The robosuite environment underneath."""
        return self._env

    @property
    def raw_obs(self) -> dict:
        """robosuite's observation dict of the current state."""
        self._require_reset()
        return self._raw

    @property
    def steps(self) -> int:
        return self._steps

    # ------------------------------------------------------------------ gym API

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        seed = check_seed(seed)
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(0, 2**31 - 1))
        _reseed(self._env, seed)
        self._env.reset()  # the draws a fresh env makes when it is built ...
        self._raw = self._env.reset()  # ... and on its first reset
        self._steps = 0
        self.episode_seed = seed
        if self._expert is not None:
            self._expert.reset()
        return self._observation(), {"seed": seed, "task_name": self.task_name}

    def step(self, action):
        self._require_reset()
        if self._steps >= self.max_steps:
            raise RuntimeError(f"the episode was truncated after max_steps={self.max_steps} steps: "
                               f"call reset()")
        d = self.action_space.shape[0]
        a = np.asarray(action)
        if a.shape != (d,):
            raise ValueError(f"action: expected shape ({d},) ({self.embodiment}: end-effector delta + "
                             f"gripper per arm), got {a.shape}")
        if not np.issubdtype(a.dtype, np.number) or not np.all(np.isfinite(a)):
            raise ValueError(f"action: expected {d} finite numbers, got {a!r}")
        a = np.clip(a.astype(np.float64), -1.0, 1.0)
        self._raw, reward, _, _ = self._env.step(a)
        self._steps += 1
        success = bool(self._env._check_success())
        info = {"is_success": success, "seed": self.episode_seed, "task_name": self.task_name}
        return self._observation(), float(reward), False, self._steps >= self.max_steps, info

    def expert_action(self) -> np.ndarray:
        """The scripted expert's action for the current state, clipped to [-1, 1], float32 (D,)."""
        self._require_reset()
        if self._expert is None:
            from vlaforge.sim.robosuite_experts import make_expert

            self._expert = make_expert(self.task_name)
            self._expert.reset()
        action = self._expert.act(self._env, self._raw)
        return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)

    def snapshot(self) -> RobosuiteSnapshot:
        """The state of the current episode; ``restore(snapshot)`` returns to it (same actions, same
        observations: MuJoCo is deterministic and robosuite's delta controller reads only the state)."""
        import copy

        self._require_reset()
        state = get_state(self._env.sim.model._model, self._env.sim.data._data)
        numeric = [{k: copy.deepcopy(v) for k, v in vars(part).items() if _numeric(v)}
                   for part in self._controller_parts()]
        return RobosuiteSnapshot(self.episode_seed, state, self._env.timestep, copy.deepcopy(self._raw),
                                 self._steps, copy.deepcopy(self._expert), numeric)

    def restore(self, snapshot: RobosuiteSnapshot) -> None:
        import copy

        if not isinstance(snapshot, RobosuiteSnapshot):
            raise TypeError(f"restore: expected a RobosuiteSnapshot (from env.snapshot()), "
                            f"got {type(snapshot).__name__}")
        self._require_reset()
        if snapshot.seed != self.episode_seed:
            raise ValueError(f"restore: the snapshot is of an episode with seed {snapshot.seed}, the env is "
                             f"in seed {self.episode_seed}: reset(seed={snapshot.seed}) first")
        set_state(self._env.sim.model._model, self._env.sim.data._data, snapshot.sim_state)
        self._env.timestep = snapshot.timestep
        self._env.cur_time = snapshot.timestep * self._env.control_timestep
        for part, numeric in zip(self._controller_parts(), snapshot.controllers):
            for k, v in numeric.items():
                setattr(part, k, copy.deepcopy(v))
        self._raw = copy.deepcopy(snapshot.raw_obs)
        self._steps = snapshot.steps
        self._expert = copy.deepcopy(snapshot.expert)

    def close(self):
        self._close_renderer()
        if getattr(self, "_env", None) is not None:
            self._env.close()
            self._env = None

    # ------------------------------------------------------------------ helpers

    def _controller_parts(self) -> list:
        """What holds control state besides MuJoCo, in a fixed order: every part controller (arm, gripper) of
        every robot, and every gripper model (it integrates its finger command: ``current_action``)."""
        return [part for robot in self._env.robots
                for part in (*robot.composite_controller.part_controllers.values(), *robot.gripper.values())]

    def _require_reset(self):
        if self._env is None:
            raise RuntimeError("the env is closed")
        if self._raw is None:
            raise RuntimeError("call reset() before step(), expert_action() or raw_obs")

    def _observation(self, images: bool = True) -> dict:
        raw = self._raw
        obs = {image_key(c): self.render_camera(c) for c in self.cameras} if images else {}
        obs[OBS_STATE] = np.concatenate([np.concatenate([raw[f"{a}_eef_pos"], raw[f"{a}_eef_quat"],
                                                         raw[f"{a}_gripper_qpos"]]) for a in self._arms]
                                        ).astype(np.float32)
        env_state = np.zeros(len(ENV_STATE_NAMES), np.float32)
        objects = [raw[k] for k in _OBJECT_KEYS[self.task.env_name]]
        env_state[:3 * len(objects)] = np.concatenate(objects)
        obs[OBS_ENV_STATE] = env_state
        obs[TASK] = self.instruction
        obs[EMBODIMENT] = self.embodiment
        return obs

    def __repr__(self) -> str:
        return (f"RobosuiteEnv({self.task_name!r}, cameras={self.cameras}, image_size={self.image_size}, "
                f"max_steps={self.max_steps})")


def _numeric(v: Any) -> bool:
    return isinstance(v, (np.ndarray, float, int, bool, np.number)) or v is None


def _make(task, seed: int):
    """The robosuite env of ``task`` with our fixed settings: no robosuite renderer, object observations,
    default controller, ``hard_reset=False`` (resets reuse the compiled model)."""
    robosuite = _import_robosuite()
    return robosuite.make(task.env_name, robots=list(task.robots), **dict(task.env_kwargs),
                          has_renderer=False, has_offscreen_renderer=False, use_camera_obs=False,
                          use_object_obs=True, control_freq=CONTROL_HZ, horizon=10**6, ignore_done=True,
                          hard_reset=False, seed=seed)


def _import_robosuite():
    """robosuite, imported quietly: without a ``macros_private.py`` of the user's it warns three times on
    import (an empty one stands in), it notes optional parts it could not load, and it logs every controller
    it loads at INFO (its logger is raised to ERROR)."""
    import importlib.util
    import logging
    import sys
    import types
    from pathlib import Path

    spec = importlib.util.find_spec("robosuite")  # locates the package without running it
    if spec is None:
        raise ImportError("the robosuite simulator needs robosuite 1.5.2: pip install 'vlaforge[robosuite]' "
                          "(make install brings it)")
    private = "robosuite.macros_private"
    if private not in sys.modules and not (Path(spec.origin).parent / "macros_private.py").is_file():
        sys.modules[private] = types.ModuleType(private)
    logger = logging.getLogger("robosuite_logs")  # robosuite's; it sets the level to INFO as it loads
    quiet = _BelowError()
    logger.addFilter(quiet)  # also hides its import-time notes on optional parts we do not use (mink, models)
    try:
        import robosuite
    finally:
        logger.removeFilter(quiet)
    logger.setLevel(logging.ERROR)
    return robosuite


class _BelowError:
    """A logging filter that drops records below ERROR."""

    def filter(self, record) -> bool:
        import logging

        return record.levelno >= logging.ERROR


def _reseed(env: Any, seed: int) -> None:
    """Give ``env`` a new generator seeded by ``seed``: the env and every placement sampler draw from it."""
    rng = np.random.default_rng(seed)
    env.rng = rng
    samplers = [getattr(env, "placement_initializer", None)]
    while samplers:
        s = samplers.pop()
        if s is not None:
            s.rng = rng
            samplers.extend(getattr(s, "samplers", {}).values())
