"""The ROS 2 node with real rclpy publishers and subscribers in this process: Meta-World closed through
topics, with the policy in-process and served; inputs checked; no action without fresh inputs."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import Float32MultiArray, String

from tests.serving.conftest import tiny_policy
from vlaforge.apps.ros2 import PolicyNode, image_from_msg, image_msg, run_sim_episodes


@pytest.fixture(scope="module")
def ros():
    # a domain of this test process: no cross-talk with a robot or another run on the same network
    rclpy.init(domain_id=10 + os.getpid() % 90)
    yield
    rclpy.shutdown()


@pytest.fixture(scope="module")
def policy():
    return tiny_policy()


def _bounds(policy):
    a = policy.stats["sawyer"]["action"]
    span = a["max"] - a["min"]
    return a["min"] - 0.1 * span - 1e-6, a["max"] + 0.1 * span + 1e-6


def test_meta_world_closed_through_topics_in_process(ros, policy):
    eps = run_sim_episodes(policy, "drawer-open-v3", seeds=[1000, 1001], max_steps=30)
    assert [e["steps"] for e in eps] == [30, 30], eps  # every tick's action reached the robot and stepped it
    assert all("OK" in e["statuses"] or "CONSERVATIVE" in e["statuses"] for e in eps), eps


def test_meta_world_closed_through_topics_and_a_server(ros, policy):
    from vlaforge.serving.client import PolicyClient
    from vlaforge.serving.server import PolicyServer

    with PolicyServer(policy).run_in_thread() as running, PolicyClient(running.url) as client:
        eps = run_sim_episodes(client, "drawer-open-v3", seeds=[1000], max_steps=20,
                               parameters={"topic_prefix": "/served"})
    assert eps[0]["steps"] == 20, eps


def test_no_action_without_fresh_inputs_and_bad_inputs_are_dropped(ros, policy):
    node = PolicyNode(policy, parameters={"topic_prefix": "/check", "max_input_age_s": 0.3,
                                          "control_hz": 50.0})
    feeder = rclpy.create_node("feeder")
    actions, statuses = [], []
    feeder.create_subscription(Float32MultiArray, "/check/action",
                               lambda m: actions.append(np.array(m.data)), 10)
    feeder.create_subscription(String, "/check/status", lambda m: statuses.append(json.loads(m.data)), 10)
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    image_type = type(image_msg(np.zeros((2, 2, 3), np.uint8)))
    image_pub = feeder.create_publisher(image_type, "/check/camera/corner/image", 1)
    state_pub = feeder.create_publisher(Float32MultiArray, "/check/state", 1)
    task_pub = feeder.create_publisher(String, "/check/instruction", latched)
    ex = SingleThreadedExecutor()
    ex.add_node(node.node)
    ex.add_node(feeder)

    def spin_until(cond, timeout=10.0, publish=lambda: None):
        """Spin (publishing again each round: discovery between new nodes takes a moment) until cond()."""
        t0 = time.monotonic()
        while not cond():
            assert time.monotonic() - t0 < timeout, (f"timed out; statuses {statuses[-3:]}, "
                                                     f"rejected {node.rejected}")
            publish()
            for _ in range(5):
                ex.spin_once(timeout_sec=0.01)

    s = policy.config.image_size
    task = String()
    task.data = "open the drawer"

    def bad_inputs():
        image_pub.publish(image_msg(np.zeros((s + 1, s, 3), np.uint8)))  # wrong size: dropped
        state_pub.publish(Float32MultiArray(data=[0.0, 1.0]))  # wrong length: dropped

    def good_inputs():
        image_pub.publish(image_msg(np.zeros((s, s, 3), np.uint8)))
        state_pub.publish(Float32MultiArray(data=[0.0] * 4))

    try:
        spin_until(lambda: statuses and statuses[-1]["status"] == "WAITING")
        assert not actions
        task_pub.publish(task)
        spin_until(lambda: len(node.rejected) == 2, publish=bad_inputs)
        assert not actions and set(node.rejected) == {"observation.images.corner", "observation.state"}
        spin_until(lambda: len(actions) >= 3, publish=good_inputs)
        low, high = _bounds(policy)
        assert all(a.shape == (4,) and (a >= low).all() and (a <= high).all() for a in actions)
        spin_until(lambda: statuses[-1]["status"] == "STALE_INPUT")  # no new inputs: they go stale
        n = len(actions)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.2:
            ex.spin_once(timeout_sec=0.01)
        assert len(actions) == n and statuses[-1]["status"] == "STALE_INPUT", statuses[-1]  # and actions stop
    finally:
        node.close()
        feeder.destroy_node()
        ex.shutdown()


def test_image_messages():
    rng = np.random.default_rng(0)
    im = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(image_from_msg(image_msg(im), 8, "k"), im)
    bgr = image_msg(im[..., ::-1])
    bgr.encoding = "bgr8"
    np.testing.assert_array_equal(image_from_msg(bgr, 8, "k"), im)
    padded = image_msg(np.concatenate([im, np.zeros((8, 2, 3), np.uint8)], 1))  # rows with padding bytes
    padded.width = 8
    np.testing.assert_array_equal(image_from_msg(padded, 8, "k"), im)
    mono = image_msg(im)
    mono.encoding = "mono8"
    with pytest.raises(ValueError, match="rgb8 or bgr8"):
        image_from_msg(mono, 8, "k")
    with pytest.raises(ValueError, match="8x8"):
        image_from_msg(image_msg(im), 16, "k")


def test_the_sim_robot_reports_success_through_topics(ros):
    """The scripted expert drives the robot node through the action topic; the episode ends as a success."""
    from vlaforge.apps.ros2 import SimRobotNode, array_msg
    from vlaforge.sim.metaworld import MetaWorldEnv

    env = MetaWorldEnv("drawer-close-v3", cameras=("corner",), image_size=32, max_steps=300)
    robot = SimRobotNode(env, topic_prefix="/expert")
    expert = rclpy.create_node("expert")
    pub = expert.create_publisher(Float32MultiArray, "/expert/action", 10)
    done = []
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    expert.create_subscription(String, "/expert/episode_done", lambda m: done.append(m.data), latched)
    ex = SingleThreadedExecutor()
    ex.add_node(robot.node)
    ex.add_node(expert)
    try:
        robot.episode(1000)
        t0 = time.monotonic()
        while not done and time.monotonic() - t0 < 60:
            if len(robot.actions) == robot.steps:  # the last action was applied: send the next
                pub.publish(array_msg(np.clip(env.expert_action(), -1, 1)))
            ex.spin_once(timeout_sec=0.01)
        assert done == ["success"] and robot.success and robot.done and 0 < robot.steps < 300, robot.steps
    finally:
        robot.close()
        expert.destroy_node()
        ex.shutdown()
        env.close()


def test_a_node_per_robot_on_its_own_camera_topics(ros):
    """A policy of two robots: the Panda's node subscribes to the Panda's cameras (not the policy's first
    robot's) and closes robosuite's lift through topics."""
    from vlaforge.config import EmbodimentSpec

    policy = tiny_policy(embodiments={"panda": (9, 7)})
    cfg = policy.config
    policy.config = cfg.replace(embodiments={**cfg.embodiments, "panda": EmbodimentSpec(9, 7, cameras=(
        "agentview",))})
    node = PolicyNode(policy, "panda", parameters={"topic_prefix": "/panda"})
    try:
        cams = sorted(k for k in node.topics if k.startswith("camera/"))
        assert cams == ["camera/agentview"]
        assert node.topics["camera/agentview"] == "/panda/camera/agentview/image"
        assert (node.state_dim, node.action_dim) == (9, 7)
    finally:
        node.close()
    eps = run_sim_episodes(policy, "lift-panda", seeds=[1000], max_steps=6,
                           parameters={"topic_prefix": "/lift"})
    assert eps[0]["steps"] == 6, eps
    with pytest.raises(ValueError, match="no head for the 'ur5e' robot"):
        run_sim_episodes(policy, "lift-ur5e", seeds=[1000], max_steps=2)
