"""Success accounting and smoothness on hand-made episodes."""

import math

import numpy as np
import pytest

from vlaforge.evaluation.metrics import (
    EpisodeResult,
    episode_from_trace,
    mean_squared_jerk,
    summarize,
    wilson_interval,
)


def test_success_is_any_step_and_steps_to_success_is_first_hit():
    e = episode_from_trace("t", 3, np.zeros((6, 4)), [False, False, True, False, True, False])
    assert e.success and e.steps_to_success == 3 and e.steps == 6
    f = episode_from_trace("t", 4, np.zeros((5, 4)), [False] * 5)
    assert not f.success and f.steps_to_success is None


def test_jerk_is_zero_for_constant_velocity_and_matches_third_difference():
    t = np.arange(20, dtype=float)[:, None]
    assert mean_squared_jerk(np.hstack([2 * t, -t + 1])) == pytest.approx(0.0)
    assert mean_squared_jerk(np.hstack([t ** 2, t])) == pytest.approx(0.0)  # constant acceleration: no jerk
    cubic = t ** 3  # third difference of t^3 is 6 everywhere
    assert mean_squared_jerk(cubic) == pytest.approx(36.0)
    assert math.isnan(mean_squared_jerk(np.zeros((3, 2))))
    with pytest.raises(ValueError, match=r"expected shape \(T, D\)"):
        mean_squared_jerk(np.zeros(5))


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(10, 20)
    assert lo == pytest.approx(0.2993, abs=1e-3) and hi == pytest.approx(0.7007, abs=1e-3)
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and lo == pytest.approx(0.8389, abs=1e-3)
    assert wilson_interval(0, 20)[0] == 0.0


def test_summary_per_task_and_overall_is_mean_of_task_rates():
    eps = [EpisodeResult("a", s, success=ok, steps=10, steps_to_success=5 if ok else None, jerk=1.0,
                         chunk_latency_ms=[2.0, 4.0], policy_calls=2, control_s=0.1)
           for s, ok in enumerate([True, True, True, False])]
    eps += [EpisodeResult("b", s, success=False, steps=20, steps_to_success=None, jerk=3.0,
                          chunk_latency_ms=[10.0], policy_calls=5, control_s=0.2) for s in range(2)]
    out = summarize(eps)
    a, b = out["tasks"]["a"], out["tasks"]["b"]
    assert a["success_rate"] == 0.75 and a["successes"] == 3 and a["failed_seeds"] == [3]
    assert a["mean_steps_to_success"] == 5.0 and a["policy_calls_per_step"] == pytest.approx(0.2)
    assert a["control_steps_per_s"] == pytest.approx(100.0)
    assert b["success_rate"] == 0.0 and b["mean_steps_to_success"] is None
    assert out["overall"]["success_rate"] == pytest.approx(0.375)  # (0.75 + 0) / 2, not 3/6
    assert out["overall"]["successes"] == 3 and out["overall"]["episodes"] == 6
    assert out["overall"]["chunk_latency_ms_p50"] == pytest.approx(4.0)
