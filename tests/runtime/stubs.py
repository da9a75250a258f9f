"""Small policy-like objects for the runtime tests (predict_chunk + config.chunk_size + stats)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np


def obs_at(step: int, episode: int = 0, state_dim: int = 2) -> dict:
    """A frame dict whose state carries the step it was taken at (the stubs read it back)."""
    state = np.zeros(state_dim, np.float32)
    state[0] = step
    if state_dim > 1:
        state[1] = episode
    return {"observation.images.corner": np.zeros((8, 8, 3), np.uint8), "observation.state": state,
            "task": "reach the goal", "embodiment": "sawyer"}


class CountingPolicy:
    """chunk[k] = [origin + k, origin, call index, episode]: origin is the step of the observation.

    An executor that aligns chunks correctly therefore returns action[0] == the current step.
    ``delays`` (seconds, per call, the last one repeats) simulate slow inference.
    """

    def __init__(self, chunk_size: int = 8, delays=(0.0,), fail_on_call: int | None = None):
        self.config = SimpleNamespace(chunk_size=chunk_size)
        self.delays = list(delays)
        self.fail_on_call = fail_on_call
        self.calls = 0
        self.obs_steps: list[int] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def predict_chunk(self, obs) -> np.ndarray:
        with self._lock:
            call = self.calls
            self.calls += 1
        self.threads.add(threading.current_thread().name)
        origin = int(obs["observation.state"][0])
        self.obs_steps.append(origin)
        if self.fail_on_call is not None and call == self.fail_on_call:
            raise RuntimeError("injected inference failure")
        delay = self.delays[min(call, len(self.delays) - 1)]
        if delay:
            time.sleep(delay)
        h = self.config.chunk_size
        chunk = np.zeros((h, 4), np.float32)  # (H, D)
        chunk[:, 0] = origin + np.arange(h)
        chunk[:, 1] = origin
        chunk[:, 2] = call
        chunk[:, 3] = obs["observation.state"][1]
        return chunk


class ConstantPolicy:
    """Always the same chunk (H, D); ``values`` may be swapped between steps (fault injection)."""

    def __init__(self, action, chunk_size: int = 4, delay: float = 0.0):
        self.config = SimpleNamespace(chunk_size=chunk_size)
        self.action = np.asarray(action, np.float32)
        self.delay = delay
        self.calls = 0

    def predict_chunk(self, obs) -> np.ndarray:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return np.tile(self.action, (self.config.chunk_size, 1))


def stats_for(state_dim: int, action_dim: int, embodiment: str = "sawyer") -> dict:
    """policy.stats shape: {emb: {key: {mean, std, min, max, q01, q99}}} as float32 arrays."""

    def s(n):
        return {"mean": np.zeros(n, np.float32), "std": np.ones(n, np.float32),
                "min": -np.ones(n, np.float32), "max": np.ones(n, np.float32),
                "q01": -np.ones(n, np.float32), "q99": np.ones(n, np.float32)}

    return {embodiment: {"observation.state": s(state_dim), "action": s(action_dim)}}
