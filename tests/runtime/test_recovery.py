"""Recovery behaviours (issue 19): re-plan on a deviation, bounded retries, the move home, escalation,
smoothing and the fallback policy, on a point robot whose state integrates the commanded velocity."""

from __future__ import annotations

import numpy as np
import pytest

from tests.runtime.stubs import ConstantPolicy
from vlaforge.runtime import ChunkExecutor, Controller, SafetyConfig, SafetyLayer, Status
from vlaforge.runtime.recovery import ForwardModel, Recovery, RecoveryConfig

GAIN = 0.01  # metres per step per unit of action, like Meta-World's hand


class PointRobot:
    """x[t+1] = x[t] + GAIN * action[:3] (+ push); the 4th state is the gripper's opening, not commanded."""

    def __init__(self):
        self.x = np.zeros(3)
        self.stuck = False

    def obs(self) -> dict:
        state = np.append(self.x, 0.5).astype(np.float32)
        return {"observation.images.corner": np.zeros((8, 8, 3), np.uint8), "observation.state": state,
                "task": "reach", "embodiment": "sawyer"}

    def step(self, action, push=None) -> None:
        if not self.stuck:
            self.x = self.x + GAIN * np.asarray(action[:3], np.float64)
        if push is not None:
            self.x = self.x + push


def model() -> ForwardModel:
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (400, 4))
    states = np.zeros((400, 4))
    for t in range(1, 400):
        states[t, :3] = states[t - 1, :3] + GAIN * actions[t - 1, :3] + rng.normal(0, 1e-4, 3)
        states[t, 3] = rng.uniform()  # not explained by the actions
    ends = np.repeat([200, 400], 200)
    return ForwardModel.fit(states, actions, ends)


def controller(policy, recovery=None, fallback=None):
    safety = SafetyLayer(SafetyConfig(low=[-1.0] * 4, high=[1.0] * 4, max_velocity=100.0,
                                      max_acceleration=1e4, max_force=50.0, dt=0.0125,
                                      initial_action=[0.0] * 4))
    return Controller(policy, safety, ChunkExecutor(policy, "recycle", recompute_every=4), recovery=recovery,
                      fallback=fallback)


def test_the_forward_model_finds_the_commanded_dimensions():
    m = model()
    assert m.dims.tolist() == [0, 1, 2]  # the gripper's random opening is left out
    np.testing.assert_allclose(m.B[:3], GAIN * np.eye(3), atol=2e-4)
    assert m.error_mean < 5e-4
    a = m.action_towards(np.zeros(4), np.array([0.01, -0.005, 0.0]), gain=1.0)
    np.testing.assert_allclose(m.predict(np.zeros(4), a), [0.01, -0.005, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="explain no state dimension"):
        ForwardModel.fit(np.random.default_rng(1).normal(size=(50, 2)), np.ones((50, 2)), np.full(50, 50))


def test_a_push_replans_the_chunk_at_once():
    robot, policy = PointRobot(), ConstantPolicy([0.5, 0.0, 0.0, 0.0])
    m = model()
    c = controller(policy, Recovery(RecoveryConfig(deviation_threshold=0.005), m))
    replanned = []
    for t in range(12):
        r = c.step(robot.obs())
        assert r.status == Status.OK
        replanned.append(bool(r.info.get("replanned")))
        robot.step(r.action, push=np.array([0.0, 0.05, 0.0]) if t == 5 else None)
    assert replanned.index(True) == 6 and sum(replanned) == 1, replanned  # the step after the push, once
    calls_without = ConstantPolicy([0.5, 0.0, 0.0, 0.0])
    plain, robot = controller(calls_without), PointRobot()
    for t in range(12):
        r = plain.step(robot.obs())
        robot.step(r.action, push=np.array([0.0, 0.05, 0.0]) if t == 5 else None)
    assert policy.calls == calls_without.calls + 1  # one extra plan, right after the push


def test_a_stuck_arm_retries_then_goes_home_then_escalates():
    robot, policy = PointRobot(), ConstantPolicy([0.5, 0.5, 0.0, 0.0])
    m = model()
    cfg = RecoveryConfig(deviation_threshold=0.005, max_retries=2, home_state=(0.0, 0.0, 0.0),
                         home_tolerance=0.005, max_home_steps=20, max_recoveries=1)
    rec = Recovery(cfg, m)
    c = controller(policy, rec)
    statuses = []
    for t in range(60):
        r = c.step(robot.obs())
        statuses.append(r.status)
        robot.stuck = 10 <= t < 40  # the arm stops following for 30 steps
        robot.step(r.action)
    first_home = statuses.index(Status.RECOVERING)
    assert rec.totals["replans"] >= 1 and rec.totals["retries"] == 3 and first_home >= 12
    assert rec.totals["recoveries"] == 1
    # still stuck: not home within 20 steps -> escalate, and hold until a person resets
    assert Status.ESCALATE in statuses and statuses[-1] == Status.ESCALATE
    assert rec.totals["escalations"] == 1
    c.reset()
    assert c.step(robot.obs()).status == Status.OK


def test_home_cures_a_short_fault_and_the_policy_resumes():
    robot, policy = PointRobot(), ConstantPolicy([0.5, 0.5, 0.0, 0.0])
    m = model()
    rec = Recovery(RecoveryConfig(deviation_threshold=0.005, max_retries=1,
                                  home_state=(0.0, 0.0, 0.0), home_tolerance=0.005, max_home_steps=100), m)
    c = controller(policy, rec)
    statuses = []
    for t in range(80):
        r = c.step(robot.obs())
        statuses.append(r.status)
        robot.stuck = 10 <= t < 14
        robot.step(r.action)
    assert rec.totals == {"replans": 2, "retries": 2, "recoveries": 1, "recovered": 1, "escalations": 0}
    home = [i for i, s in enumerate(statuses) if s == Status.RECOVERING]
    assert home and statuses[home[-1] + 1] == Status.OK and statuses[-1] == Status.OK
    assert Status.ESCALATE not in statuses


def test_smoothing_blends_with_the_previous_action():
    policy = ConstantPolicy([1.0, 0.0, 0.0, 0.0])
    c = controller(policy, Recovery(RecoveryConfig(smoothing=0.75)))
    out = [c.step(PointRobot().obs()).action[0] for _ in range(3)]
    np.testing.assert_allclose(out, [1.0, 1.0, 1.0])  # the first has no previous; then steady
    policy.action = np.asarray([0.0, 0.0, 0.0, 0.0], np.float32)
    c.executor.reset()
    out = [c.step(PointRobot().obs()).action[0] for _ in range(3)]
    np.testing.assert_allclose(out, [0.75, 0.5625, 0.421875], rtol=1e-6)


class Broken(ConstantPolicy):
    def predict_chunk(self, obs):
        self.calls += 1
        raise ConnectionError("the policy server is down")


def test_the_fallback_acts_when_the_policy_is_unavailable():
    c = controller(Broken([0.0] * 4), fallback=lambda obs: np.array([0.2, 0.0, 0.0, 0.0]))
    r = c.step(PointRobot().obs())
    assert r.status == Status.FALLBACK and r.info["fallback_reason"] == "policy_error"
    np.testing.assert_allclose(r.action, [0.2, 0.0, 0.0, 0.0])

    def broken_fallback(obs):
        raise RuntimeError("no")
    c = controller(Broken([0.0] * 4), fallback=broken_fallback)
    r = c.step(PointRobot().obs())
    assert r.status == Status.HOLD and "RuntimeError" in r.info["fallback_error"]


def test_bad_recovery_settings_are_refused():
    with pytest.raises(ValueError, match="smoothing: expected a value in \\[0, 1\\)"):
        RecoveryConfig(smoothing=1.0)
    with pytest.raises(ValueError, match="needs a ForwardModel"):
        Recovery(RecoveryConfig(deviation_threshold=0.01))
    with pytest.raises(ValueError, match="home_state: expected 3 values"):
        Recovery(RecoveryConfig(home_state=(0.0, 0.0)), model())
    with pytest.raises(TypeError, match="fallback: expected a callable"):
        controller(ConstantPolicy([0.0] * 4), fallback=3)
