"""``vlaforge ros2``: a ROS 2 node that runs a policy on a robot through the runtime (safety layer, chunk
executor, monitor), with the policy in this process (``--checkpoint``) or served (``--server``, no torch
here).

Topics (names and QoS are ROS parameters; defaults below, ``<cam>`` for each camera of the node's robot: the
names its embodiment was recorded with, ``PolicyConfig.cameras_of``; a policy of several robots runs one node
per robot, each with its own ``--embodiment`` and ``topic_prefix``):

| topic | type | direction |
|---|---|---|
| ``/vlaforge/camera/<cam>/image`` | ``sensor_msgs/Image`` (``rgb8`` or ``bgr8``, the policy's size) | in |
| ``/vlaforge/state`` | ``std_msgs/Float32MultiArray`` (the robot's state vector) | in |
| ``/vlaforge/instruction`` | ``std_msgs/String`` (latched: transient-local QoS) | in |
| ``/vlaforge/force`` | ``std_msgs/Float32MultiArray`` (optional force/torque reading) | in |
| ``/vlaforge/action`` | ``std_msgs/Float32MultiArray`` (the safe action) | out, at the control rate |
| ``/vlaforge/status`` | ``std_msgs/String`` (JSON: status, step, reasons, latency) | out, every tick |

Every control period (``control_hz``) the node takes the newest image of each camera, the newest state and
the instruction; if any is missing or older than ``max_input_age_s`` it publishes no action and a ``WAITING``
or ``STALE_INPUT`` status (the robot's own watchdog holds it); otherwise ``Controller.step`` gives the action
that passed the safety layer. With ``tick_on=inputs`` the node acts instead whenever every camera and the
state have a new message (lockstep with a simulator; ``run_sim_episodes`` uses it). Measured with the ``make
demo`` policy (benchmarks/results/serving_success.md): in timer mode against a simulated robot that could not
keep up with 80 Hz, actions queued faster than the robot took them and success fell to 1-8 of 10 per task; in
lockstep it matched in-process. ``episode_done`` (a ``std_msgs/String`` topic, "success" or "failure") ends an
episode: the executor and the motion history restart (a latched estop stays), the monitor records the outcome.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlaforge.types import EMBODIMENT, OBS_STATE, TASK, image_key

#: ROS parameters the node declares, with their defaults
PARAMETERS: dict[str, Any] = {
    "topic_prefix": "/vlaforge",
    "control_hz": 0.0,  # 0: the served / simulator rate of the embodiment, else 10 Hz
    "max_input_age_s": 0.5,
    "qos_depth": 1,
    "qos_reliability": "best_effort",  # for the sensor topics: best_effort | reliable
    "tick_on": "timer",  # timer: an action every control period | inputs: when every input has a new message
    "strategy": "recycle",
    "recompute_every": 0,  # 0: half the chunk
    "margin": 0.1,
    "max_velocity": 80.0,
    "max_acceleration": 6400.0,
    "max_force": 50.0,
}


@dataclass
class _Latest:
    value: Any = None
    stamp: float = 0.0  # monotonic seconds when it arrived


def image_from_msg(msg: Any, size: int, key: str) -> np.ndarray:
    """``sensor_msgs/Image`` (rgb8 / bgr8, size x size) -> uint8 (size, size, 3) RGB; else a ValueError."""
    if msg.encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"{key}: expected encoding rgb8 or bgr8, got {msg.encoding!r}")
    if (msg.height, msg.width) != (size, size):
        raise ValueError(f"{key}: expected a {size}x{size} image, got {msg.width}x{msg.height}")
    row = msg.width * 3
    if msg.step < row or len(msg.data) < msg.step * msg.height:
        raise ValueError(f"{key}: step {msg.step} / {len(msg.data)} bytes do not hold {msg.height} rows of "
                         f"{row}")
    buf = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, :row]
    im = buf.reshape(size, size, 3)
    return np.array(im[..., ::-1] if msg.encoding == "bgr8" else im)  # a writable copy


def image_msg(image: np.ndarray, frame_id: str = "camera") -> Any:
    """uint8 (H, W, 3) RGB -> ``sensor_msgs/Image`` rgb8 (what a camera driver, or a test, publishes)."""
    from sensor_msgs.msg import Image

    image = np.ascontiguousarray(image, dtype=np.uint8)
    msg = Image()
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding, msg.is_bigendian, msg.step = "rgb8", 0, int(image.shape[1] * 3)
    msg.data = image.tobytes()
    return msg


def array_msg(values: Any) -> Any:
    from std_msgs.msg import Float32MultiArray

    msg = Float32MultiArray()
    msg.data = [float(x) for x in np.asarray(values, np.float32).ravel()]
    return msg


class PolicyNode:
    """The node (``self.node``, an ``rclpy.node.Node``). ``policy``: a ``Policy`` or a ``PolicyClient``."""

    def __init__(self, policy: Any, embodiment: str | None = None, name: str = "vlaforge_policy",
                 parameters: dict[str, Any] | None = None):
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import Float32MultiArray, String

        from vlaforge.runtime import ChunkExecutor, Controller, Monitor, SafetyConfig, SafetyLayer

        self.policy = policy
        pc = policy.config
        embodiments = list(pc.embodiments)
        self.embodiment = embodiment or (embodiments[0] if len(embodiments) == 1 else None)
        if self.embodiment not in pc.embodiments:
            raise ValueError(f"embodiment: expected one of {embodiments}, got {embodiment!r}")
        unknown = sorted(set(parameters or {}) - set(PARAMETERS))
        if unknown:
            raise ValueError(f"parameters: unknown {unknown}; expected any of {sorted(PARAMETERS)}")
        overrides = [(k, v) for k, v in (parameters or {}).items()]
        self.node = Node(name, parameter_overrides=[_param(k, v) for k, v in overrides])
        p = {k: self.node.declare_parameter(k, v).value for k, v in PARAMETERS.items()}
        self.params = p
        spec = pc.embodiments[self.embodiment]
        known = getattr(spec, "control_hz", None) or _sim_rate(self.embodiment)
        hz = float(p["control_hz"]) or float(known or 10.0)
        self.dt = 1.0 / hz
        self.size, self.cameras = int(pc.image_size), tuple(pc.cameras_of(self.embodiment))
        self.state_dim, self.action_dim = int(spec.state_dim), int(spec.action_dim)
        stats = policy.stats
        self.safety = SafetyLayer(SafetyConfig.from_dataset_stats(
            stats[self.embodiment]["action"], margin=p["margin"], max_velocity=p["max_velocity"],
            max_acceleration=p["max_acceleration"], max_force=p["max_force"], dt=self.dt))
        h = int(pc.chunk_size)
        self.executor = ChunkExecutor(policy, strategy=p["strategy"], recompute_every=p["recompute_every"] or
                                      max(1, h // 2))
        self.monitor = Monitor(stats, self.embodiment, latency_budget_s=self.dt)
        self.controller = Controller(policy, self.safety, self.executor, self.monitor)

        reliability = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
        if p["qos_reliability"] not in reliability:
            raise ValueError(f"qos_reliability: expected best_effort or reliable, got "
                             f"{p['qos_reliability']!r}")
        sensor_qos = QoSProfile(depth=int(p["qos_depth"]), reliability=reliability[p["qos_reliability"]])
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        prefix = p["topic_prefix"].rstrip("/")
        self.topics = {"state": f"{prefix}/state", "instruction": f"{prefix}/instruction",
                       "force": f"{prefix}/force", "action": f"{prefix}/action", "status": f"{prefix}/status",
                       "episode_done": f"{prefix}/episode_done",
                       **{f"camera/{c}": f"{prefix}/camera/{c}/image" for c in self.cameras}}
        self._images = {c: _Latest() for c in self.cameras}
        self._state, self._task, self._force = _Latest(), _Latest(), _Latest()
        for c in self.cameras:
            self.node.create_subscription(Image, self.topics[f"camera/{c}"], self._on_image(c), sensor_qos)
        self.node.create_subscription(Float32MultiArray, self.topics["state"], self._on_state, sensor_qos)
        self.node.create_subscription(Float32MultiArray, self.topics["force"], self._on_force, sensor_qos)
        self.node.create_subscription(String, self.topics["instruction"], self._on_task, latched)
        self.node.create_subscription(String, self.topics["episode_done"], self._on_done, latched)
        self.action_pub = self.node.create_publisher(Float32MultiArray, self.topics["action"], 10)
        self.status_pub = self.node.create_publisher(String, self.topics["status"], 10)
        self.steps = 0
        self.rejected: dict[str, int] = {}
        if p["tick_on"] not in ("timer", "inputs"):
            raise ValueError(f"tick_on: expected timer or inputs, got {p['tick_on']!r}")
        self._last_tick = 0.0
        self.timer = self.node.create_timer(self.dt, self.tick) if p["tick_on"] == "timer" else None

    # -- inputs ----------------------------------------------------------------------------------------------
    def _reject(self, what: str, e: Exception) -> None:
        self.rejected[what] = self.rejected.get(what, 0) + 1
        if self.rejected[what] in (1, 10, 100, 1000):
            self.node.get_logger().error(f"dropped {what} message #{self.rejected[what]}: {e}")

    def _on_image(self, camera: str):
        key = image_key(camera)

        def cb(msg: Any) -> None:
            try:
                self._images[camera] = _Latest(image_from_msg(msg, self.size, key), time.monotonic())
            except ValueError as e:
                self._reject(key, e)
                return
            self._maybe_tick()
        return cb

    def _maybe_tick(self) -> None:
        """``tick_on=inputs``: act once every camera and the state have a message newer than the last action
        (lockstep with a simulator that publishes after each step; on a robot, use the timer)."""
        inputs = (self._state, *self._images.values())
        if self.timer is None and all(v.stamp > self._last_tick for v in inputs):
            self.tick()

    def _on_state(self, msg: Any) -> None:
        state = np.asarray(msg.data, np.float32)
        if state.shape != (self.state_dim,) or not np.isfinite(state).all():
            why = f"expected {self.state_dim} finite values, got {state.tolist()}"
            self._reject(OBS_STATE, ValueError(why))
            return
        self._state = _Latest(state, time.monotonic())
        self._maybe_tick()

    def _on_force(self, msg: Any) -> None:
        self._force = _Latest(np.asarray(msg.data, np.float64), time.monotonic())

    def _on_task(self, msg: Any) -> None:
        if not msg.data.strip():
            self._reject(TASK, ValueError("an empty instruction"))
            return
        self._task = _Latest(msg.data, time.monotonic())
        self._maybe_tick()

    def _on_done(self, msg: Any) -> None:
        self.end_episode(msg.data.strip().lower() == "success")

    def end_episode(self, success: bool) -> None:
        """The outcome to the monitor; executor and motion history restart (a latched estop stays)."""
        self.controller.end_episode(success)

    # -- the control tick ------------------------------------------------------------------------------------
    def observation(self) -> tuple[dict[str, Any] | None, str]:
        """The newest inputs as a frame dict, or (None, why not)."""
        now = time.monotonic()
        inputs = {"state": self._state, "instruction": self._task,
                  **{f"camera/{c}": v for c, v in self._images.items()}}
        missing = [k for k, v in inputs.items() if v.value is None]
        if missing:
            return None, "WAITING for " + ", ".join(self.topics[k] for k in missing)
        age = self.params["max_input_age_s"]
        stale = [k for k, v in inputs.items() if k != "instruction" and now - v.stamp > age]
        if stale:
            return None, "STALE_INPUT " + ", ".join(self.topics[k] for k in stale)
        frame = {image_key(c): v.value for c, v in self._images.items()}
        return frame | {OBS_STATE: self._state.value, TASK: self._task.value, EMBODIMENT: self.embodiment}, ""

    def tick(self) -> None:
        from std_msgs.msg import String

        now = time.monotonic()
        frame, why = self.observation()
        status = String()
        if frame is None:
            status.data = json.dumps({"status": why.split()[0], "detail": why, "step": self.steps})
            self.status_pub.publish(status)
            return
        self._last_tick = now  # these inputs are used (an idle tick leaves them for the next one)
        fresh = time.monotonic() - self._force.stamp <= self.params["max_input_age_s"]
        force = self._force.value if fresh else None
        t0 = time.perf_counter()
        result = self.controller.step(frame, force=force)
        latency_ms = (time.perf_counter() - t0) * 1e3
        self.action_pub.publish(array_msg(result.action))
        self.steps += 1
        status.data = json.dumps({"status": str(result.status), "step": self.steps,
                                  "latency_ms": round(latency_ms, 2),
                                  "reasons": list(result.info.get("safety_reasons", []))}, default=str)
        self.status_pub.publish(status)

    def close(self) -> None:
        self.executor.close()
        self.node.destroy_node()


class SimRobotNode:
    """A simulated robot on the same topics: publishes an env's camera images, state and the instruction, and
    steps the env with every action that arrives (what a robot driver does). ``episode(seed)`` resets it;
    ``done`` / ``success`` / ``steps`` tell how the episode stands. For tests and the closed Meta-World
    loop."""

    def __init__(self, env: Any, topic_prefix: str = "/vlaforge", name: str = "vlaforge_sim_robot"):
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import Float32MultiArray, String

        self.env = env
        self.node = Node(name)
        prefix = topic_prefix.rstrip("/")
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.cameras = tuple(env.cameras)
        self.image_pubs = {c: self.node.create_publisher(Image, f"{prefix}/camera/{c}/image", 1)
                           for c in self.cameras}
        self.state_pub = self.node.create_publisher(Float32MultiArray, f"{prefix}/state", 1)
        self.task_pub = self.node.create_publisher(String, f"{prefix}/instruction", latched)
        self.done_pub = self.node.create_publisher(String, f"{prefix}/episode_done", latched)
        self.node.create_subscription(Float32MultiArray, f"{prefix}/action", self._on_action, 10)
        self.statuses: list[str] = []
        self.node.create_subscription(String, f"{prefix}/status",
                                      lambda m: self.statuses.append(json.loads(m.data)["status"]), 10)
        self.obs: dict[str, Any] | None = None
        self.done, self.success, self.steps, self.actions = True, False, 0, []

    def episode(self, seed: int) -> None:
        from std_msgs.msg import String

        self.obs, _ = self.env.reset(seed=seed)
        self.done, self.success, self.steps, self.actions = False, False, 0, []
        msg = String()
        msg.data = self.obs[TASK]
        self.task_pub.publish(msg)
        self.publish()

    def publish(self) -> None:
        assert self.obs is not None
        for c in self.cameras:
            self.image_pubs[c].publish(image_msg(self.obs[image_key(c)], c))
        self.state_pub.publish(array_msg(self.obs[OBS_STATE]))

    def _on_action(self, msg: Any) -> None:
        from std_msgs.msg import String

        if self.done:
            return
        action = np.asarray(msg.data, np.float32)
        self.actions.append(action)
        self.obs, _, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        self.success = self.success or bool(info.get("is_success", False))
        if self.success or terminated or truncated:
            self.done = True
            out = String()
            out.data = "success" if self.success else "failure"
            self.done_pub.publish(out)
        else:
            self.publish()

    def close(self) -> None:
        self.node.destroy_node()


def run_sim_episodes(policy: Any, task: str, seeds: list[int], max_steps: int = 300,
                     parameters: dict[str, Any] | None = None,
                     timeout_s: float = 600.0) -> list[dict[str, Any]]:
    """A simulated robot (any registered simulator's ``task``: Meta-World, robosuite) closed through ROS 2
    topics in this process, on the cameras of its embodiment: a :class:`SimRobotNode` and a
    :class:`PolicyNode` on one executor, in lockstep (``tick_on=inputs``: one action per simulator step, from
    that step's images and state; ``parameters={"tick_on": "timer"}`` for the robot's timing instead). Returns
    per episode: seed, success, steps, statuses seen."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from vlaforge.sim import simulator_for_task

    pc = policy.config
    sim = simulator_for_task(task)
    if sim.embodiment not in pc.embodiments:
        raise ValueError(f"{task}: the policy has no head for the {sim.embodiment!r} robot of {sim.name}; it "
                         f"has {sorted(pc.embodiments)}")
    env = sim.make_env(task, cameras=pc.cameras_of(sim.embodiment), image_size=pc.image_size,
                       max_steps=max_steps)
    started = not rclpy.ok()
    if started:
        rclpy.init()
    robot = SimRobotNode(env, topic_prefix=(parameters or {}).get("topic_prefix", PARAMETERS["topic_prefix"]))
    node = PolicyNode(policy, sim.embodiment, parameters={"tick_on": "inputs", **(parameters or {})})
    ex = SingleThreadedExecutor()
    ex.add_node(robot.node)
    ex.add_node(node.node)
    out = []
    try:
        for seed in seeds:
            robot.episode(seed)
            robot.statuses.clear()
            t0 = time.monotonic()
            while not robot.done and time.monotonic() - t0 < timeout_s:
                ex.spin_once(timeout_sec=0.05)
            for _ in range(5):  # deliver episode_done to the policy node
                ex.spin_once(timeout_sec=0.01)
            out.append({"seed": seed, "success": robot.success, "steps": robot.steps,
                        "statuses": sorted(set(robot.statuses))})
    finally:
        node.close()
        robot.close()
        env.close()
        ex.shutdown()
        if started:
            rclpy.shutdown()
    return out


def _param(name: str, value: Any) -> Any:
    from rclpy.parameter import Parameter

    return Parameter(name, value=value)


def _sim_rate(embodiment: str) -> float | None:
    from vlaforge.sim import SIMULATORS

    for n in SIMULATORS.names():
        s = SIMULATORS.get(n)
        if s.embodiment == embodiment:
            return s.control_hz
    return None


def run_node(checkpoint: str | None, server: str | None, token_file: str | None = None,
             embodiment: str | None = None, parameters: dict[str, Any] | None = None) -> None:
    """``vlaforge ros2``: build the policy (loaded here, or a client of a server) and spin until Ctrl-C."""
    import rclpy

    if (checkpoint is None) == (server is None):
        raise ValueError("expected --checkpoint (the policy in this process) or --server (a served policy), "
                         "exactly one")
    if server is not None:
        from vlaforge.serving.client import PolicyClient
        from vlaforge.serving.protocol import read_token

        policy = PolicyClient(server, token=read_token(token_file) if token_file else None)
    else:
        from vlaforge.policy import Policy

        policy = Policy.load(checkpoint)
        print(policy.set_precision("auto").describe())
    rclpy.init()
    node = PolicyNode(policy, embodiment, parameters=parameters)
    node.node.get_logger().info(f"vlaforge policy node: {json.dumps(node.topics)} at {1 / node.dt:g} Hz")
    try:
        rclpy.spin(node.node)
    except KeyboardInterrupt:
        pass
    finally:
        node.close()
        if rclpy.ok():
            rclpy.shutdown()
