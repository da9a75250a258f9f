"""The one episode loop: reset for a seed, then observe -> act -> step until the episode ends.

    episode = run_episode(env, actor, seed=1000, max_steps=300, stop_on_success=True,
                          record="observation.images.corner")
    episode.actions, episode.successes, episode.frames, episode.success, episode.wall_s

Every caller plays its own actor through it: evaluation a ``ChunkExecutor`` (which is an actor as it is),
deploy-sim the runtime ``Controller`` with its bookkeeping, collection the scripted expert that records
demonstration frames, deploy-sim's corrections the expert rolled forward on a snapshot.

An actor is anything with ``act(obs) -> action`` or a plain callable ``obs -> action``. ``act`` returning
``None`` ends the episode before stepping (an emergency stop). Two optional hooks:
``begin(obs)`` after the reset, before the first step (warm-up); ``observe(step) -> bool`` after each env
step, with the :class:`Step`; a true answer ends the episode after that step.

The episode ends, in this order of checks after a step: on success when ``stop_on_success``
(``info["is_success"]``), when the env terminates or truncates, when ``observe`` says so; and after
``max_steps`` steps (None: the env's own ``max_steps`` when it has one, else only when the env ends it).
Needs only a Gymnasium-style env (``reset(seed=)``, ``step``): numpy and the standard library.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Union

import numpy as np


class Actor(Protocol):
    """What the loop plays: ``act(obs) -> action (D,)``, or None to stop; ``begin``, ``observe`` optional."""

    def act(self, obs: Mapping[str, Any]) -> np.ndarray | None: ...


ActorLike = Union[Actor, Callable[[Mapping[str, Any]], Any]]


@dataclass(frozen=True)
class Step:
    """One env step, as ``observe`` sees it."""

    t: int  # 0-based index of the step in this episode
    obs: Mapping[str, Any]  # the observation the action was chosen from
    action: Any  # what env.step received
    next_obs: Mapping[str, Any]
    reward: float
    success: bool  # info["is_success"] after the step (False when the env does not say)
    terminated: bool
    truncated: bool
    info: Mapping[str, Any]


@dataclass
class Episode:
    """What the loop collected. ``frames`` (with ``record``): the recorded view of the observation before
    every step and of the last observation (when the episode did not end before stepping)."""

    seed: int | None
    actions: list = field(default_factory=list)  # per step, as sent to env.step
    successes: list[bool] = field(default_factory=list)  # per step: info["is_success"]
    frames: list = field(default_factory=list)
    obs: Mapping[str, Any] | None = None  # the last observation
    # success | terminated | truncated | stopped (observe said so) | actor (act gave None) | max_steps
    end: str = "max_steps"
    wall_s: float = 0.0  # the loop, from after the reset (and begin) to its end

    @property
    def steps(self) -> int:
        return len(self.actions)

    @property
    def success(self) -> bool:
        """The success test held at some step."""
        return any(self.successes)


def run_episode(env: Any, actor: ActorLike, seed: int | None = None, *,
                start: Mapping[str, Any] | None = None, max_steps: int | None = None,
                stop_on_success: bool = True, record: str | Callable[[Mapping[str, Any]], Any] | None = None,
                period_s: float | None = None) -> Episode:
    """Play ``actor`` in ``env`` for one episode (see the module docstring).

    ``seed``: ``env.reset(seed=seed)`` first; ``start``: no reset, continue from the env's current state,
    whose observation is ``start``. ``record``: an observation key (e.g. a camera) or a function of the
    observation, kept in ``Episode.frames``. ``period_s``: pace to real time, each step lasting at least this
    long (the loop sleeps after a step unless the episode ends there)."""
    act = getattr(actor, "act", None) or actor
    if not callable(act):
        raise TypeError(f"run_episode: expected an actor with act(obs) or a callable, "
                        f"got {type(actor).__name__}")
    begin, observe = getattr(actor, "begin", None), getattr(actor, "observe", None)
    pick = (lambda o: o[record]) if isinstance(record, str) else record
    if start is None:
        obs, _ = env.reset(seed=seed)
    else:
        obs = start
    if begin is not None:
        begin(obs)
    limit = max_steps if max_steps is not None else getattr(env, "max_steps", None)
    ep = Episode(seed=seed)
    stepped = True  # the current observation came from a step (or the reset), not yet acted on
    t0 = time.perf_counter()
    t = 0
    while limit is None or t < limit:
        t_step = time.perf_counter()
        if pick is not None:
            ep.frames.append(pick(obs))
        action = act(obs)
        if action is None:
            ep.end, stepped = "actor", False
            break
        next_obs, reward, terminated, truncated, info = env.step(action)
        success = bool(info.get("is_success", False))
        ep.actions.append(action)
        ep.successes.append(success)
        stop = False
        if observe is not None:
            stop = bool(observe(Step(t, obs, action, next_obs, float(reward), success, bool(terminated),
                                     bool(truncated), info)))
        obs, t = next_obs, t + 1
        if success and stop_on_success:
            ep.end = "success"
            break
        if terminated or truncated:
            ep.end = "terminated" if terminated else "truncated"
            break
        if stop:
            ep.end = "stopped"
            break
        if period_s is not None:
            time.sleep(max(0.0, period_s - (time.perf_counter() - t_step)))
    ep.wall_s = time.perf_counter() - t0
    if pick is not None and stepped and ep.frames:
        ep.frames.append(pick(obs))
    ep.obs = obs
    return ep
