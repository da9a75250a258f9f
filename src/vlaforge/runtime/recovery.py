"""Recovery behaviours of the runtime: what the controller does when the robot does not move as commanded.

``Recovery(RecoveryConfig(...), model)`` is given to :class:`~vlaforge.runtime.controller.Controller`; per
control step it

1. **checks the motion** (``deviation_threshold``): the state observed now against the state the forward
   model predicts, open loop, from the state ``window`` steps ago and the actions sent since (a push adds up
   over the window; the model's own error much less). Beyond the threshold the executor's chunk is
   dropped and the policy re-plans from this observation (``info["replanned"]``): a chunk planned before a
   push or a slip is not played to its end.
2. **retries a bounded number of times** (``max_retries``): a deviation seen again within
   ``retry_window`` steps of a re-plan is a retry; one more than ``max_retries`` starts the recovery
   behaviour;
3. **recovers** (status ``RECOVERING``): the robot moves to the configured ``home_state`` under the safety
   layer's limits, the action from the forward model's inverse (``home_gain`` of the remaining distance per
   step); at ``home_tolerance`` the policy takes over again with a fresh plan. Not home within
   ``max_home_steps``, or a recovery needed more than ``max_recoveries`` times in one episode: the
   controller **escalates** (holds and waits for a person, status ``ESCALATE``).
4. **smooths** (``smoothing`` in [0, 1)): every action the controller sends is
   ``(1 - smoothing) * new + smoothing * previous`` before the safety layer sees it.

The forward model is linear in the action and the last step's motion (``ForwardModel``), fitted by least
squares to consecutive frames: of a dataset with varied motion (``.from_dataset``) or of random actions in a
simulator (``.identify``, system identification). ``benchmarks/recovery.py`` reports its error on Meta-World.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ForwardModel:
    """``delta[t] = action[t] @ B + delta[t-1] @ A + c`` over the ``dims`` of the state it predicts, where
    ``delta[t] = state[t+1] - state[t]`` (the last step's motion carries the arm's lag behind its commands;
    the dims left out vary with things the actions do not command)."""

    B: np.ndarray  # (D, S') action -> state change, over dims
    A: np.ndarray  # (S', S') the previous step's change -> this one's
    c: np.ndarray  # (S',)
    dims: np.ndarray  # (S',) int: which state dimensions
    error_mean: float  # the fit's one-step prediction error norm: mean and standard deviation
    error_std: float

    @classmethod
    def fit(cls, states: np.ndarray, actions: np.ndarray, episode_ends: np.ndarray,
            min_r2: float = 0.5, dims: Any = None) -> "ForwardModel":
        """Least squares over consecutive frames of each episode. ``states`` (N, S), ``actions`` (N, D),
        ``episode_ends`` (N,) one past the last frame of each frame's episode. The state dimensions whose
        change the model explains with R^2 >= ``min_r2`` are kept (at least one, else a ValueError), among
        ``dims`` (default: all; e.g. the hand's position, leaving out a gripper whose motion saturates).

        The data must move the arm in varied ways: demonstrations of one motion leave the action and the
        last motion collinear and the fit arbitrary; ``identify`` records such data in a simulator."""
        states, actions = np.asarray(states, np.float64), np.asarray(actions, np.float64)
        if states.ndim != 2 or actions.ndim != 2 or len(states) != len(actions):
            raise ValueError(f"ForwardModel.fit: expected states (N, S) and actions (N, D), got "
                             f"{states.shape} and {actions.shape}")
        t = np.arange(len(states))
        ends = np.asarray(episode_ends)
        idx = np.flatnonzero(t + 1 < ends)  # frames with a next one in their episode
        first = np.r_[True, ends[:-1] == t[1:]]  # each episode's first frame: the one before ended there
        need = actions.shape[1] + states.shape[1] + 1
        if len(idx) <= need:
            raise ValueError(f"ForwardModel.fit: expected more than {need} consecutive frame pairs, got "
                             f"{len(idx)}")
        prev = np.where(first[idx, None], 0.0, states[idx] - states[np.maximum(idx - 1, 0)])  # (M, S)
        y = states[idx + 1] - states[idx]  # (M, S)

        def solve(cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            x = np.hstack([actions[idx], prev[:, cols], np.ones((len(idx), 1))])
            w, *_ = np.linalg.lstsq(x, y[:, cols], rcond=None)
            resid = y[:, cols] - x @ w
            var = y[:, cols].var(0)
            return w, resid, 1.0 - resid.var(0) / np.where(var > 0, var, np.inf)

        candidates = np.arange(states.shape[1]) if dims is None else np.asarray(dims, int)
        if candidates.size == 0 or candidates.min() < 0 or candidates.max() >= states.shape[1]:
            raise ValueError(f"ForwardModel.fit: dims: expected indices of the {states.shape[1]} state "
                             f"dimensions, got {candidates.tolist()}")
        _, _, r2 = solve(candidates)
        dims = candidates[r2 >= min_r2]
        if len(dims) == 0:
            raise ValueError(f"ForwardModel.fit: the actions explain no state dimension (R^2 per dimension "
                             f"{np.round(r2, 3).tolist()}, need >= {min_r2})")
        w, resid, _ = solve(dims)  # again, on the kept dimensions' own motion
        d, k = actions.shape[1], len(dims)
        err = np.linalg.norm(resid, axis=1)
        return cls(B=w[:d], A=w[d:d + k], c=w[-1], dims=dims, error_mean=float(err.mean()),
                   error_std=float(err.std()))

    @classmethod
    def from_dataset(cls, root: Any, min_r2: float = 0.5, dims: Any = None) -> "ForwardModel":
        """Fit to a recorded dataset (``vlaforge collect``'s layout)."""
        from vlaforge.data.reader import DatasetReader
        from vlaforge.types import ACTION, OBS_STATE

        reader = DatasetReader(root)
        cols = reader.columns([OBS_STATE, ACTION])
        return cls.fit(cols[OBS_STATE], cols[ACTION], _episode_ends(reader), min_r2, dims)

    @classmethod
    def identify(cls, env: Any, episodes: int = 3, steps: int = 100, seed: int = 10_000,
                 min_r2: float = 0.5, dims: Any = None) -> "ForwardModel":
        """System identification: ``episodes`` of uniformly random actions in the action box of ``env`` (a
        Gymnasium env with ``observation.state``), from seeds ``seed``..., then ``fit``."""
        from vlaforge.types import OBS_STATE

        rng = np.random.default_rng(seed)
        low, high = env.action_space.low, env.action_space.high
        states, actions, ends = [], [], []
        for e in range(episodes):
            obs, _ = env.reset(seed=seed + e)
            start = len(states)
            for _ in range(steps):
                a = rng.uniform(low, high).astype(np.float32)
                states.append(obs[OBS_STATE])
                actions.append(a)
                obs, _, terminated, truncated, _ = env.step(a)
                if terminated or truncated:
                    break
            ends += [len(states)] * (len(states) - start)
        return cls.fit(np.stack(states), np.stack(actions), np.asarray(ends), min_r2, dims)

    def step(self, s: np.ndarray, delta: np.ndarray, action: Any) -> tuple[np.ndarray, np.ndarray]:
        """One predicted step over ``dims``: (next state, its change)."""
        d = np.asarray(action, np.float64) @ self.B + delta @ self.A + self.c
        return s + d, d

    def predict(self, state: Any, actions: Any, prev_state: Any = None) -> np.ndarray:
        """The state's ``dims`` after playing ``actions`` ((K, D), or one (D,)) from ``state``, open loop
        (``prev_state``: the state one step before ``state``; None: the arm was at rest)."""
        s = np.asarray(state, np.float64)[self.dims]
        delta = np.zeros_like(s) if prev_state is None else s - np.asarray(prev_state, np.float64)[self.dims]
        for a in np.atleast_2d(np.asarray(actions, np.float64)):
            s, delta = self.step(s, delta, a)
        return s

    def action_towards(self, state: Any, target: Any, gain: float, prev_state: Any = None) -> np.ndarray:
        """The action that moves ``dims`` by ``gain`` of the way to ``target`` this step (least-norm
        inverse)."""
        s = np.asarray(state, np.float64)[self.dims]
        delta = np.zeros_like(s) if prev_state is None else s - np.asarray(prev_state, np.float64)[self.dims]
        want = gain * (np.asarray(target, np.float64) - s) - delta @ self.A - self.c
        return want @ np.linalg.pinv(self.B)


def _episode_ends(reader: Any) -> np.ndarray:
    ends = np.empty(reader.num_frames, dtype=np.int64)
    for ep in reader.episodes:
        ends[ep.start:ep.start + ep.length] = ep.start + ep.length
    return ends


@dataclass(frozen=True)
class RecoveryConfig:
    deviation_threshold: float | None = None  # state units over the model's dims; None: no motion check
    max_retries: int = 2  # re-plans after a repeated deviation before the recovery behaviour
    retry_window: int = 20  # steps after a re-plan in which a new deviation counts as a retry
    window: int = 8  # steps of open-loop prediction the observed state is checked against
    home_state: tuple[float, ...] | None = None  # over the model's dims; None: escalate instead of recovering
    home_gain: float = 0.5
    home_tolerance: float = 0.02
    max_home_steps: int = 150
    max_recoveries: int = 1  # per episode
    smoothing: float = 0.0  # weight of the previous action in [0, 1)

    def __post_init__(self) -> None:
        if self.deviation_threshold is not None and not self.deviation_threshold > 0:
            raise ValueError(f"RecoveryConfig.deviation_threshold: expected a positive number or None, got "
                             f"{self.deviation_threshold!r}")
        for name in ("max_retries", "max_recoveries"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"RecoveryConfig.{name}: expected an int >= 0, got {v!r}")
        for name in ("retry_window", "max_home_steps", "window"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"RecoveryConfig.{name}: expected a positive int, got {v!r}")
        if not 0 < self.home_gain <= 1 or not self.home_tolerance > 0:
            raise ValueError(f"RecoveryConfig: expected home_gain in (0, 1] and home_tolerance > 0, got "
                             f"{self.home_gain!r} and {self.home_tolerance!r}")
        if not 0 <= self.smoothing < 1:
            raise ValueError(f"RecoveryConfig.smoothing: expected a value in [0, 1), got {self.smoothing!r}")


class Recovery:
    """The per-episode state of the recovery behaviours; the controller calls ``check`` before and
    ``sent`` after each step, ``reset`` per episode."""

    def __init__(self, config: RecoveryConfig, model: ForwardModel | None = None):
        if config.deviation_threshold is not None and model is None:
            raise ValueError("Recovery: a deviation_threshold needs a ForwardModel (ForwardModel.fit or "
                             ".from_dataset)")
        if config.home_state is not None:
            if model is None:
                raise ValueError("Recovery: a home_state needs a ForwardModel to move there")
            if len(config.home_state) != len(model.dims):
                raise ValueError(f"RecoveryConfig.home_state: expected {len(model.dims)} values (state "
                                 f"dimensions {model.dims.tolist()}), got {len(config.home_state)}")
        self.config, self.model = config, model
        self.home = None if config.home_state is None else np.asarray(config.home_state, np.float64)
        self.totals = {"replans": 0, "retries": 0, "recoveries": 0, "recovered": 0, "escalations": 0}
        self.reset()

    def reset(self) -> None:
        self._history: list[tuple[np.ndarray, np.ndarray]] = []  # (state, action sent), the last `window`
        self._before: np.ndarray | None = None  # the state one step before the history's first
        self._last_action: np.ndarray | None = None
        self.retries = 0
        self.recoveries = 0
        self.homing = False
        self._home_steps = 0
        self._since_replan: int | None = None

    # -- before the step --------------------------------------------------------------------------------
    def check(self, state: Any, info: dict[str, Any]) -> str:
        """What this step must do: ``"policy"``, ``"replan"`` (drop the chunk, then the policy),
        ``"home"`` (the recovery move) or ``"escalate"``."""
        cfg = self.config
        s = None if state is None else np.asarray(state, np.float64)
        if self._since_replan is not None:
            self._since_replan += 1
            if self._since_replan > cfg.retry_window:
                self._since_replan, self.retries = None, 0  # the re-plan held: the count starts over
        if self.homing:
            return self._homing_step(s, info)
        if cfg.deviation_threshold is None or not self._history or s is None or self.model is None:
            return "policy"
        start = self._history[0][0]
        predicted = self.model.predict(start, np.stack([a for _, a in self._history]), self._before)
        err = float(np.linalg.norm(s[self.model.dims] - predicted))
        info["deviation"] = err
        if err <= cfg.deviation_threshold:
            return "policy"
        self._before, self._history = self._history[-1][0], []  # the window starts again from here
        if self._since_replan is not None:
            self.retries += 1
            self.totals["retries"] += 1
            info["retry"] = self.retries
        self._since_replan = 0
        if self.retries > cfg.max_retries:
            self.retries, self._since_replan = 0, None
            if self.home is None or self.recoveries >= cfg.max_recoveries:
                return self._escalate(info, "deviation persists" if self.home is None else
                                      f"needed more than {cfg.max_recoveries} recoveries")
            self.homing, self._home_steps = True, 0
            self.recoveries += 1
            self.totals["recoveries"] += 1
            return self._homing_step(s, info)
        self.totals["replans"] += 1
        return "replan"

    def _homing_step(self, state: np.ndarray | None, info: dict[str, Any]) -> str:
        assert self.home is not None and self.model is not None
        self._home_steps += 1
        dist = None if state is None else float(np.linalg.norm(state[self.model.dims] - self.home))
        info["home_distance"] = dist
        if dist is not None and dist <= self.config.home_tolerance:
            self.homing = False
            if self._history:  # the motion check starts afresh from home
                self._before, self._history = self._history[-1][0], []
            self.totals["recovered"] += 1
            info["recovered_after_steps"] = self._home_steps - 1
            return "replan"  # home: the policy plans afresh from here
        if self._home_steps > self.config.max_home_steps:
            self.homing = False
            return self._escalate(info, f"not home within {self.config.max_home_steps} steps")
        return "home"

    def _escalate(self, info: dict[str, Any], why: str) -> str:
        self.totals["escalations"] += 1
        info["escalation_reason"] = why
        return "escalate"

    def set_home(self, home: Any) -> None:
        """Where the recovery move goes from now on (e.g. the state an episode started in)."""
        assert self.model is not None, "set_home needs a ForwardModel"
        h = np.asarray(home, np.float64)
        if h.shape != (len(self.model.dims),):
            raise ValueError(f"home: expected {len(self.model.dims)} values (state dimensions "
                             f"{self.model.dims.tolist()}), got shape {h.shape}")
        self.home = h

    def home_action(self, state: Any) -> np.ndarray:
        assert self.home is not None and self.model is not None
        prev = self._history[-1][0] if self._history else self._before
        return self.model.action_towards(state, self.home, self.config.home_gain, prev)

    # -- the action ---------------------------------------------------------------------------------------
    def smooth(self, action: np.ndarray) -> np.ndarray:
        """Exponential smoothing of the commanded actions (a no-op at ``smoothing == 0``)."""
        a = np.asarray(action, np.float32)
        s = self.config.smoothing
        if s > 0 and self._last_action is not None and np.isfinite(a).all():
            a = ((1.0 - s) * a + s * self._last_action).astype(np.float32)
        return a

    def sent(self, state: Any, action: np.ndarray) -> None:
        """After the step: the state it started from and the action that went to the robot."""
        a = np.asarray(action, np.float64)
        self._last_action = a.astype(np.float32)
        if state is None:
            self._history, self._before = [], None
            return
        self._history.append((np.asarray(state, np.float64), a))
        if len(self._history) > self.config.window:
            self._before = self._history.pop(0)[0]
