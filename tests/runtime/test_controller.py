"""Controller status transitions and fault injection (NaN action, force spike, slow inference)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.runtime.stubs import ConstantPolicy, obs_at, stats_for
from vlaforge.runtime import ChunkExecutor, Controller, Monitor, SafetyConfig, SafetyLayer, Status


def safety(**kw):
    base = dict(low=[-10.0] * 4, high=[10.0] * 4, max_velocity=2.0, max_acceleration=40.0, max_force=5.0,
                dt=0.05, initial_action=[0.0] * 4)
    base.update(kw)
    return SafetyLayer(SafetyConfig(**base))


def controller(policy, executor=None, monitor=None, **kw):
    return Controller(policy, safety(), executor or ChunkExecutor(policy, "recycle", recompute_every=2),
                      monitor, **kw)


def obs(t=0, state=(0.0, 0.0)):
    o = obs_at(t)
    o["observation.state"] = np.asarray(state, np.float32)
    return o


def test_ok_path_passes_the_policy_action():
    policy = ConstantPolicy([0.05, -0.05, 0.0, 0.02])
    c = controller(policy)
    for t in range(5):
        r = c.step(obs(t))
        assert r.status == Status.OK
        np.testing.assert_array_equal(r.action, policy.action)
    assert policy.calls == 3 and c.status_counts["OK"] == 5


def test_executor_must_wrap_the_same_policy():
    with pytest.raises(ValueError, match="different policy"):
        Controller(ConstantPolicy([0.0] * 4), safety(), ChunkExecutor(ConstantPolicy([0.0] * 4)))


def test_nan_action_holds():
    policy = ConstantPolicy([0.05, 0.0, 0.0, 0.0])
    c = controller(policy)
    c.step(obs(0))
    policy.action = np.array([np.nan, 0.0, 0.0, 0.0], np.float32)
    c.executor.reset()
    r = c.step(obs(1))
    assert r.status == Status.HOLD and r.info["hold_reason"] == "non_finite"
    assert np.isfinite(r.action).all()
    np.testing.assert_allclose(r.action, [0.05, 0, 0, 0], atol=1e-6)  # the last safe action
    policy.action = np.array([0.06, 0.0, 0.0, 0.0], np.float32)
    c.executor.reset()
    assert c.step(obs(2)).status == Status.OK  # a NaN does not latch


def test_policy_error_holds_instead_of_crashing_the_loop():
    class Failing(ConstantPolicy):
        def predict_chunk(self, o):
            raise RuntimeError("CUDA out of memory")

    policy = Failing([0.0] * 4)
    c = controller(policy)
    r = c.step(obs(0))
    assert r.status == Status.HOLD and r.info["hold_reason"] == "policy_error"
    assert "out of memory" in r.info["detail"]
    np.testing.assert_array_equal(r.action, np.zeros(4, np.float32))


def test_force_spike_estops_until_reset():
    policy = ConstantPolicy([0.05, 0.0, 0.0, 0.0])
    c = controller(policy)
    assert c.step(obs(0), force=np.array([1.0, 0.0, 0.0])).status == Status.OK
    r = c.step(obs(1), force=np.array([0.0, 9.0, 0.0]))
    assert r.status == Status.ESTOP and r.info["estop_reason"] == "force_limit"
    calls = policy.calls
    for t in range(2, 6):
        r = c.step(obs(t))  # force back to normal: still stopped, the policy is not even asked
        assert r.status == Status.ESTOP
    assert policy.calls == calls
    assert c.end_episode(False) == Status.ESTOP  # a new episode does not clear it either
    c.reset()
    assert c.step(obs(0)).status == Status.OK


def test_slow_inference_is_never_executed_stale_sync():
    # a synchronous policy call that takes longer than the age limit: the chunk is stale on arrival
    policy = ConstantPolicy([0.5, 0.0, 0.0, 0.0], delay=0.05)
    mon = Monitor(stats_for(2, 4), "sawyer", latency_budget_s=0.02)
    c = controller(policy, monitor=mon, max_chunk_age_s=0.02)
    for t in range(4):
        r = c.step(obs(t))
        assert r.status == Status.HOLD and r.info["hold_reason"] == "stale"
        np.testing.assert_array_equal(r.action, np.zeros(4, np.float32))  # held, the 0.5 never went out
    rep = mon.report()
    assert rep["latency"]["step"]["alarm"] and rep["latency"]["inference"]["n"] >= 2


def test_slow_inference_async_holds_instead_of_playing_stale_actions():
    policy = ConstantPolicy([0.05, 0.0, 0.0, 0.0], chunk_size=4, delay=0.0)
    ex = ChunkExecutor(policy, "async", recompute_every=1, max_chunk_age_steps=2)
    c = controller(policy, executor=ex)
    assert c.step(obs(0)).status == Status.OK
    policy.delay = 0.15  # inference now takes several control steps
    statuses = []
    for t in range(1, 8):
        statuses.append(c.step(obs(t)).status)
        time.sleep(0.02)
    ex.close()
    assert Status.HOLD in statuses and statuses[-1] == Status.HOLD
    assert all(s in (Status.OK, Status.HOLD) for s in statuses)
    assert statuses.index(Status.HOLD) <= 3  # as soon as the chunk is older than 2 steps


def test_escalate_after_consecutive_failures():
    policy = ConstantPolicy([0.0] * 4)
    c = controller(policy, escalate_after=3)
    assert c.end_episode(False) == Status.OK
    assert c.end_episode(True) == Status.OK  # a success resets the count
    assert c.end_episode(False) == Status.OK
    assert c.end_episode(False) == Status.OK
    assert c.end_episode(False) == Status.ESCALATE
    r = c.step(obs(0))
    assert r.status == Status.ESCALATE and r.info["consecutive_failures"] == 3
    c.reset()
    assert c.step(obs(0)).status == Status.OK


def test_drift_makes_it_conservative_until_it_clears():
    policy = ConstantPolicy([5.0, 5.0, 5.0, 5.0])  # 5 training stds away from the action mean
    mon = Monitor(stats_for(2, 4), "sawyer", latency_budget_s=1.0, window=10, min_samples=5)
    c = controller(policy, monitor=mon, conservative_scale=0.5)
    statuses, outs = [], [np.zeros(4)]
    for t in range(12):
        r = c.step(obs(t))
        statuses.append(r.status)
        outs.append(r.action.astype(np.float64))
    assert statuses[:5] == [Status.OK] * 5 and statuses[-1] == Status.CONSERVATIVE
    assert c.safety.velocity_scale == 0.5
    steps = np.abs(np.diff(np.array(outs), axis=0))
    first_cons = statuses.index(Status.CONSERVATIVE)
    # full speed is 2.0 * 0.05 = 0.1 per step; conservative settles at 0.05 (decelerating at the limit)
    assert steps[first_cons - 1].max() == pytest.approx(0.1, abs=1e-5)
    assert steps[-1].max() == pytest.approx(0.05, abs=1e-5)
    policy.action = np.zeros(4, np.float32)  # back in distribution
    c.executor.reset()
    for t in range(12):
        r = c.step(obs(t))
    assert r.status == Status.OK and c.safety.velocity_scale == 1.0


def test_low_confidence_hook_hold_human_chunk_and_resume():
    policy = ConstantPolicy([0.05, 0.0, 0.0, 0.0])
    verdicts = iter([True, False, False, False, True])  # not asked while the human chunk plays
    seen, answers = [], iter([None, np.array([[0.0, 0.05, 0, 0], [0.0, 0.1, 0, 0]], np.float32), "resume"])

    def on_low(o, verdict):
        seen.append(int(o["observation.state"][0]))
        return next(answers)

    c = controller(policy, confidence=lambda o: {"proceed": next(verdicts), "score": 0.1},
                   on_low_confidence=on_low)
    r = [c.step(obs(t, state=(t, 0))) for t in range(6)]
    assert r[0].status == Status.OK
    assert r[1].status == Status.LOW_CONFIDENCE and "hold" in r[1].info["safety_reasons"]  # None: hold
    assert r[2].status == Status.LOW_CONFIDENCE and r[2].info["source"] == "human"
    np.testing.assert_allclose(r[2].action, [0.0, 0.05, 0, 0], atol=1e-6)  # the human's action
    assert r[3].status == Status.LOW_CONFIDENCE and r[3].info["human_remaining"] == 0  # rest of the chunk
    np.testing.assert_allclose(r[3].action, [0.0, 0.1, 0, 0], atol=1e-6)
    assert r[4].status == Status.OK and r[4].info["resumed"]
    assert seen == [1, 2, 4]
    assert r[5].status == Status.OK


def test_confidence_object_with_estimate():
    class Est:
        def estimate(self, o):
            class V:
                proceed = False
            return V()

    c = controller(ConstantPolicy([0.0] * 4), confidence=Est())
    assert c.step(obs(0)).status == Status.LOW_CONFIDENCE
