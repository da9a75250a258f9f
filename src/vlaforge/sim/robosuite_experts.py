"""Scripted expert controllers for the robosuite tasks of :mod:`vlaforge.sim.robosuite_tasks`.

    expert = make_expert("lift-panda")
    obs = env.reset(); expert.reset()
    obs, reward, done, info = env.step(expert.act(env, obs))   # env: the raw robosuite env

Each expert is a proportional controller on the simulator state with its phase read off that state
(grasped or not, lever angle, hinge angle), so it keeps no memory between steps and can take over from any
state a learned policy got into. Per arm it sends robosuite's default controller input: an OSC_POSE delta
(position, 1.0 = 5 cm; axis-angle rotation, 1.0 = 0.5 rad; both in that robot's base frame) and the
gripper (-1 open, +1 closed); a two-arm action is robot 0's 7 numbers, then robot 1's.

- ``lift-panda``, ``lift-ur5e``: gripper pointing down, fingers turned square to the cube's faces; descend
  over the cube through a funnel (the lower, the better centred), close, raise the cube 12 cm.
- ``stack-panda``: the same grasp on the red cube, with the fingers on the sides away from the green cube;
  carry it over the green cube, lower it until it sits there, let go and move up.
- ``door-panda``: grasp the end of the lever handle pointing at the door (from above the hand would hit the
  door), turn the lever with the wrist until the latch is free (~1.1 rad), pull the handle along its circle
  about the hinge to 0.33 rad (success: > 0.3), hold there.
- ``two-arm-lift-panda``: each arm grasps its pot handle from above, fingers across the bar; an arm that
  holds waits for the other; then both raise their handles to one common height, keeping the pot level.

Their success per task is measured by ``benchmarks/robosuite_experts.py``.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco loads, unless the user chose a backend

import numpy as np  # noqa: E402

POS_SCALE = 0.05  # metres per unit of position action
ROT_SCALE = 0.5  # radians per unit of rotation action
POS_GAIN = 1.5  # position action = POS_GAIN * error / POS_SCALE
ROT_GAIN = 1.0
OPEN, CLOSE = -1.0, 1.0
# The gripper site pointing down, fingers closing along world y: the Panda's and UR5e's rest pose, yaw 0.
DOWN = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation by ``angle`` about the unit vector ``axis`` (Rodrigues)."""
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * k @ k


def _rotation_vector(rot: np.ndarray) -> np.ndarray:
    """The axis-angle vector (axis * angle, angle in [0, pi]) of a rotation matrix."""
    angle = np.arccos(np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0))
    if angle < 1e-6:
        return np.zeros(3)
    axis = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    if np.pi - angle < 1e-3:  # axis from the symmetric part when the skew part vanishes
        axis = np.sqrt(np.clip((np.diag(rot) + 1.0) / 2.0, 0.0, None))
    return axis / np.linalg.norm(axis) * angle


def _quat_yaw(quat_xyzw: np.ndarray) -> float:
    """Yaw of a body that only turns about the vertical (robosuite's xyzw quaternion)."""
    x, y, z, w = quat_xyzw
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


def _nearest_yaw(yaw: float, reference: float, period: float) -> float:
    """The yaw equivalent to ``yaw`` modulo ``period`` closest to ``reference``."""
    return reference + (yaw - reference + period / 2.0) % period - period / 2.0


class Arm:
    """One robot arm of the env: where its gripper is, and the 7-D action that drives it somewhere."""

    def __init__(self, env, index: int):
        self.robot = env.robots[index]
        self.sim = env.sim
        self.site = self.robot.eef_site_id["right"]

    @property
    def pos(self) -> np.ndarray:
        return np.array(self.sim.data.site_xpos[self.site])

    @property
    def rot(self) -> np.ndarray:
        return self.sim.data.site_xmat[self.site].reshape(3, 3)

    @property
    def base_rot(self) -> np.ndarray:
        body = self.sim.model.body_name2id(self.robot.robot_model.root_body)
        return self.sim.data.body_xmat[body].reshape(3, 3)

    @property
    def base_yaw(self) -> float:
        rot = self.base_rot
        return float(np.arctan2(rot[1, 0], rot[0, 0]))

    @property
    def yaw(self) -> float:
        """The gripper's yaw in the convention of :meth:`action` (from its finger-closing axis, site x)."""
        closing = self.rot[:, 0]
        return float(np.arctan2(-closing[0], closing[1]))

    def grasping(self, env, geoms) -> bool:
        """robosuite's grasp test: both fingers' pads touch ``geoms``."""
        return bool(env._check_grasp(gripper=self.robot.gripper, object_geoms=geoms))

    def action(self, target: np.ndarray, grip: float, yaw: float) -> np.ndarray:
        """Move the gripper site toward ``target`` (world), pointing down with the fingers closing along world
        yaw ``yaw + pi/2``, gripper command ``grip``."""
        return self.pose_action(target, _rot_z(yaw) @ DOWN, grip)

    def pose_action(self, target: np.ndarray, target_rot: np.ndarray, grip: float) -> np.ndarray:
        """Move the gripper site toward position ``target`` and orientation ``target_rot`` (world)."""
        base = self.base_rot
        pos_error = base.T @ (np.asarray(target) - self.pos)
        rot_error = base.T @ _rotation_vector(target_rot @ self.rot.T)
        act = np.concatenate([POS_GAIN * pos_error / POS_SCALE, ROT_GAIN * rot_error / ROT_SCALE, [grip]])
        return np.clip(act, -1.0, 1.0).astype(np.float32)

    def grasp_approach(self, point: np.ndarray, yaw: float, hover: float = 0.10) -> np.ndarray:
        """Descend onto ``point`` (open) through a funnel: the higher above it, the larger the allowed
        horizontal or yaw misalignment; close once the site is there."""
        pos = self.pos
        horizontal = np.linalg.norm(point[:2] - pos[:2])
        yaw_error = np.linalg.norm(_rotation_vector(_rot_z(yaw) @ DOWN @ self.rot.T))
        height = min(hover, 3.0 * max(horizontal - 0.005, 0.0) + 0.2 * max(yaw_error - 0.05, 0.0))
        arrived = horizontal < 0.015 and pos[2] - point[2] < 0.012
        return self.action(point + [0.0, 0.0, height], CLOSE if arrived else OPEN, yaw)


class Expert:
    """A scripted expert: ``act(env, obs)`` is the action for the env's current state."""

    def reset(self) -> None:
        """Forget the last episode (the experts here keep no state; kept for the interface)."""

    def act(self, env, obs: dict) -> np.ndarray:
        raise NotImplementedError


class LiftExpert(Expert):
    """Grasp the cube square to its faces and raise it."""

    GRASP_DZ = {"Panda": -0.005, "UR5e": -0.01}  # site below the cube's centre at the grasp
    LIFT = 0.12

    def act(self, env, obs):
        arm = Arm(env, 0)
        cube = obs["cube_pos"]
        yaw = _nearest_yaw(_quat_yaw(obs["cube_quat"]), arm.base_yaw, np.pi / 2)
        if arm.grasping(env, env.cube):
            target = np.array([cube[0], cube[1], env.table_offset[2] + self.LIFT])
            return arm.action(target + (arm.pos - cube), CLOSE, yaw)
        return arm.grasp_approach(cube + [0.0, 0.0, self.GRASP_DZ[arm.robot.name]], yaw)


class StackExpert(Expert):
    """Grasp the red cube (A), carry it over the green one (B), set it down and let go."""

    GRASP_DZ = -0.01
    STACKED_DZ = 0.047  # A's centre above B's when A rests on B (half sizes 0.02 + 0.025, plus a margin)

    def act(self, env, obs):
        arm = Arm(env, 0)
        cube_a, cube_b = obs["cubeA_pos"], obs["cubeB_pos"]
        offset = cube_a - cube_b
        horizontal = np.linalg.norm(offset[:2])
        cube_yaw = _quat_yaw(obs["cubeA_quat"])
        grasping = arm.grasping(env, env.cubeA)
        if grasping:
            yaw = _nearest_yaw(cube_yaw, arm.yaw, np.pi / 2)
        else:  # of the two grasps square to A, the one whose fingers stay clear of B
            options = [_nearest_yaw(cube_yaw + turn, arm.base_yaw, np.pi) for turn in (0.0, np.pi / 2)]
            yaw = max(options, key=lambda y: abs(np.cos(y) * offset[0] + np.sin(y) * offset[1]))
        if grasping:
            place_z = cube_b[2] + self.STACKED_DZ
            wanted_z = place_z + min(0.08, 4.0 * max(horizontal - 0.005, 0.0))
            high_enough = cube_a[2] > wanted_z - 0.02
            target = np.array([*(cube_b[:2] if high_enough else cube_a[:2]), wanted_z])
            placed = horizontal < 0.01 and cube_a[2] - place_z < 0.008
            return arm.action(target + (arm.pos - cube_a), OPEN if placed else CLOSE, yaw)
        if horizontal < 0.02 and env.check_contact(env.cubeA, env.cubeB):  # A rests on B: back off
            return arm.action(np.array([*arm.pos[:2], cube_b[2] + 0.15]), OPEN, yaw)
        return arm.grasp_approach(cube_a + [0.0, 0.0, self.GRASP_DZ], yaw)


class DoorExpert(Expert):
    """Grasp the lever handle's end pointing at the door (fingers closing across the lever's height: from
    above, the hand would hit the door), turn the lever with the wrist past the angle that frees the latch,
    then pull the handle around the door's hinge."""

    UNLATCHED = 1.25  # lever angle (rad, either way) past which the latch clears the frame; measured ~1.1
    TURN_STEP = 0.3  # rad ahead of the lever's angle that the wrist is sent while turning
    OPENED = 0.33  # hinge angle (rad) the expert pulls to (success: > 0.3; the hinge stops at 0.4)
    HANDLE_GEOMS = ["Door_handle"]
    # The grasp in the latch's frame: site z (pointing) = latch y (the lever's axis, into the door),
    # site x (finger closing) = latch z (across the lever's height), site y = latch x (along the lever).
    GRASP_IN_LATCH = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])

    def act(self, env, obs):
        arm = Arm(env, 0)
        data, model = env.sim.data, env.sim.model
        handle = obs["handle_pos"]
        latch = data.body_xmat[env.object_body_ids["latch"]].reshape(3, 3)
        pivot = data.body_xpos[env.object_body_ids["latch"]]
        axis = latch[:, 1]
        rolls = (latch @ self.GRASP_IN_LATCH, latch @ self.GRASP_IN_LATCH @ np.diag([-1.0, -1.0, 1.0]))
        grasp_rot = min(rolls, key=lambda rot: np.linalg.norm(_rotation_vector(rot @ arm.rot.T)))  # nearer
        grasping = arm.grasping(env, self.HANDLE_GEOMS)
        if obs["hinge_qpos"] > self.OPENED and not grasping:  # open (the handle slipped): stay out of the way
            return arm.pose_action(arm.pos, arm.rot, OPEN)
        if not grasping:  # come in along the lever's axis, fingers open
            lateral = np.linalg.norm(np.cross(axis, arm.pos - handle))
            turn = np.linalg.norm(_rotation_vector(grasp_rot @ arm.rot.T))
            standoff = min(0.10, 3.0 * max(lateral - 0.005, 0.0) + 0.2 * max(turn - 0.05, 0.0))
            arrived = lateral < 0.015 and np.dot(arm.pos - handle, -axis) < 0.012
            return arm.pose_action(handle - standoff * axis, grasp_rot, CLOSE if arrived else OPEN)
        # Either way frees the latch: keep the way the lever already turned, else the way that takes the
        # wrist's roll joint (its axis is the lever's while grasping) away from its limit.
        lever = obs["handle_qpos"]
        wrist = data.qpos[arm.robot._ref_joint_pos_indexes[-1]]
        way = np.sign(lever) if abs(lever) > 0.1 else -np.sign(wrist * np.dot(axis, arm.rot[:, 2]))
        wanted = way * min(self.UNLATCHED + 0.1, abs(lever) + self.TURN_STEP)
        turn = _axis_rotation(axis, wanted - lever)
        target = pivot + turn @ (handle - pivot)
        if abs(lever) >= self.UNLATCHED or obs["hinge_qpos"] > 0.03:  # pull along the handle's circle
            hinge = data.xanchor[model.joint_name2id(env.door.joints[0])]
            radius = handle - hinge
            pull = 0.05 * np.clip((self.OPENED + 0.04 - obs["hinge_qpos"]) / 0.04, 0.0, 1.0)  # to OPENED
            target = target + pull * np.array([-radius[1], radius[0], 0.0]) / np.linalg.norm(radius[:2])
        return arm.pose_action(target + (arm.pos - handle), turn @ grasp_rot, CLOSE)


class TwoArmLiftExpert(Expert):
    """Each arm grasps its pot handle from above, fingers across the bar; an arm that holds waits for the
    other; once both hold, both handles are sent to one common height a little above their mean, capped,
    so the pot rises level. Action: robot 0's 7 numbers, then robot 1's (robosuite's robot order), each in
    its own robot's base frame (in "opposed", robot 1 faces robot 0: its x and y are world -x and -y of
    robot 0's)."""

    GRASP_DZ = -0.01
    LIFT = 0.30  # handle height above the table top to carry the pot to (success: its bottom 0.10 up)
    LIFT_STEP = 0.02

    @staticmethod
    def _holds(arm: Arm, obs: dict, index: int, handle: np.ndarray) -> bool:
        """Fingers closed on the handle's bar (2 cm thick) with the bar between them. Geometric: robosuite's
        contact-based grasp check mostly says no while the Panda holds these bars."""
        fingers = obs[f"robot{index}_gripper_qpos"]
        return bool(0.01 < fingers[0] - fingers[1] < 0.035 and np.linalg.norm(arm.pos - handle) < 0.03)

    def act(self, env, obs):
        arms = [Arm(env, 0), Arm(env, 1)]
        handles = [obs["handle0_xpos"], obs["handle1_xpos"]]
        pot_yaw = _quat_yaw(obs["pot_quat"])  # the handles' bars run along the pot's x: close across them
        held = [self._holds(arm, obs, i, h) for i, (arm, h) in enumerate(zip(arms, handles))]
        table = env.sim.data.site_xpos[env.table_top_id][2]
        height = min(table + self.LIFT, np.mean([h[2] for h in handles]) + self.LIFT_STEP)
        actions = []
        for arm, handle, holding in zip(arms, handles, held):
            yaw = _nearest_yaw(pot_yaw, arm.base_yaw, np.pi)
            if holding:
                target = handle if not all(held) else np.array([handle[0], handle[1], height])
                actions.append(arm.action(target + (arm.pos - handle), CLOSE, yaw))
            else:
                actions.append(arm.grasp_approach(handle + [0.0, 0.0, self.GRASP_DZ], yaw))
        return np.concatenate(actions)


EXPERTS = {"lift-panda": LiftExpert, "lift-ur5e": LiftExpert, "stack-panda": StackExpert,
           "door-panda": DoorExpert, "two-arm-lift-panda": TwoArmLiftExpert}


def make_expert(task_name: str) -> Expert:
    """The scripted expert of a robosuite task (names as in :mod:`vlaforge.sim.robosuite_tasks`)."""
    if task_name not in EXPERTS:
        raise ValueError(f"robosuite expert: expected one of {', '.join(sorted(EXPERTS))}, got {task_name!r}")
    return EXPERTS[task_name]()
