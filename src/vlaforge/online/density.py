"""Feature density: how far an observation's encoder features lie from the in-distribution ones.

The confidence estimator's novelty component (Mahalanobis distance to per-class Gaussians of a network's own
features, Lee et al. 2018, here one Gaussian per embodiment and modality):

    density, cross = FeatureDensity.fit(features, embodiments)  # {modality: (N, F)} of calibration frames
    parts = density.normalized(features, embodiments)           # {modality: (B,)}: distance / in-dist. p99

Per embodiment and modality (``language``, ``image``, ``state``: ``Policy.modality_features``; ``pixels``: a
coarse thumbnail of each camera image, ``vlaforge.online.confidence.thumbnails``) it keeps the
mean of the calibration features and the inverse of a shrunk covariance ``(1 - a) S + a tr(S) / F I``
(``a = shrinkage``; with a few hundred frames and F in the hundreds the sample covariance ``S`` alone is
singular). A frame's distance is ``sqrt((x - mean)^T P (x - mean))``; it is reported normalized by the 99th
percentile of the distances of in-distribution frames, so 1 means "as far as the farthest 1 % of them".

Language is the exception: its in-distribution features are the few instructions the policy was trained on, so
its part is the Euclidean distance to the nearest of them, in units of half the median distance between
neighbouring known instructions (0 for a known instruction; 1 halfway to the nearest one).

The Gaussian parts' reference distances are **cross-fitted**: the calibration frames are split into ``folds``
parts and each part's distances come from a Gaussian fitted on the other parts. A frame's distance to a
Gaussian fitted on that same frame is biased low (more so the more dimensions per frame), so in-sample
percentiles would make every fresh in-distribution frame look novel. The stored Gaussian is then fitted on all
frames.

Numbers are float64 numpy; nothing here imports torch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from threadpoolctl import threadpool_limits

MODALITIES = ("language", "image", "state", "pixels")
# files written before the pixel part (confidence format 2) hold only these; they load without it
LEGACY_MODALITIES = ("language", "image", "state")
TENSORS = ("mean", "precision", "reference", "known")  # per embodiment and modality, in the saved file
# a modality whose in-distribution values are a few distinct points (the trained instructions) is scored by
# the distance to the nearest of them: a Gaussian around their centroid ranks a new sentence, which sits near
# the centroid of sentence embeddings, as *more* typical than the known ones (measured on MT10: AUROC 0.10)
DISCRETE = ("language",)
MIN_FRAMES = 8  # per embodiment; fewer and the embodiment gets no density component
EPS = 1e-12


@dataclass(frozen=True)
class Gaussian:
    """One embodiment's and modality's in-distribution statistics."""

    mean: np.ndarray  # (F,) float64
    precision: np.ndarray  # (F, F) float64: the inverse of the shrunk covariance
    p50: float  # median of the cross-fitted in-distribution distances
    p99: float  # their 99th percentile: the unit of the normalized distance
    frames: int
    # (K, F) distinct calibration features: nearest-neighbour distance instead
    known: np.ndarray | None = None

    def distance(self, x: np.ndarray) -> np.ndarray:
        """(B, F) -> (B,) Mahalanobis distances (or, with ``known``, Euclidean distance to the nearest known
        feature); a non-finite feature gives an infinite distance."""
        if self.known is not None:
            return nearest_distance(x, self.known)
        return mahalanobis(x, self.mean, self.precision)


def nearest_distance(x: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(B, F), (K, F) -> (B,) Euclidean distance of each row to its nearest known row (inf if non-finite)."""
    x = np.asarray(x, dtype=np.float64)
    d = np.sqrt(np.maximum(((x[:, None, :] - known[None, :, :]) ** 2).sum(-1), 0.0)).min(1)
    return np.where(np.isfinite(x).all(1), d, np.inf)


def discrete_reference(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Calibration language features -> the distinct ones (K, F) and the distance unit: half the median
    nearest-neighbour distance between distinct instructions (a new sentence at 1 is halfway to the nearest
    one the policy knows); with one instruction, the feature's RMS norm."""
    x = np.asarray(x, dtype=np.float64)
    # one row per instruction: the same sentence encoded in different batches differs by float noise, so rows
    # closer than a thousandth of the features' RMS norm are the same point (greedy, in order)
    tol = 1e-3 * max(float(np.sqrt((x ** 2).sum(1).mean())), EPS)
    rows: list[np.ndarray] = []
    for r in x:
        if not rows or np.sqrt(((np.stack(rows) - r) ** 2).sum(1)).min() > tol:
            rows.append(r)
    known = np.stack(rows)
    if len(known) < 2:
        return known, max(float(np.sqrt((known ** 2).mean())), EPS)
    dd = np.sqrt(((known[:, None, :] - known[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(dd, np.inf)
    return known, max(0.5 * float(np.median(dd.min(1))), EPS)


def shrunk_gaussian(x: np.ndarray, shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """(N, F) features -> mean (F,) and precision (F, F) of the covariance ``(1 - a) S + a tr(S) / F I``."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(0)
    xc = x - mean
    s = xc.T @ xc / len(x)  # (F, F)
    f = x.shape[1]
    target = float(np.trace(s)) / f
    # a floor so that constant features (one instruction in the whole calibration set) stay invertible
    floor = 1e-6 * max(target, float(np.mean(mean ** 2)), EPS)
    cov = (1.0 - shrinkage) * s + (shrinkage * target + floor) * np.eye(f)
    precision = np.linalg.inv(cov)
    return mean, (precision + precision.T) / 2.0


def mahalanobis(x: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    diff = np.asarray(x, dtype=np.float64) - mean  # (B, F)
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.sqrt(np.maximum(((diff @ precision) * diff).sum(1), 0.0))
    return np.where(np.isfinite(d), d, np.inf)


def cross_fitted_distances(x: np.ndarray, shrinkage: float, folds: int, seed: int) -> np.ndarray:
    """(N, F) -> (N,): each frame's distance to a Gaussian fitted without its fold."""
    n = len(x)
    out = np.empty(n, dtype=np.float64)
    parts = np.array_split(np.random.default_rng(seed).permutation(n), max(2, min(folds, n // 2)))
    for part in parts:
        rest = np.setdiff1d(np.arange(n), part)
        mean, precision = shrunk_gaussian(x[rest], shrinkage)
        out[part] = mahalanobis(x[part], mean, precision)
    return out


class FeatureDensity:
    """Per embodiment and modality Gaussians of encoder features; normalized distances of new frames."""

    def __init__(self, gaussians: Mapping[str, Mapping[str, Gaussian]], shrinkage: float, folds: int):
        self.gaussians = {e: dict(g) for e, g in gaussians.items()}
        self.shrinkage = float(shrinkage)
        self.folds = int(folds)

    @classmethod
    def fit(cls, features: Mapping[str, np.ndarray], embodiments: Sequence[str], shrinkage: float = 0.1,
            folds: int = 5, seed: int = 0) -> tuple["FeatureDensity | None", dict[str, np.ndarray]]:
        """Calibration features {modality: (N, F)} and the embodiment of each row -> the fitted density
        (None when no embodiment has ``MIN_FRAMES`` frames) and the cross-fitted normalized distances
        {modality: (N,)} of the calibration frames themselves (NaN for rows whose embodiment was skipped)."""
        if not 0.0 < shrinkage <= 1.0:
            raise ValueError(f"FeatureDensity.shrinkage: expected a value in (0, 1], got {shrinkage!r}")
        embodiments = list(embodiments)
        n = len(embodiments)
        cross = {m: np.full(n, np.nan) for m in features}
        gaussians: dict[str, dict[str, Gaussian]] = {}
        for e in sorted(set(embodiments)):
            rows = np.flatnonzero(np.array(embodiments) == e)
            if len(rows) < MIN_FRAMES:
                warnings.warn(f"confidence density: embodiment {e!r} has {len(rows)} calibration frames, "
                              f"expected at least {MIN_FRAMES}; it gets no density component", stacklevel=3)
                continue
            gaussians[e] = {}
            for m, x in features.items():
                xe = np.asarray(x, dtype=np.float64)[rows]
                mean, precision = shrunk_gaussian(xe, shrinkage)
                if m in DISCRETE:
                    known, unit = discrete_reference(xe)
                    ref = nearest_distance(xe, known)
                    g = Gaussian(mean, precision, float(np.percentile(ref, 50)), unit, len(rows), known)
                else:
                    ref = cross_fitted_distances(xe, shrinkage, folds, seed)
                    g = Gaussian(mean, precision, float(np.percentile(ref, 50)),
                                 float(np.percentile(ref, 99)), len(rows))
                gaussians[e][m] = g
                cross[m][rows] = ref / max(g.p99, EPS)
        return (cls(gaussians, shrinkage, folds) if gaussians else None), cross

    def normalized(self, features: Mapping[str, np.ndarray], embodiments: Sequence[str]
                   ) -> dict[str, np.ndarray]:
        """{modality: (B, F)} -> {modality: (B,)} distance / p99 (1 = the 99th percentile of in-distribution
        frames); NaN for rows of an embodiment without statistics, inf for non-finite features."""
        embodiments = list(embodiments)
        out = {m: np.full(len(embodiments), np.nan) for m in MODALITIES}  # a part not fitted stays NaN
        # one BLAS thread: this runs in the control loop beside torch, and OpenBLAS's worker threads keep
        # spinning after a (1, 768) x (768, 768) product, which doubled estimate() on 2 cores (24 -> 55 ms)
        with threadpool_limits(1, user_api="blas"):
            for e in set(embodiments):
                if e not in self.gaussians:
                    continue
                rows = np.flatnonzero(np.array(embodiments) == e)
                for m, g in self.gaussians[e].items():
                    out[m][rows] = g.distance(np.asarray(features[m])[rows]) / max(g.p99, EPS)
        return out

    # -- persistence (tensors for safetensors, a summary for JSON) ---------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for e, gs in self.gaussians.items():
            for m, g in gs.items():
                out[f"{e}/{m}/mean"] = np.ascontiguousarray(g.mean)
                out[f"{e}/{m}/precision"] = np.ascontiguousarray(g.precision)
                out[f"{e}/{m}/reference"] = np.array([g.p50, g.p99, g.frames], dtype=np.float64)
                if g.known is not None:
                    out[f"{e}/{m}/known"] = np.ascontiguousarray(g.known)
        return out

    def summary(self) -> dict[str, Any]:
        per = {e: {m: {"dim": int(g.mean.shape[0]), "frames": g.frames, "p50": g.p50, "p99": g.p99}
                   for m, g in gs.items()} for e, gs in self.gaussians.items()}
        return {"shrinkage": self.shrinkage, "folds": self.folds, "embodiments": per}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], dims: Mapping[str, int],
                    embodiments: Sequence[str], shrinkage: float, folds: int, source: str,
                    modalities: Sequence[str] = MODALITIES) -> "FeatureDensity":
        """Inverse of ``to_arrays``, checked against the policy (its embodiments and feature widths) and
        against the ``modalities`` the file must hold (``LEGACY_MODALITIES`` for files from before the pixel
        part)."""
        keys: dict[str, dict[str, dict[str, np.ndarray]]] = {}
        for k, v in arrays.items():
            parts = k.split("/")
            if len(parts) != 3 or parts[1] not in MODALITIES or parts[2] not in TENSORS:
                raise ValueError(f"{source}: unexpected tensor {k!r}; expected '<embodiment>/<modality>/"
                                 f"mean|precision|reference' with modality in {MODALITIES}")
            keys.setdefault(parts[0], {}).setdefault(parts[1], {})[parts[2]] = v
        if not keys:
            raise ValueError(f"{source}: expected density statistics, the file holds no tensors")
        gaussians: dict[str, dict[str, Gaussian]] = {}
        for e, mods in keys.items():
            if e not in embodiments:
                raise ValueError(f"{source}: statistics for embodiment {e!r}; the policy has "
                                 f"{list(embodiments)}")
            if set(mods) != set(modalities):
                raise ValueError(f"{source}: embodiment {e!r}: expected modalities {list(modalities)}, "
                                 f"got {sorted(mods)}")
            gaussians[e] = {}
            for m in modalities:
                t, f = mods[m], int(dims[m])
                want = {"mean": (f,), "precision": (f, f), "reference": (3,)}
                for name, shape in want.items():
                    if name not in t:
                        raise ValueError(f"{source}: missing tensor '{e}/{m}/{name}'")
                    if tuple(t[name].shape) != shape:
                        raise ValueError(f"{source}: tensor '{e}/{m}/{name}': expected shape {shape} (the "
                                         f"policy's {m} features are {f} wide), got {tuple(t[name].shape)}")
                ref = np.asarray(t["reference"], dtype=np.float64)
                known = t.get("known")
                if (known is None) != (m not in DISCRETE):
                    raise ValueError(f"{source}: tensor '{e}/{m}/known': expected it "
                                     f"{'for' if m in DISCRETE else 'only for'} modalities {list(DISCRETE)}")
                if known is not None and (known.ndim != 2 or known.shape[1] != f):
                    raise ValueError(f"{source}: tensor '{e}/{m}/known': expected shape (K, {f}), got "
                                     f"{tuple(known.shape)}")
                gaussians[e][m] = Gaussian(np.asarray(t["mean"], np.float64),
                                           np.asarray(t["precision"], np.float64),
                                           float(ref[0]), float(ref[1]), int(ref[2]),
                                           None if known is None else np.asarray(known, np.float64))
        return cls(gaussians, shrinkage, folds)
