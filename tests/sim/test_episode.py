"""The one episode loop (vlaforge.sim.episode) on a tiny counting env: when it stops, what it keeps, hooks."""

from __future__ import annotations

import time

import numpy as np
import pytest

from vlaforge.sim.episode import Step, run_episode


class CountEnv:
    """state += action each step; success while state >= goal; truncated after max_steps."""

    def __init__(self, goal: float = 3.0, max_steps: int = 10):
        self.goal, self.max_steps = goal, max_steps
        self.resets: list[int | None] = []
        self.received: list[float] = []

    def reset(self, seed=None):
        self.resets.append(seed)
        self.state, self.t = 0.0, 0
        return self._obs(), {}

    def step(self, action):
        self.received.append(float(action))
        self.state += float(action)
        self.t += 1
        return self._obs(), 0.0, False, self.t >= self.max_steps, {"is_success": self.state >= self.goal}

    def _obs(self):
        return {"x": np.float32(self.state), "t": self.t}


def test_stops_at_the_first_success_and_records_every_view():
    env = CountEnv(goal=3.0)
    ep = run_episode(env, lambda obs: 1.0, seed=7, record="x")
    assert env.resets == [7] and ep.seed == 7
    assert ep.actions == [1.0, 1.0, 1.0] and ep.successes == [False, False, True]
    assert ep.success and ep.steps == 3 and ep.end == "success"
    assert ep.frames == [0.0, 1.0, 2.0, 3.0]  # before every step, and the last observation
    assert ep.obs["x"] == 3.0 and ep.wall_s >= 0


def test_runs_on_past_success_to_the_env_limit_or_max_steps():
    ep = run_episode(CountEnv(goal=3.0, max_steps=10), lambda obs: 1.0, seed=0, stop_on_success=False)
    assert ep.steps == 10 and ep.end == "truncated" and ep.successes == [False] * 2 + [True] * 8
    ep = run_episode(CountEnv(goal=99.0, max_steps=10), lambda obs: 1.0, seed=0, max_steps=4)
    assert ep.steps == 4 and ep.end == "max_steps" and not ep.success


class Recorder:
    def __init__(self, stop_at: int | None = None, none_at: int | None = None):
        self.stop_at, self.none_at = stop_at, none_at
        self.begun: list = []
        self.seen: list[Step] = []

    def begin(self, obs):
        self.begun.append(obs["t"])

    def act(self, obs):
        return None if obs["t"] == self.none_at else 0.5

    def observe(self, step: Step) -> bool:
        self.seen.append(step)
        return step.t == self.stop_at


def test_hooks_begin_observe_and_a_stop_before_stepping():
    env, actor = CountEnv(goal=99.0), Recorder(stop_at=2)
    ep = run_episode(env, actor, seed=1, record="t")
    assert actor.begun == [0] and ep.end == "stopped" and ep.steps == 3
    assert [s.t for s in actor.seen] == [0, 1, 2]
    s = actor.seen[1]
    assert s.obs["t"] == 1 and s.next_obs["t"] == 2 and s.action == 0.5 and not s.success and not s.truncated
    assert ep.frames == [0, 1, 2, 3]
    env, actor = CountEnv(goal=99.0), Recorder(none_at=2)
    ep = run_episode(env, actor, seed=1, record="t")
    assert ep.end == "actor" and ep.steps == 2 and env.received == [0.5, 0.5]  # the env never got a third
    assert ep.frames == [0, 1, 2]  # the observation acted on last is not repeated
    with pytest.raises(TypeError, match="expected an actor with act"):
        run_episode(env, object(), seed=0)


def test_start_continues_without_a_reset():
    env = CountEnv(goal=99.0, max_steps=10)
    obs, _ = env.reset(seed=3)
    for _ in range(4):
        obs, *_ = env.step(1.0)
    ep = run_episode(env, lambda o: 2.0, start=obs, max_steps=3, record=lambda o: o)
    assert env.resets == [3] and ep.seed is None
    assert ep.frames[0] is obs and [f["x"] for f in ep.frames] == [4.0, 6.0, 8.0, 10.0]


def test_period_paces_every_step_but_the_last():
    t0 = time.perf_counter()
    ep = run_episode(CountEnv(goal=99.0, max_steps=4), lambda o: 1.0, seed=0, period_s=0.03)
    elapsed = time.perf_counter() - t0
    assert ep.steps == 4 and elapsed >= 3 * 0.03
