"""Evaluation metrics: success with a Wilson 95% interval, steps to success, smoothness (mean squared jerk),
latency percentiles, control rate. Pure numpy, so they are checked on hand-made episodes."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a success rate (well behaved at 0% and 100%, unlike the normal one)."""
    if n <= 0:
        return (0.0, 0.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_squared_jerk(actions: np.ndarray) -> float:
    """Mean over steps and dimensions of the squared third difference of an (T, D) action sequence.

    Units: action units per control step cubed (multiply by fps**6 for per-second units). NaN when T < 4.
    """
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"actions: expected shape (T, D), got {a.shape}")
    if a.shape[0] < 4:
        return float("nan")
    return float(np.mean(np.diff(a, n=3, axis=0) ** 2))


@dataclass
class EpisodeResult:
    task: str
    seed: int
    success: bool  # the success test held at some step
    steps: int  # control steps executed
    steps_to_success: int | None  # first step (1-based) at which the success test held
    jerk: float
    chunk_latency_ms: list[float] = field(default_factory=list)  # every policy call
    policy_calls: int = 0
    control_s: float = 0.0  # wall time of the control loop (policy + simulation + rendering)
    video: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def episode_from_trace(task: str, seed: int, actions: Sequence, successes: Sequence[bool],
                       **kw) -> EpisodeResult:
    """Build an EpisodeResult from the executed actions and the per-step success flags."""
    hits = [i for i, s in enumerate(successes) if s]
    return EpisodeResult(task=task, seed=seed, success=bool(hits), steps=len(successes),
                         steps_to_success=hits[0] + 1 if hits else None,
                         jerk=mean_squared_jerk(np.asarray(actions).reshape(len(successes), -1)), **kw)


def _percentile(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 3) if xs else None


def summarize(episodes: Iterable[EpisodeResult]) -> dict:
    """Per-task and overall metrics. Overall success is the mean of per-task rates (each task counts
    equally)."""
    by_task: dict[str, list[EpisodeResult]] = {}
    for e in episodes:
        by_task.setdefault(e.task, []).append(e)
    tasks = {}
    for task, eps in sorted(by_task.items()):
        k, n = sum(e.success for e in eps), len(eps)
        lat = [x for e in eps for x in e.chunk_latency_ms]
        steps_to = [e.steps_to_success for e in eps if e.steps_to_success is not None]
        jerks = [e.jerk for e in eps if not math.isnan(e.jerk)]
        total_steps, total_s = sum(e.steps for e in eps), sum(e.control_s for e in eps)
        lo, hi = wilson_interval(k, n)
        tasks[task] = {
            "episodes": n, "successes": k, "success_rate": k / n, "ci95": [round(lo, 4), round(hi, 4)],
            "mean_steps_to_success": round(float(np.mean(steps_to)), 1) if steps_to else None,
            "mean_squared_jerk": round(float(np.mean(jerks)), 6) if jerks else None,
            "chunk_latency_ms_p50": _percentile(lat, 50), "chunk_latency_ms_p99": _percentile(lat, 99),
            "policy_calls_per_step": round(sum(e.policy_calls for e in eps) / max(total_steps, 1), 4),
            "control_steps_per_s": round(total_steps / total_s, 2) if total_s > 0 else None,
            "seeds": [e.seed for e in eps], "failed_seeds": [e.seed for e in eps if not e.success],
        }
    all_eps = [e for eps in by_task.values() for e in eps]
    k, n = sum(e.success for e in all_eps), len(all_eps)
    lat = [x for e in all_eps for x in e.chunk_latency_ms]
    jerks = [e.jerk for e in all_eps if not math.isnan(e.jerk)]
    total_steps, total_s = sum(e.steps for e in all_eps), sum(e.control_s for e in all_eps)
    lo, hi = wilson_interval(k, n)
    overall = {
        "episodes": n, "successes": k,
        "success_rate": float(np.mean([t["success_rate"] for t in tasks.values()])) if tasks else 0.0,
        "ci95": [round(lo, 4), round(hi, 4)],
        "mean_squared_jerk": round(float(np.mean(jerks)), 6) if jerks else None,
        "chunk_latency_ms_p50": _percentile(lat, 50), "chunk_latency_ms_p99": _percentile(lat, 99),
        "control_steps_per_s": round(total_steps / total_s, 2) if total_s > 0 else None,
    }
    return {"tasks": tasks, "overall": overall}
