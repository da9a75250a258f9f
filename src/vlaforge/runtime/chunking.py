"""Chunk execution: turn a policy that predicts (H, D) action chunks into one action per control step.

``ChunkExecutor(policy, strategy=...)``, then ``executor.act(obs) -> np.float32 (D,)`` once per step;
``executor.wait_idle(timeout)`` blocks until no inference is in flight (before changing the policy's weights).

Strategies
----------
``recycle``   predict a chunk, play ``recompute_every`` of its actions, predict again (synchronous).
``ensemble``  predict a chunk every step; the action for step t is the weighted average of every
              prediction made for step t (at most H of them), ACT's temporal ensembling:
              ``w_i = exp(-ensemble_decay * i)`` with ``i = 0`` the OLDEST prediction, so with a
              positive decay the oldest prediction gets the biggest weight (as in ACT); 0 gives a
              plain mean, a negative decay favours the newest one.
``async``     inference runs in a background thread while the current chunk keeps playing. A new
              request is sent (with the current observation) once ``recompute_every`` actions of the
              current chunk were played and no request is in flight. A chunk whose observation was
              taken at step s and that arrives at step t starts playing at its index t - s, so the
              actions stay aligned with time. ``act`` never waits for the model, except for the
              very first chunk (after construction or ``reset``).

Staleness: a chunk is stale when more than ``max_chunk_age_steps`` steps (default H - 1: up to its
last action) or more than ``max_chunk_age_s`` seconds (default: no limit) passed since its observation was
taken (the time ``act`` was called with it). A stale chunk is never executed: ``recycle`` predicts
afresh, ``ensemble`` leaves stale predictions out of the average, ``async`` drops a stale arrival;
when nothing fresh is left to play ``act`` raises :class:`StaleChunkError` (the controller then
holds the robot) and the next call tries again.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

STRATEGIES = ("recycle", "ensemble", "async")


class StaleChunkError(RuntimeError):
    """No fresh action to play this step; hold the robot and call ``act`` again next step."""


@dataclass(frozen=True)
class ExecInfo:
    """About the action the last ``act`` returned (or tried to)."""

    step: int  # control step index (0 = first step after reset)
    age_steps: int  # steps since the observation behind the (newest) chunk used
    age_s: float  # seconds since that observation
    policy_called: bool  # a policy call was started or made this step
    n_averaged: int  # predictions averaged (ensemble), else 1; 0 when stale


@dataclass(frozen=True)
class _Chunk:
    actions: np.ndarray  # (H, D) float32
    origin_step: int  # the step whose observation produced it
    origin_time: float  # clock() when that observation was handed to act()


def _chunk_size(policy: Any) -> int | None:
    cfg = getattr(policy, "config", None)
    h = getattr(cfg, "chunk_size", None)
    return None if h is None else int(h)


class _Worker:
    """One background thread that runs one policy call at a time (async strategy).

    It holds no reference to the executor, so an executor that is dropped without ``close()``
    is still collected and its worker stopped.
    """

    def __init__(self, call: Callable[[Any], np.ndarray]):
        self._call = call
        self.cond = threading.Condition()
        self.request: tuple[int, Any, int, float] | None = None  # (generation, obs, step, time)
        self.running = False
        self.result: tuple[int, np.ndarray | None, BaseException | None, int, float, float] | None = None
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="vlaforge-chunk-inference", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            with self.cond:
                while self.request is None and not self.closed:
                    self.cond.wait()
                if self.closed:
                    return
                gen, obs, step, t_obs = self.request
                self.request, self.running = None, True
            t0 = time.perf_counter()
            chunk, err = None, None
            try:
                chunk = self._call(obs)
            except BaseException as e:  # handed to the control thread, never swallowed
                err = e
            with self.cond:
                self.running = False
                self.result = (gen, chunk, err, step, t_obs, time.perf_counter() - t0)
                self.cond.notify_all()

    def busy(self) -> bool:
        return self.request is not None or self.running

    def close(self, timeout: float = 5.0) -> None:
        with self.cond:
            self.closed = True
            self.request = None
            self.cond.notify_all()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)


class _Calls:
    """The policy call with its checks and counters; shared by the control and inference threads."""

    def __init__(self, policy: Any, horizon: int | None, recompute_every: int):
        self.policy = policy
        self.horizon = horizon
        self.recompute_every = recompute_every
        self.action_dim: int | None = None
        self.lock = threading.Lock()
        self.count = 0
        self.durations: list[float] = []

    def __call__(self, obs: Any) -> np.ndarray:
        t0 = time.perf_counter()
        chunk = np.asarray(self.policy.predict_chunk(obs))
        dt = time.perf_counter() - t0
        if chunk.ndim != 2 or chunk.shape[0] == 0 or chunk.dtype.kind != "f":
            raise ValueError(f"policy.predict_chunk: expected a float array (H, D), got dtype {chunk.dtype} "
                             f"shape {chunk.shape}")
        with self.lock:
            self.count += 1
            self.durations.append(dt)
            if self.horizon is None:
                if self.recompute_every > chunk.shape[0]:
                    raise ValueError(f"ChunkExecutor.recompute_every: expected at most the chunk length "
                                     f"{chunk.shape[0]}, got {self.recompute_every}")
                self.horizon = chunk.shape[0]
            if self.action_dim is None:
                self.action_dim = chunk.shape[1]
        if chunk.shape != (self.horizon, self.action_dim):
            raise ValueError(f"policy.predict_chunk: expected shape ({self.horizon}, {self.action_dim}), "
                             f"got {chunk.shape}")
        return chunk.astype(np.float32, copy=False)


class ChunkExecutor:
    """Plays a chunking policy one action per control step. See the module docstring.

    Counters: ``steps`` (since reset), ``policy_calls``, ``stale_dropped`` (chunks or predictions
    discarded as stale), ``stale_steps`` (act calls that raised StaleChunkError). ``last`` is the
    :class:`ExecInfo` of the latest act. Use ``close()`` (or a ``with`` block) to stop the async thread.
    """

    def __init__(self, policy: Any, strategy: str = "recycle", recompute_every: int = 4,
                 ensemble_decay: float = 0.01, max_chunk_age_steps: int | None = None,
                 max_chunk_age_s: float | None = None, clock: Callable[[], float] = time.monotonic):
        if not callable(getattr(policy, "predict_chunk", None)):
            raise TypeError("ChunkExecutor: expected a policy with predict_chunk(obs), got "
                            f"{type(policy).__name__}")
        if strategy not in STRATEGIES:
            raise ValueError(f"ChunkExecutor.strategy: expected one of {STRATEGIES}, got {strategy!r}")
        horizon = _chunk_size(policy)  # H; learnt from the first chunk when the policy has no config
        if isinstance(recompute_every, bool) or not isinstance(recompute_every, int) or recompute_every < 1:
            raise ValueError(f"ChunkExecutor.recompute_every: expected a positive int, "
                             f"got {recompute_every!r}")
        if strategy == "ensemble":  # predicts every step; recompute_every does not apply
            recompute_every = 1
        if horizon is not None and recompute_every > horizon:
            raise ValueError(f"ChunkExecutor.recompute_every: expected at most chunk_size={horizon}, "
                             f"got {recompute_every}")
        if not np.isfinite(ensemble_decay):
            raise ValueError(f"ChunkExecutor.ensemble_decay: expected a finite float, got {ensemble_decay!r}")
        max_age = max_chunk_age_steps
        if max_age is not None and (not isinstance(max_age, int) or max_age < 0):
            raise ValueError(f"ChunkExecutor.max_chunk_age_steps: expected a non-negative int or None, "
                             f"got {max_chunk_age_steps!r}")
        if max_chunk_age_s is not None and not max_chunk_age_s > 0:
            raise ValueError(f"ChunkExecutor.max_chunk_age_s: expected a positive number of seconds or None, "
                             f"got {max_chunk_age_s!r}")
        self.policy = policy
        self.strategy = strategy
        self.recompute_every = recompute_every
        self.ensemble_decay = float(ensemble_decay)
        self.max_chunk_age_steps = max_chunk_age_steps
        self.max_chunk_age_s = max_chunk_age_s
        self.clock = clock
        self._calls = _Calls(policy, horizon, recompute_every)
        self._worker: _Worker | None = None
        self._finalizer: weakref.finalize | None = None
        self._closed = False
        self._generation = 0
        self.stale_dropped = 0
        self.stale_steps = 0
        self.last: ExecInfo | None = None
        self.reset()

    @property
    def horizon(self) -> int | None:
        """H, the chunk length (None until known)."""
        return self._calls.horizon

    @property
    def policy_calls(self) -> int:
        return self._calls.count

    # -- lifecycle ----------------------------------------------------------------------------------
    @property
    def planned(self) -> np.ndarray | None:
        """The current chunk's actions from the last step played on ((K, D), a copy), for display; None
        without one (before the first step, after ``reset``; ``ensemble`` keeps no single current chunk)."""
        cur = getattr(self, "_current", None)
        if cur is None or self.last is None:
            return None
        return cur.actions[max(0, self.last.step - cur.origin_step):].copy()

    def reset(self) -> None:
        """Start a new episode: forget chunks and discard any inference in flight (counters stay)."""
        self.steps = 0  # control steps since reset
        self._current: _Chunk | None = None
        self._waited_first = False
        self._ensemble: deque[_Chunk] = deque()
        self._generation += 1
        if self._worker is not None:
            with self._worker.cond:
                self._worker.request = None
                self._worker.result = None

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no policy call is in flight (``async``: the background inference finished), e.g.
        before the policy's weights change. True when idle, False when ``timeout`` seconds passed first.
        The synchronous strategies are always idle."""
        w = self._worker
        if w is None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with w.cond:
            while w.busy() and not w.closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                w.cond.wait(0.05 if left is None else min(0.05, left))
        return True

    def close(self) -> None:
        """Stop the background thread (async); the executor cannot act afterwards."""
        if self._finalizer is not None:
            self._finalizer()
        self._closed = True

    def __enter__(self) -> "ChunkExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def pop_inference_times(self) -> list[float]:
        """Durations (s) of the policy calls finished since the last pop (for the monitor)."""
        with self._calls.lock:
            out, self._calls.durations = self._calls.durations, []
        return out

    def _max_age_steps(self) -> int:
        h = self.horizon if self.horizon is not None else 1
        return h - 1 if self.max_chunk_age_steps is None else min(self.max_chunk_age_steps, h - 1)

    def _fresh(self, chunk: _Chunk, step: int, now: float) -> bool:
        if step - chunk.origin_step > self._max_age_steps():
            return False
        return self.max_chunk_age_s is None or now - chunk.origin_time <= self.max_chunk_age_s

    # -- one control step ---------------------------------------------------------------------------
    def act(self, obs: Any) -> np.ndarray:
        """The action (float32 (D,)) for this control step; raises StaleChunkError when none is fresh."""
        if self._closed:
            raise RuntimeError("ChunkExecutor: act() after close()")
        t = self.steps
        now = self.clock()
        try:
            if self.strategy == "recycle":
                return self._act_recycle(obs, t, now)
            if self.strategy == "ensemble":
                return self._act_ensemble(obs, t, now)
            return self._act_async(obs, t, now)
        finally:
            self.steps = t + 1

    def _stale(self, t: int, now: float, called: bool, chunk: _Chunk | None) -> StaleChunkError:
        self.stale_steps += 1
        age_steps = -1 if chunk is None else t - chunk.origin_step
        age_s = float("nan") if chunk is None else now - chunk.origin_time
        self.last = ExecInfo(t, age_steps, age_s, called, 0)
        return StaleChunkError(f"step {t}: no fresh action (newest chunk: {age_steps} steps, "
                               f"{age_s:.3f} s old; "
                               f"limits: {self._max_age_steps()} steps, {self.max_chunk_age_s} s)")

    def _play(self, chunk: _Chunk, t: int, called: bool) -> np.ndarray:
        self.last = ExecInfo(t, t - chunk.origin_step, self.clock() - chunk.origin_time, called, 1)
        return chunk.actions[t - chunk.origin_step].copy()

    def _act_recycle(self, obs: Any, t: int, now: float) -> np.ndarray:
        cur = self._current
        if cur is None or t - cur.origin_step >= self.recompute_every or not self._fresh(cur, t, now):
            cur = self._current = _Chunk(self._calls(obs), t, now)
            if not self._fresh(cur, t, self.clock()):  # the inference itself took longer than the max age
                self._current = None
                self.stale_dropped += 1
                raise self._stale(t, self.clock(), True, cur)
            return self._play(cur, t, True)
        return self._play(cur, t, False)

    def _act_ensemble(self, obs: Any, t: int, now: float) -> np.ndarray:
        newest = _Chunk(self._calls(obs), t, now)
        self._ensemble.append(newest)  # oldest first
        now = self.clock()
        kept = deque(c for c in self._ensemble if self._fresh(c, t, now))  # stale ones never come back
        self.stale_dropped += sum(1 for c in self._ensemble if t - c.origin_step < self.horizon
                                  and not self._fresh(c, t, now))
        self._ensemble = kept
        if not kept:
            raise self._stale(t, now, True, newest)
        preds = np.stack([c.actions[t - c.origin_step] for c in kept]).astype(np.float64)  # (n, D)
        w = self.ensemble_weights(len(kept))  # (n,) oldest first
        self.last = ExecInfo(t, 0, now - newest.origin_time, True, len(kept))
        return (w @ preds).astype(np.float32)

    def ensemble_weights(self, n: int) -> np.ndarray:
        """Normalized weights for n predictions of one step, oldest first: exp(-decay * i) / sum."""
        w = np.exp(-self.ensemble_decay * np.arange(n, dtype=np.float64))
        return w / w.sum()

    def _ensure_worker(self) -> _Worker:
        if self._worker is None:
            self._worker = _Worker(self._calls)
            self._finalizer = weakref.finalize(self, self._worker.close)
        return self._worker

    def _act_async(self, obs: Any, t: int, now: float) -> np.ndarray:
        w = self._ensure_worker()
        called = False
        with w.cond:
            if not self._waited_first:  # the very first chunk after reset: wait for it
                self._waited_first = True
                w.request = (self._generation, obs, t, now)
                w.cond.notify_all()
                called = True
                while not (w.result is not None and w.result[0] == self._generation):
                    if w.closed or not w.thread.is_alive():
                        raise RuntimeError("ChunkExecutor: inference thread is not running")
                    w.cond.wait(0.5)
            result, w.result = w.result, None
        now = self.clock()
        if result is not None and result[0] == self._generation:
            _, actions, err, step, t_obs, _dur = result
            if err is not None:
                raise RuntimeError(f"policy.predict_chunk failed in the inference thread: {err!r}") from err
            new = _Chunk(actions, step, t_obs)
            if self._fresh(new, t, now):
                self._current = new
            else:
                self.stale_dropped += 1
        cur = self._current
        with w.cond:
            due = cur is None or t - cur.origin_step >= self.recompute_every or not self._fresh(cur, t, now)
            if due and not w.busy():
                w.request = (self._generation, obs, t, now)
                w.cond.notify_all()
                called = True
        if cur is None or not self._fresh(cur, t, now):
            raise self._stale(t, now, called, cur)
        return self._play(cur, t, called)
