"""``vlaforge.evaluation.grasp.grasp_outcome``: each outcome from a constructed trace; bad input refused."""

from __future__ import annotations

import numpy as np
import pytest

from vlaforge.evaluation.grasp import OUTCOMES, grasp_outcome

T = 10


def _trace(close_at: int | None, lift: float, hand_dx: float = 0.0, drop_at: int | None = None):
    hand = np.zeros((T, 3))
    hand[:, 0] = hand_dx
    opening = np.ones(T)
    if close_at is not None:
        opening[close_at:] = 0.3
    obj = np.zeros((T, 3))
    obj[:, 2] = 0.02
    obj[T // 2:, 2] += lift
    if drop_at is not None:
        obj[drop_at:, 2] = 0.02
    goal = np.tile([0.1, 0.0, 0.2], (T, 1))
    return hand, opening, obj, goal


def test_outcomes_and_the_offset_when_the_gripper_closed():
    r = grasp_outcome(*_trace(3, 0.0, hand_dx=0.035), success=False)
    assert r["outcome"] == "closed beside the object" and r["close_step"] == 3
    assert r["offset_xy_cm"] == pytest.approx(3.5) and r["lift_cm"] == pytest.approx(0.0)
    r = grasp_outcome(*_trace(3, 0.10), success=False)
    assert r["outcome"] == "carried, not to the goal" and r["lift_cm"] == pytest.approx(10.0)
    assert r["end_lift_cm"] == pytest.approx(10.0)
    assert r["final_goal_cm"] == pytest.approx(float(np.linalg.norm([0.1, 0.0, 0.08])) * 100)
    r = grasp_outcome(*_trace(3, 0.10, drop_at=8), success=False)
    assert r["outcome"] == "lifted, then dropped" and r["lift_cm"] == pytest.approx(10.0)
    assert r["end_lift_cm"] == pytest.approx(0.0)
    r = grasp_outcome(*_trace(None, 0.0), success=False)
    assert r["outcome"] == "never closed" and r["close_step"] is None and r["offset_xy_cm"] is None
    assert grasp_outcome(*_trace(3, 0.10), success=True)["outcome"] == OUTCOMES[0]


def test_mismatched_arrays_are_refused_with_their_shapes():
    hand, opening, obj, goal = _trace(3, 0.0)
    with pytest.raises(ValueError, match=r"\(10, 3\), \(9, 3\)"):
        grasp_outcome(hand, opening, obj[:9], goal, success=False)
