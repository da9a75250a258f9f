"""Why a grasping episode failed, read from its trace of hand, gripper, object and goal positions (issue 18):
did the gripper close beside the object, lift it and drop it, carry it somewhere other than the goal, or never
close at all?

``grasp_outcome`` is pure numpy; ``benchmarks/grasp_misses.py`` rolls a policy and the scripted expert out on
the same seeds and tabulates the outcomes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: outcomes, in the order a table lists them
OUTCOMES = ("success", "closed beside the object", "lifted, then dropped", "carried, not to the goal",
            "never closed")


def grasp_outcome(hand: Any, opening: Any, obj: Any, goal: Any, success: bool, *, close_below: float = 0.8,
                  lifted_m: float = 0.02) -> dict:
    """One episode's grasp, from per-step arrays: ``hand`` (T, 3) hand position, ``opening`` (T,) gripper
    opening (1 open), ``obj`` (T, 3) the object's position, ``goal`` (T, 3) the goal's; ``success``: whether
    the episode succeeded.

    The gripper closes at the first step whose opening is below ``close_below``; the object was lifted if it
    rose more than ``lifted_m`` above where it started, and dropped if, lifted, it ends less than ``lifted_m``
    above its start (else it was carried, and did not reach the goal). Returns ``outcome`` (one of
    OUTCOMES), ``close_step`` (None if it never closed), ``offset_xy_cm`` (hand to object in the table plane
    when it closed, None if it never did), ``lift_cm`` (the highest rise), ``end_lift_cm`` (the rise at the
    end) and ``final_goal_cm`` (object to goal at the end)."""
    hand, obj, goal = (np.asarray(a, dtype=np.float64) for a in (hand, obj, goal))
    opening = np.asarray(opening, dtype=np.float64)
    n = len(opening)
    if n == 0 or hand.shape != (n, 3) or obj.shape != (n, 3) or goal.shape != (n, 3):
        raise ValueError(f"grasp_outcome: expected hand, obj, goal of shape (T, 3) and opening (T,) with "
                         f"T >= 1, got {hand.shape}, {obj.shape}, {goal.shape} and {opening.shape}")
    closed = np.flatnonzero(opening < close_below)
    close_step = int(closed[0]) if closed.size else None
    offset = (float(np.linalg.norm(hand[close_step, :2] - obj[close_step, :2])) * 100
              if close_step is not None else None)
    lift = float(obj[:, 2].max() - obj[0, 2])
    end_lift = float(obj[-1, 2] - obj[0, 2])
    if success:
        outcome = OUTCOMES[0]
    elif close_step is None:
        outcome = OUTCOMES[4]
    elif lift < lifted_m:
        outcome = OUTCOMES[1]
    elif end_lift < lifted_m:
        outcome = OUTCOMES[2]
    else:
        outcome = OUTCOMES[3]
    return {"outcome": outcome, "close_step": close_step, "offset_xy_cm": offset, "lift_cm": lift * 100,
            "end_lift_cm": end_lift * 100,
            "final_goal_cm": float(np.linalg.norm(obj[-1] - goal[-1])) * 100}
