"""Recovery behaviours of the runtime: what the controller does when the robot does not move as commanded.

``Recovery(RecoveryConfig(...), model)`` is given to :class:`~vlaforge.runtime.controller.Controller`; per
control step it

1. **checks the motion** (``deviation_threshold``): the state observed now against the state the forward
   model predicted from the last state and the action sent. Beyond the threshold the executor's chunk is
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

The forward model is linear: ``state[t+1] - state[t] = action[t] @ B + c``, fitted by least squares to a
dataset's consecutive frames (``ForwardModel.fit``) or given. For velocity-commanded arms such as Meta-World's
Sawyer it predicts the hand's motion to within a millimetre; its residual spread sets the default threshold
(``ForwardModel.threshold(k)``: k standard deviations of the prediction error's norm).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ForwardModel:
    """``delta_state = action @ B + c`` over the ``dims`` of the state it predicts (the others vary with
    things the actions do not command)."""

    B: np.ndarray  # (D, S') action -> state change, over dims
    c: np.ndarray  # (S',)
    dims: np.ndarray  # (S',) int: which state dimensions
    error_mean: float  # the fit's prediction error norm: mean and standard deviation
    error_std: float

    @classmethod
    def fit(cls, states: np.ndarray, actions: np.ndarray, episode_ends: np.ndarray,
            min_r2: float = 0.5) -> "ForwardModel":
        """Least squares over consecutive frames of each episode. ``states`` (N, S), ``actions`` (N, D),
        ``episode_ends`` (N,) one past the last frame of each frame's episode. The state dimensions whose
        change the actions explain with R^2 >= ``min_r2`` are kept (at least one, else a ValueError)."""
        states, actions = np.asarray(states, np.float64), np.asarray(actions, np.float64)
        if states.ndim != 2 or actions.ndim != 2 or len(states) != len(actions):
            raise ValueError(f"ForwardModel.fit: expected states (N, S) and actions (N, D), got "
                             f"{states.shape} and {actions.shape}")
        idx = np.flatnonzero(np.arange(len(states)) + 1 < np.asarray(episode_ends))  # t with a t + 1
        if len(idx) <= actions.shape[1] + 1:
            raise ValueError(f"ForwardModel.fit: expected more than {actions.shape[1] + 1} consecutive frame "
                             f"pairs, got {len(idx)}")
        x = np.hstack([actions[idx], np.ones((len(idx), 1))])  # (M, D + 1)
        y = states[idx + 1] - states[idx]  # (M, S)
        w, *_ = np.linalg.lstsq(x, y, rcond=None)  # (D + 1, S)
        resid = y - x @ w
        var = y.var(0)
        r2 = 1.0 - resid.var(0) / np.where(var > 0, var, np.inf)
        dims = np.flatnonzero(r2 >= min_r2)
        if len(dims) == 0:
            raise ValueError(f"ForwardModel.fit: the actions explain no state dimension (R^2 per dimension "
                             f"{np.round(r2, 3).tolist()}, need >= {min_r2})")
        err = np.linalg.norm(resid[:, dims], axis=1)
        return cls(B=w[:-1, dims], c=w[-1, dims], dims=dims, error_mean=float(err.mean()),
                   error_std=float(err.std()))

    @classmethod
    def from_dataset(cls, root: Any, min_r2: float = 0.5) -> "ForwardModel":
        """Fit to a recorded dataset (``vlaforge collect``'s layout)."""
        from vlaforge.data.reader import DatasetReader
        from vlaforge.types import ACTION, OBS_STATE

        reader = DatasetReader(root)
        cols = reader.columns([OBS_STATE, ACTION])
        ends = np.empty(reader.num_frames, dtype=np.int64)
        for ep in reader.episodes:
            ends[ep.start:ep.start + ep.length] = ep.start + ep.length
        return cls.fit(cols[OBS_STATE], cols[ACTION], ends, min_r2)

    def predict(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        """The next state's ``dims`` after ``action`` from ``state``."""
        return np.asarray(state, np.float64)[self.dims] + np.asarray(action, np.float64) @ self.B + self.c

    def action_towards(self, state: np.ndarray, target: np.ndarray, gain: float) -> np.ndarray:
        """The action that moves ``dims`` by ``gain`` of the way to ``target`` (least-norm inverse)."""
        want = gain * (np.asarray(target, np.float64) - np.asarray(state, np.float64)[self.dims]) - self.c
        return want @ np.linalg.pinv(self.B)

    def threshold(self, k: float = 8.0) -> float:
        """A deviation threshold: ``k`` standard deviations above the fit's mean error norm."""
        return self.error_mean + k * self.error_std


@dataclass(frozen=True)
class RecoveryConfig:
    deviation_threshold: float | None = None  # state units over the model's dims; None: no motion check
    max_retries: int = 2  # re-plans after a repeated deviation before the recovery behaviour
    retry_window: int = 10  # steps after a re-plan in which a new deviation counts as a retry
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
        for name in ("retry_window", "max_home_steps"):
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
        self._prev: tuple[np.ndarray, np.ndarray] | None = None  # (state, action sent) of the last step
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
        if cfg.deviation_threshold is None or self._prev is None or s is None or self.model is None:
            return "policy"
        prev_state, prev_action = self._prev
        err = float(np.linalg.norm(s[self.model.dims] - self.model.predict(prev_state, prev_action)))
        info["deviation"] = err
        if err <= cfg.deviation_threshold:
            return "policy"
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

    def home_action(self, state: Any) -> np.ndarray:
        assert self.home is not None and self.model is not None
        return self.model.action_towards(np.asarray(state, np.float64), self.home, self.config.home_gain)

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
        self._prev = None if state is None else (np.asarray(state, np.float64), a)
