"""Statistics of dataset features, in LeRobot's ``meta/stats.json`` shape and in the policy's shape.

Numeric features (state, action, ...) get exact statistics over every frame: ``min, max, mean, std``
(population std), ``count`` and the quantiles ``q01, q10, q50, q90, q99`` (numpy's linear interpolation).
Image statistics are per channel, on [0, 1] values, shaped (3, 1, 1) as LeRobot stores them; they are
computed on a subsample of each episode's frames and pooled across episodes (mean/std exactly by counts,
quantiles as a count-weighted average of the per-episode quantiles, an estimate).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from vlaforge.types import ACTION, OBS_ENV_STATE, OBS_STATE, STAT_NAMES

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_NAMES = tuple(f"q{round(q * 100):02d}" for q in QUANTILES)
#: every statistic written to stats.json, in LeRobot's order
ALL_STATS = ("min", "max", "mean", "std", "count", *QUANTILE_NAMES)
#: frames per episode used for image statistics
IMAGE_STAT_FRAMES = 32


def feature_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Exact statistics of ``values`` (N, D) (or (N,)) over the first axis; float64 arrays, ``count``
    int64."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.shape[0] == 0:
        raise ValueError("feature_stats: expected at least one frame, got 0")
    out = {
        "min": x.min(axis=0),
        "max": x.max(axis=0),
        "mean": x.mean(axis=0),
        "std": x.std(axis=0),
        "count": np.array([x.shape[0]], dtype=np.int64),
    }
    qs = np.quantile(x, QUANTILES, axis=0)  # (5, D)
    for name, q in zip(QUANTILE_NAMES, qs):
        out[name] = q
    return out


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel statistics of uint8 frames (n, H, W, 3) scaled to [0, 1]; arrays shaped (3, 1, 1)."""
    f = np.asarray(frames)
    if f.ndim != 4 or f.shape[-1] != 3:
        raise ValueError(f"image_stats: expected (n, H, W, 3) frames, got shape {f.shape}")
    if len(f) > IMAGE_STAT_FRAMES:
        f = f[np.linspace(0, len(f) - 1, IMAGE_STAT_FRAMES).round().astype(int)]
    px = f.reshape(-1, 3).astype(np.float64) / 255.0  # (n*H*W, 3)
    s = feature_stats(px)
    out = {k: (v if k == "count" else v.reshape(3, 1, 1)) for k, v in s.items()}
    out["count"] = np.array([len(f)], dtype=np.int64)
    return out


def aggregate(parts: Iterable[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Pool per-episode statistics of one feature (weighted by ``count``)."""
    parts = [{k: np.asarray(v, dtype=np.float64) for k, v in p.items()} for p in parts]
    if not parts:
        raise ValueError("aggregate: expected at least one set of statistics, got none")
    counts = np.array([float(np.asarray(p["count"]).reshape(-1)[0]) for p in parts])
    total = counts.sum()
    w = (counts / total).reshape((-1,) + (1,) * np.asarray(parts[0]["mean"]).ndim)
    means = np.stack([p["mean"] for p in parts])
    mean = (means * w).sum(axis=0)
    var = ((np.stack([p["std"] for p in parts]) ** 2 + (means - mean) ** 2) * w).sum(axis=0)
    out = {
        "min": np.min(np.stack([p["min"] for p in parts]), axis=0),
        "max": np.max(np.stack([p["max"] for p in parts]), axis=0),
        "mean": mean,
        "std": np.sqrt(var),
        "count": np.array([int(total)], dtype=np.int64),
    }
    for q in QUANTILE_NAMES:
        if all(q in p for p in parts):
            out[q] = (np.stack([p[q] for p in parts]) * w).sum(axis=0)
    return out


def to_json(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    """``{feature: {stat: array}}`` -> plain lists (for stats.json)."""
    return {k: {n: np.asarray(v).tolist() for n, v in s.items()} for k, s in stats.items()}


def from_json(raw: Mapping[str, Mapping[str, object]]) -> dict[str, dict[str, np.ndarray]]:
    return {k: {n: np.asarray(v) for n, v in s.items()} for k, s in raw.items()}


def policy_stats(
    state: np.ndarray, action: np.ndarray, embodiment: str, env_state: np.ndarray | None = None
) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """The policy's statistics:
    ``{embodiment: {observation.state: {mean, std, min, max, q01, q99}, action: ...}}``.

    ``state`` (N, P) and ``action`` (N, D) are every frame of the data; values are float32 arrays.
    ``env_state`` (N, E), when given, adds ``observation.environment_state``.
    """
    out = {}
    pairs = [(OBS_STATE, state), (ACTION, action)]
    if env_state is not None:
        pairs.append((OBS_ENV_STATE, env_state))
    for key, values in pairs:
        s = feature_stats(values)
        out[key] = {name: s[name].astype(np.float32) for name in STAT_NAMES}
    return {embodiment: out}
