"""Per-embodiment normalization of states and actions.

Statistics come in LeRobot's ``meta/stats.json`` shape, keyed by embodiment:
``{embodiment: {"observation.state": {"mean", "std", "min", "max", "q01", "q99"}, "action": {...}}}``.

Two modes:
- ``mean_std``: ``(x - mean) / std``
- ``quantile``: ``q01 -> -1``, ``q99 -> +1`` (values outside stay linear, unclipped)

A missing key or a non-finite statistic is an error, never a silent identity. A dimension with zero spread is
normal in real data (the gripper never moves in a drawer task) and is handled, and reported (``notes()``):
where min..max still has a range (rare values beyond the quantiles) that range scales it; where the dimension
is constant it is centred on its value with scale 1. ``min_spread > 0`` instead floors every spread explicitly
(it is saved in the policy config).

``observation.environment_state`` (optional: kept and normalized when the statistics have it) is only an
auxiliary training target; its spread is floored at ``ENV_MIN_SPREAD`` (a coordinate that never moves, such as
the second object of a one-object task, is a target of zero after normalization).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:  # torch only where tensors are normalized: OnnxPolicy normalizes numpy arrays without it
    import torch

from vlaforge.types import NORMALIZED_KEYS, OBS_ENV_STATE, OPTIONAL_NORMALIZED_KEYS, STAT_NAMES

Stats = dict[str, dict[str, dict[str, np.ndarray]]]
ENV_MIN_SPREAD = 1e-3  # floor of the environment state's spread (metres in Meta-World)


def as_stats(raw: Mapping[str, Any], required_keys=NORMALIZED_KEYS) -> Stats:
    """Validate and convert statistics (lists or arrays) to float32 arrays. Raises on anything missing."""
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError(f"stats: expected {{embodiment: {{key: {{stat: values}}}}}}, "
                         f"got {type(raw).__name__} {raw!r:.80}")
    out: Stats = {}
    for emb, per_key in raw.items():
        if not isinstance(per_key, Mapping):
            raise ValueError(f"stats[{emb!r}]: expected a dict keyed by {list(required_keys)}, "
                             f"got {type(per_key).__name__}")
        out[emb] = {}
        for key in (*required_keys, *(k for k in OPTIONAL_NORMALIZED_KEYS if k in per_key)):
            if key not in per_key:
                raise ValueError(f"stats[{emb!r}]: missing key {key!r}; present: {sorted(per_key)}")
            out[emb][key] = {}
            for name in STAT_NAMES:
                if name not in per_key[key]:
                    raise ValueError(f"stats[{emb!r}][{key!r}]: missing statistic {name!r}; "
                                     f"present: {sorted(per_key[key])}")
                arr = np.asarray(per_key[key][name], dtype=np.float32).reshape(-1)
                if not np.all(np.isfinite(arr)):
                    raise ValueError(f"stats[{emb!r}][{key!r}][{name!r}]: expected finite values, "
                                     f"got {arr.tolist()}")
                out[emb][key][name] = arr
            sizes = {n: v.shape[0] for n, v in out[emb][key].items()}
            if len(set(sizes.values())) != 1:
                raise ValueError(f"stats[{emb!r}][{key!r}]: statistics disagree in size: {sizes}")
    return out


def is_zero_spread(spread: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Dimensions whose spread is zero, or float noise beside their value (< 1e-6 of it, at least 1e-6)."""
    return ~(np.asarray(spread) > 1e-6 * (1.0 + np.abs(np.asarray(center))))


def _zero_spread(s: Mapping[str, np.ndarray], center: np.ndarray, scale: np.ndarray
                 ) -> tuple[np.ndarray, list[int], list[int]]:
    """Scales for the dimensions whose spread is zero: half the min..max range where the data does move (a
    gripper that closes in under 1% of the frames: q01 = q99), 1 where it never does (a constant dimension is
    centred on its value and left unscaled: the head learns 0 there and predicts the constant back).
    Returns (scale, constant dims, rare-value dims)."""
    zero = is_zero_spread(scale, center)
    if not zero.any():
        return scale, [], []
    half_range = ((s["max"] - s["min"]) / 2).astype(np.float32)
    moves = zero & ~is_zero_spread(half_range, center)
    scale = np.where(moves, half_range, np.where(zero, 1.0, scale)).astype(np.float32)
    return scale, np.flatnonzero(zero & ~moves).tolist(), np.flatnonzero(moves).tolist()


def stats_to_json(stats: Stats) -> dict:
    return {e: {k: {n: np.asarray(v).astype(float).tolist() for n, v in s.items()} for k, s in ks.items()}
            for e, ks in stats.items()}


class Normalizer:
    """Affine maps ``x -> (x - center) / scale`` per embodiment and key, for torch tensors and numpy arrays
    alike (numpy in, numpy out: the exported policy's path, which imports no torch)."""

    def __init__(self, stats: Stats, mode: str, min_spread: float = 0.0):
        if mode not in ("mean_std", "quantile"):
            raise ValueError(f"normalization: expected 'mean_std' or 'quantile', got {mode!r}")
        self.mode = mode
        self.min_spread = float(min_spread)
        self.center: dict[tuple[str, str], np.ndarray] = {}
        self.scale: dict[tuple[str, str], np.ndarray] = {}
        #: per (embodiment, key), the dimensions whose spread was zero and how they are handled (``notes()``)
        self.constant: dict[tuple[str, str], list[int]] = {}
        self.rare: dict[tuple[str, str], list[int]] = {}
        self._torch_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        for emb, per_key in stats.items():
            for key, s in per_key.items():
                if key not in NORMALIZED_KEYS and key not in OPTIONAL_NORMALIZED_KEYS:
                    continue
                if mode == "mean_std":
                    center, scale = s["mean"], s["std"]
                else:
                    center, scale = (s["q99"] + s["q01"]) / 2, (s["q99"] - s["q01"]) / 2
                center, scale = center.astype(np.float32), scale.astype(np.float32)
                floor = ENV_MIN_SPREAD if key == OBS_ENV_STATE else self.min_spread
                if floor == 0:
                    scale, self.constant[(emb, key)], self.rare[(emb, key)] = _zero_spread(s, center, scale)
                self.center[(emb, key)] = center
                self.scale[(emb, key)] = np.maximum(scale, floor).astype(np.float32)

    def notes(self) -> list[str]:
        """One line per normalized key with zero-spread dimensions, saying how they are normalized."""
        out = []
        for (emb, key), dims in self.constant.items():
            if dims:
                vals = ", ".join(f"{d}: {self.center[(emb, key)][d]:g}" for d in dims)
                out.append(f"{emb} {key}: dimension(s) {dims} constant in the data ({vals}): "
                           f"centred, scale 1")
        for (emb, key), dims in self.rare.items():
            if dims:
                what = "std" if self.mode == "mean_std" else "q01 = q99"
                out.append(f"{emb} {key}: dimension(s) {dims} with {what} but a nonzero min..max range: "
                           f"scaled by half that range")
        return out

    def dim(self, embodiment: str, key: str) -> int:
        return int(self.center[(embodiment, key)].shape[0])

    def _params(self, emb: str, key: str, x):
        """(center, scale) as numpy arrays for a numpy ``x``, else as tensors on ``x``'s device."""
        if isinstance(x, np.ndarray):
            return self.center[(emb, key)], self.scale[(emb, key)]
        k = (emb, key, x.device)
        if k not in self._torch_cache:
            import torch

            self._torch_cache[k] = (torch.as_tensor(self.center[(emb, key)], device=x.device),
                                    torch.as_tensor(self.scale[(emb, key)], device=x.device))
        return self._torch_cache[k]

    def normalize(self, x, emb: str, key: str):
        c, s = self._params(emb, key, x)
        return ((x - c) / s).astype(np.float32) if isinstance(x, np.ndarray) else (x - c) / s

    def unnormalize(self, x, emb: str, key: str):
        c, s = self._params(emb, key, x)
        return (x * s + c).astype(np.float32) if isinstance(x, np.ndarray) else x * s + c

    def normalized_range(self, stats: Stats, emb: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension (low, high) of the data in normalized units, from min/max."""
        c, s = self.center[(emb, key)], self.scale[(emb, key)]
        return (stats[emb][key]["min"] - c) / s, (stats[emb][key]["max"] - c) / s
