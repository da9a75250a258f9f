"""Per-embodiment normalization of states and actions.

Statistics come in LeRobot's ``meta/stats.json`` shape, keyed by embodiment:
``{embodiment: {"observation.state": {"mean", "std", "min", "max", "q01", "q99"}, "action": {...}}}``.

Two modes:
- ``mean_std``: ``(x - mean) / std``
- ``quantile``: ``q01 -> -1``, ``q99 -> +1`` (values outside stay linear, unclipped)

A missing key or a zero spread is an error, never a silent identity. ``min_spread > 0`` floors the spread
explicitly (it is saved in the policy config), for dimensions that really are constant in the data.

``observation.environment_state`` (optional: kept and normalized when the statistics have it) is only an
auxiliary training target; its spread is floored at ``ENV_MIN_SPREAD`` (a coordinate that never moves, such as
the second object of a one-object task, is a target of zero after normalization).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from vlaforge.types import NORMALIZED_KEYS, OBS_ENV_STATE, OPTIONAL_NORMALIZED_KEYS, STAT_NAMES

Stats = dict[str, dict[str, dict[str, np.ndarray]]]
ENV_MIN_SPREAD = 1e-3  # floor of the environment state's spread (metres in Meta-World)


def as_stats(raw: Mapping[str, Any], required_keys=NORMALIZED_KEYS) -> Stats:
    """Validate and convert statistics (lists or arrays) to float32 arrays. Raises on anything missing."""
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError(f"stats: expected {{embodiment: {{key: {{stat: values}}}}}}, got {type(raw).__name__} {raw!r:.80}")
    out: Stats = {}
    for emb, per_key in raw.items():
        if not isinstance(per_key, Mapping):
            raise ValueError(f"stats[{emb!r}]: expected a dict keyed by {list(required_keys)}, got {type(per_key).__name__}")
        out[emb] = {}
        for key in (*required_keys, *(k for k in OPTIONAL_NORMALIZED_KEYS if k in per_key)):
            if key not in per_key:
                raise ValueError(f"stats[{emb!r}]: missing key {key!r}; present: {sorted(per_key)}")
            out[emb][key] = {}
            for name in STAT_NAMES:
                if name not in per_key[key]:
                    raise ValueError(f"stats[{emb!r}][{key!r}]: missing statistic {name!r}; present: {sorted(per_key[key])}")
                arr = np.asarray(per_key[key][name], dtype=np.float32).reshape(-1)
                if not np.all(np.isfinite(arr)):
                    raise ValueError(f"stats[{emb!r}][{key!r}][{name!r}]: expected finite values, got {arr.tolist()}")
                out[emb][key][name] = arr
            sizes = {n: v.shape[0] for n, v in out[emb][key].items()}
            if len(set(sizes.values())) != 1:
                raise ValueError(f"stats[{emb!r}][{key!r}]: statistics disagree in size: {sizes}")
    return out


def stats_to_json(stats: Stats) -> dict:
    return {e: {k: {n: np.asarray(v).astype(float).tolist() for n, v in s.items()} for k, s in ks.items()}
            for e, ks in stats.items()}


class Normalizer:
    """Affine maps ``x -> (x - center) / scale`` per embodiment and key, as torch tensors and numpy arrays."""

    def __init__(self, stats: Stats, mode: str, min_spread: float = 0.0):
        if mode not in ("mean_std", "quantile"):
            raise ValueError(f"normalization: expected 'mean_std' or 'quantile', got {mode!r}")
        self.mode = mode
        self.min_spread = float(min_spread)
        self.center: dict[tuple[str, str], np.ndarray] = {}
        self.scale: dict[tuple[str, str], np.ndarray] = {}
        self._torch_cache: dict[tuple[str, str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
        for emb, per_key in stats.items():
            for key, s in per_key.items():
                if key not in NORMALIZED_KEYS and key not in OPTIONAL_NORMALIZED_KEYS:
                    continue
                if mode == "mean_std":
                    center, scale = s["mean"], s["std"]
                else:
                    center, scale = (s["q99"] + s["q01"]) / 2, (s["q99"] - s["q01"]) / 2
                scale = scale.astype(np.float32)
                floor = ENV_MIN_SPREAD if key == OBS_ENV_STATE else self.min_spread
                zero = np.nonzero(~(scale > 0))[0] if floor == 0 else np.array([], dtype=int)
                if zero.size:
                    which = "std" if mode == "mean_std" else "q99 - q01"
                    raise ValueError(
                        f"stats[{emb!r}][{key!r}]: zero spread ({which} = 0) in dimension(s) {zero.tolist()}; a constant "
                        f"dimension cannot be normalized. Set PolicyConfig.min_spread > 0 to floor the spread explicitly."
                    )
                self.center[(emb, key)] = center.astype(np.float32)
                self.scale[(emb, key)] = np.maximum(scale, floor).astype(np.float32)

    def dim(self, embodiment: str, key: str) -> int:
        return int(self.center[(embodiment, key)].shape[0])

    def _t(self, emb: str, key: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        k = (emb, key, device)
        if k not in self._torch_cache:
            self._torch_cache[k] = (torch.as_tensor(self.center[(emb, key)], device=device),
                                    torch.as_tensor(self.scale[(emb, key)], device=device))
        return self._torch_cache[k]

    def normalize(self, x: torch.Tensor, emb: str, key: str) -> torch.Tensor:
        c, s = self._t(emb, key, x.device)
        return (x - c) / s

    def unnormalize(self, x: torch.Tensor, emb: str, key: str) -> torch.Tensor:
        c, s = self._t(emb, key, x.device)
        return x * s + c

    def normalized_range(self, stats: Stats, emb: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension (low, high) of the data in normalized units, from min/max."""
        c, s = self.center[(emb, key)], self.scale[(emb, key)]
        return (stats[emb][key]["min"] - c) / s, (stats[emb][key]["max"] - c) / s
