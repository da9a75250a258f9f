"""Deployment monitor: success rate, latency against a budget, distribution shift against training.

``Monitor(policy.stats, "sawyer", latency_budget_s=0.05)``; feed it with ``record_step``,
``record_inference`` and ``record_outcome``; read ``report()`` (a JSON-serializable dict) or
``plot(path)`` (a PNG).

Distribution shift, per key (``action`` and ``observation.state``): every recorded vector becomes a
z-score per dimension against the training statistics, ``z = (x - mean) / std``. Over the last
``window`` steps the monitor computes

* ``mean_z``: the windowed mean of z per dimension (a bias, in training standard deviations);
* ``rms_z``: the root mean square of z over the window and the dimensions, i.e. the diagonal
  Mahalanobis distance divided by sqrt(D), averaged over the window (about 1 in distribution;
  catches a spread that grows without a bias).

``score = max(max_d |mean_z_d|, rms_z)``; the key's alarm is on when the score exceeds
``shift_threshold`` and at least ``min_samples`` steps are in the window. Standard deviations below
``min_std`` are raised to it (a dimension that never moved in training must not divide by zero).

Latency: per step (the caller's wall time of one control step) and per inference (one policy
call), p50 and p99 over the last ``window`` samples; the step alarm is on when p99 exceeds
``latency_budget_s``, the inference alarm when p99 exceeds ``inference_budget_s`` (if given; with
asynchronous execution an inference may legitimately take several steps).
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from typing import Any, Mapping

import numpy as np

from vlaforge.fsutil import save_figure_atomic
from vlaforge.types import ACTION, OBS_STATE

SHIFT_KEYS = (ACTION, OBS_STATE)


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _percentiles(values: deque) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "mean": None, "max": None}
    arr = np.fromiter(values, dtype=np.float64)
    p50, p99 = np.percentile(arr, [50, 99])
    return {"n": int(arr.size), "p50": float(p50), "p99": float(p99), "mean": float(arr.mean()),
            "max": float(arr.max())}


class _Shift:
    """Windowed z-scores of one key against its training mean/std."""

    def __init__(self, key: str, stats: Mapping[str, Any], window: int, min_std: float):
        for name in ("mean", "std"):
            if name not in stats:
                raise KeyError(f"{key} statistics: expected 'mean' and 'std', got {sorted(stats)}")
        self.key = key
        self.mean = np.asarray(stats["mean"], dtype=np.float64)  # (P,)
        self.std = np.maximum(np.asarray(stats["std"], dtype=np.float64), min_std)  # (P,)
        if self.mean.ndim != 1 or self.mean.shape != self.std.shape:
            raise ValueError(f"{key} statistics: expected mean and std of equal shape (P,), got "
                             f"{self.mean.shape} and {self.std.shape}")
        self.z: deque[np.ndarray] = deque(maxlen=window)  # each (P,)
        self.non_finite = 0

    def add(self, x: Any) -> None:
        arr = np.asarray(x, dtype=np.float64)
        if arr.shape != self.mean.shape:
            raise ValueError(f"{self.key}: expected shape {self.mean.shape}, got {arr.shape}")
        if not np.isfinite(arr).all():  # counted, never averaged into the scores
            self.non_finite += 1
            return
        self.z.append((arr - self.mean) / self.std)

    def summary(self, threshold: float, min_samples: int) -> dict[str, Any]:
        n = len(self.z)
        if n == 0:
            return {"n": 0, "mean_z": None, "max_abs_mean_z": None, "rms_z": None, "score": None,
                    "alarm": False, "non_finite": self.non_finite}
        z = np.stack(self.z)  # (n, P)
        mean_z = z.mean(axis=0)
        rms = float(np.sqrt((z * z).mean()))
        score = max(float(np.abs(mean_z).max()), rms)
        return {"n": n, "mean_z": [float(v) for v in mean_z], "max_abs_mean_z": float(np.abs(mean_z).max()),
                "rms_z": rms, "score": score, "alarm": bool(n >= min_samples and score > threshold),
                "non_finite": self.non_finite}


class Monitor:
    """Rolling health of a deployed policy. Thread-safe (one lock)."""

    def __init__(self, stats: Mapping[str, Any], embodiment: str, latency_budget_s: float, window: int = 100,
                 shift_threshold: float = 2.0, outcome_window: int = 20,
                 inference_budget_s: float | None = None,
                 min_samples: int | None = None, min_std: float = 1e-3, history: int = 10_000):
        if embodiment not in stats:
            raise KeyError(f"Monitor: embodiment {embodiment!r} not in the statistics; have {sorted(stats)}")
        emb_stats = stats[embodiment]
        missing = [k for k in SHIFT_KEYS if k not in emb_stats]
        if missing:
            raise KeyError(f"Monitor: statistics of {embodiment!r} lack {missing}; have {sorted(emb_stats)}")
        for name, value in (("latency_budget_s", latency_budget_s), ("shift_threshold", shift_threshold),
                            ("min_std", min_std)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"Monitor.{name}: expected a positive number, got {value!r}")
        if inference_budget_s is not None and not inference_budget_s > 0:
            raise ValueError(f"Monitor.inference_budget_s: expected a positive number or None, "
                             f"got {inference_budget_s!r}")
        for name, value in (("window", window), ("outcome_window", outcome_window), ("history", history)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Monitor.{name}: expected a positive int, got {value!r}")
        self.embodiment = embodiment
        self.latency_budget_s = float(latency_budget_s)
        self.inference_budget_s = None if inference_budget_s is None else float(inference_budget_s)
        self.window = window
        self.shift_threshold = float(shift_threshold)
        self.outcome_window = outcome_window
        self.min_samples = min(window, 10) if min_samples is None else int(min_samples)
        self._lock = threading.Lock()
        self._history_len = history
        self._shift = {k: _Shift(k, emb_stats[k], window, min_std) for k in SHIFT_KEYS}
        self.reset()

    def reset(self) -> None:
        """Forget everything recorded (statistics and limits stay)."""
        with self._lock:
            for s in self._shift.values():
                s.z.clear()
                s.non_finite = 0
            self._step_lat: deque[float] = deque(maxlen=self.window)
            self._inf_lat: deque[float] = deque(maxlen=self.window)
            self._outcomes: deque[bool] = deque(maxlen=self.outcome_window)
            self.steps = 0
            self.episodes = 0
            self.successes = 0
            h = self._history_len
            # (step, value) series for the plot
            self._hist: dict[str, deque] = {name: deque(maxlen=h) for name in
                                            ("step_latency", "inference_latency", "success_rate",
                                             "shift_" + ACTION, "shift_" + OBS_STATE)}

    # -- recording ----------------------------------------------------------------------------------
    def record_step(self, latency_s: float | None = None, action: Any = None, state: Any = None) -> None:
        """One control step: its wall time, the policy's action (D,) and the robot state (P,)."""
        with self._lock:
            self.steps += 1
            if latency_s is not None:
                self._step_lat.append(float(latency_s))
                self._hist["step_latency"].append((self.steps, float(latency_s)))
            for key, value in ((ACTION, action), (OBS_STATE, state)):
                if value is None:
                    continue
                sh = self._shift[key]
                sh.add(value)
                score = sh.summary(self.shift_threshold, self.min_samples)["score"]
                if score is not None:
                    self._hist["shift_" + key].append((self.steps, score))

    def record_inference(self, latency_s: float) -> None:
        with self._lock:
            self._inf_lat.append(float(latency_s))
            self._hist["inference_latency"].append((self.steps, float(latency_s)))

    def record_outcome(self, success: bool) -> None:
        """The end of one episode, as judged by the caller."""
        with self._lock:
            self.episodes += 1
            self.successes += bool(success)
            self._outcomes.append(bool(success))
            self._hist["success_rate"].append((self.episodes, sum(self._outcomes) / len(self._outcomes)))

    # -- reading ------------------------------------------------------------------------------------
    @property
    def success_rate(self) -> float | None:
        with self._lock:
            return sum(self._outcomes) / len(self._outcomes) if self._outcomes else None

    @property
    def drift_alarm(self) -> bool:
        """True while the actions or the states have drifted away from the training distribution."""
        with self._lock:
            return any(s.summary(self.shift_threshold, self.min_samples)["alarm"]
                       for s in self._shift.values())

    @property
    def latency_alarm(self) -> bool:
        r = self.report()["latency"]
        return bool(r["step"]["alarm"] or r["inference"]["alarm"])

    def report(self) -> dict[str, Any]:
        """Everything in plain JSON types (None where nothing was recorded yet)."""
        with self._lock:
            step = _percentiles(self._step_lat)
            step["budget_s"] = self.latency_budget_s
            step["alarm"] = bool(step["n"] and step["p99"] > self.latency_budget_s)
            inf = _percentiles(self._inf_lat)
            inf["budget_s"] = self.inference_budget_s
            inf["alarm"] = bool(inf["n"] and self.inference_budget_s is not None
                                and inf["p99"] > self.inference_budget_s)
            shift = {k: s.summary(self.shift_threshold, self.min_samples) for k, s in self._shift.items()}
            rate = sum(self._outcomes) / len(self._outcomes) if self._outcomes else None
            alarms = ([f"shift:{k}" for k, v in shift.items() if v["alarm"]]
                      + (["latency:step"] if step["alarm"] else [])
                      + (["latency:inference"] if inf["alarm"] else []))
            return {
                "embodiment": self.embodiment,
                "steps": self.steps,
                "episodes": self.episodes,
                "success_rate": _finite_or_none(rate) if rate is not None else None,
                "success_window": len(self._outcomes),
                "successes_total": self.successes,
                "latency": {"step": step, "inference": inf},
                "shift": shift,
                "shift_threshold": self.shift_threshold,
                "drift_alarm": any(v["alarm"] for v in shift.values()),
                "alarms": alarms,
            }

    def plot(self, path: str | os.PathLike) -> str:
        """Draw success rate, latencies (with budgets) and shift scores (with threshold) to a PNG."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        with self._lock:
            hist = {k: list(v) for k, v in self._hist.items()}
        fig = Figure(figsize=(10, 7), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(2, 2)

        def series(ax, name, label, color=None):
            pts = hist[name]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, label=label, color=color, lw=1)
            return bool(pts)

        ax = axes[0, 0]
        series(ax, "success_rate", f"rolling success (last {self.outcome_window})", "tab:green")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("episode")
        ax.set_title("success rate")
        for ax, name, budget, title in ((axes[0, 1], "step_latency", self.latency_budget_s, "step latency"),
                                        (axes[1, 0], "inference_latency", self.inference_budget_s,
                                         "inference latency")):
            series(ax, name, "latency")
            if budget is not None:
                ax.axhline(budget, color="tab:red", ls="--", lw=1, label="budget")
            ax.set_xlabel("step")
            ax.set_ylabel("seconds")
            ax.set_title(title)
        ax = axes[1, 1]
        series(ax, "shift_" + ACTION, "action")
        series(ax, "shift_" + OBS_STATE, "state")
        ax.axhline(self.shift_threshold, color="tab:red", ls="--", lw=1, label="threshold")
        ax.set_xlabel("step")
        ax.set_ylabel("score (training stds)")
        ax.set_title("distribution shift")
        for a in axes.flat:
            if a.get_legend_handles_labels()[0]:
                a.legend(loc="best", fontsize=8)
        fig.suptitle(f"vlaforge runtime monitor ({self.embodiment})")
        save_figure_atomic(fig, path, format="png", dpi=100)
        return os.fspath(path)
