"""How sure is the policy about this observation? A score per frame, a threshold, a go / no-go.

    est = ConfidenceEstimator(policy, n_samples=5)
    est.calibrate(val_dataset, percentile=5.0)     # threshold + density statistics from in-distribution data
    c = est.estimate(obs)                          # Confidence(score, disagreement, proceed, mean_chunk, ...)
    est.save(checkpoint_dir)                       # confidence.json + confidence.safetensors by the policy
    est = ConfidenceEstimator.load(policy, checkpoint_dir)
    Controller(policy, safety, confidence=est, on_low_confidence=ask_a_person)

Score convention: **higher = more confident**, in [0, 1]. ``disagreement`` is the raw uncertainty the score
comes from (>= 0, lower = more confident). ``proceed`` is ``score >= threshold`` (always True while no
threshold is set: an uncalibrated estimator never stops the robot).

Two components. The **head's own method** (``method="auto"`` picks by head) measures how spread the
predictive distribution is:

- flow, diffusion -> ``samples``: d = RMS over (H, D) of the std across ``n_samples`` chunks sampled in
  ONE batched head call on one encoding of the observation, in normalized action units; score ``1 / (1 + d)``.
- tokens -> ``entropy``: d = mean entropy (nats) of the per-step, per-dimension bin distributions;
  score ``1 - d / log(num_bins)`` (1: one-hot, 0: uniform).
- regression -> ``tta``: d = the same RMS spread over ``n_samples`` test-time-augmented copies (copy 0 as
  observed; the others with the image shifted by up to ``shift_px`` pixels, as in training, and the state
  jittered by ``state_jitter`` training stds), in one batched forward; score ``1 / (1 + d)``.

A regression head is deterministic: its "samples" are identical, so sample disagreement would always say
"certain". The test-time-augmentation ensemble asks instead whether the prediction is stable under the
perturbations the policy was trained to be invariant to. ``tta`` may be chosen for any head.

Spread measures ambiguity (several actions fit this input), not novelty: far from the data a network often
saturates and answers confidently. The **density** component (``density=True``, the default) measures
novelty of the input itself, from the policy's pre-fusion features (``Policy.modality_features``) of the same
single encode pass as the head's method: for image and state the Mahalanobis distance to Gaussians fitted per
embodiment and modality on the calibration frames, for language the distance to the nearest instruction seen
in calibration (``vlaforge.online.density``). A fourth part, ``pixels``, is the Mahalanobis distance of a
``PIXEL_GRID`` x ``PIXEL_GRID`` thumbnail of each camera image (``thumbnails``): the encoder's pooled tokens
average a local change (an occluder over a quarter of the view) into the rest of the scene, the thumbnail of a
fixed camera keeps where it is (measured on MT10: occlusion AUROC 0.905 from the image tokens, 0.999 from the
thumbnail). It flags any change of the view, benign ones (lighting, a moved camera) included.
Once calibrated, both are put in the same unit, "times the 99th percentile of in-distribution frames":

    parts = {"head": d_head / p99_head, "language": d_lang / p99_lang, "image": ..., "state": ...,
             "pixels": ...}
    disagreement = max(parts.values());   score = 1 / (1 + disagreement)

so one component far outside what calibration saw is enough to lower the score. Before calibration (or with
``density=False``) the score is the head's alone, as above. See docs/confidence_and_adaptation.md.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from vlaforge.config import HEADS, head_names
from vlaforge.online import confidence_file
from vlaforge.online.confidence_file import CONFIDENCE_FILE, DENSITY_FILE, FORMAT_VERSION, has_calibration
from vlaforge.online.density import EPS, MODALITIES, FeatureDensity
from vlaforge.types import ACTION, EMBODIMENT, OBS_STATE, TASK, image_key

__all__ = ["CONFIDENCE_FILE", "DENSITY_FILE", "FORMAT_VERSION", "METHODS", "Confidence",
           "ConfidenceEstimator", "ConfidenceNotSupported", "auto_method", "feature_dims", "has_calibration",
           "thumbnails"]
PIXEL_GRID = 16  # side of the per-camera thumbnail of the density's pixel part
METHODS = ("auto", "samples", "entropy", "tta")
SETTINGS = ("method", "n_samples", "threshold", "shift_px", "state_jitter", "seed", "density", "shrinkage",
            "folds")


class ConfidenceNotSupported(ValueError):
    """The chosen method does not apply to this policy's head."""


@dataclass(frozen=True)
class Confidence:
    """One verdict. ``score``: higher = more confident, in [0, 1]; ``mean_chunk`` (H, D) in physical units.

    ``disagreement``: what the score comes from; once calibrated with density, the largest of ``parts``,
    each a component in units of its in-distribution 99th percentile (``head``, ``language``, ``image``,
    ``state``); otherwise the head method's raw value. ``head_disagreement``: always the head method's raw
    value."""

    score: float
    disagreement: float
    proceed: bool
    mean_chunk: np.ndarray = field(repr=False)
    method: str = ""
    threshold: float | None = None
    parts: Mapping[str, float] = field(default_factory=dict)
    head_disagreement: float | None = None


def auto_method(head: str) -> str:
    """The method ``method="auto"`` picks for a head: the first of its registry entry's ``confidence``."""
    return HEADS.get(head).confidence[0]


def _not_supported(method: str, head: str) -> ConfidenceNotSupported:
    able = [n for n in head_names() if method in HEADS.get(n).confidence]
    why = {"samples": ": its samples are identical or per-bin draws, not independent chunks"}.get(method, "")
    return ConfidenceNotSupported(f"method {method!r} needs the {' or '.join(able)} head, the policy has "
                                  f"{head!r}{why}; use {auto_method(head)!r} (method='auto')")


class ConfidenceEstimator:
    """Scores observations for one policy. Not thread-safe (one estimator per control loop).

    ``density`` (default True): ``calibrate`` also fits the feature-density statistics and, from then on, the
    score combines them with the head's method (module docstring). ``shrinkage``: the covariance shrinkage
    ``a``; ``folds``: cross-fitting folds of the in-distribution distances (``vlaforge.online.density``)."""

    def __init__(self, policy: Any, n_samples: int = 5, threshold: float | None = None, method: str = "auto",
                 shift_px: int = 4, state_jitter: float = 0.05, seed: int = 0, batch_size: int = 32,
                 density: bool = True, shrinkage: float = 0.1, folds: int = 5):
        if method not in METHODS:
            raise ValueError(f"ConfidenceEstimator.method: expected one of {METHODS}, got {method!r}")
        head = policy.config.head
        method = auto_method(head) if method == "auto" else method
        if method not in HEADS.get(head).confidence:
            raise _not_supported(method, head)
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"ConfidenceEstimator.n_samples: expected a positive int, got {n_samples!r}")
        if method in ("samples", "tta") and n_samples < 2:
            raise ValueError(f"ConfidenceEstimator.n_samples: method {method!r} measures disagreement "
                             f"between samples: expected at least 2, got {n_samples}")
        if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"ConfidenceEstimator.threshold: expected a score in [0, 1] or None, "
                             f"got {threshold!r}")
        if shift_px < 0 or not state_jitter >= 0:
            raise ValueError(f"ConfidenceEstimator: expected shift_px >= 0 and state_jitter >= 0, "
                             f"got {shift_px!r} and {state_jitter!r}")
        if not 0.0 < shrinkage <= 1.0 or folds < 2:
            raise ValueError(f"ConfidenceEstimator: expected 0 < shrinkage <= 1 and folds >= 2, "
                             f"got {shrinkage!r} and {folds!r}")
        self.policy = policy
        self.method = method
        self.n_samples = int(n_samples)
        self.threshold = None if threshold is None else float(threshold)
        self.shift_px = int(shift_px)
        self.state_jitter = float(state_jitter)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.density = bool(density)
        self.shrinkage = float(shrinkage)
        self.folds = int(folds)
        self.calibration: dict[str, Any] | None = None
        self.feature_density: FeatureDensity | None = None  # fitted by calibrate, or loaded
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        import torch

        device = getattr(self.policy, "device", "cpu")
        self._gen = torch.Generator(device=device).manual_seed(int(seed))  # on the policy's device
        self._rng = np.random.default_rng(int(seed))

    @property
    def combined(self) -> bool:
        """True when the score combines the head's method with feature density (calibrated, ``density``)."""
        return self.density and self.feature_density is not None

    # -- scoring ---------------------------------------------------------------------------------
    def score_from(self, disagreement: np.ndarray) -> np.ndarray:
        """The head method's own score (higher = more confident, in [0, 1]) for its raw disagreements."""
        d = np.asarray(disagreement, dtype=np.float64)
        if self.method == "entropy":
            return np.clip(1.0 - d / math.log(self.policy.config.settings().num_bins), 0.0, 1.0)
        return 1.0 / (1.0 + d)

    def estimate(self, obs: Mapping[str, Any]) -> Confidence:
        """One frame dict -> its :class:`Confidence` (the controller's hook calls this)."""
        d, mean, feats, embs = self._evaluate(self.policy.frame_to_batch(obs), features=self.combined)
        t = self._table(d, feats, embs)
        score = float(t["score"][0])
        parts = {k: float(t[k][0]) for k in ("head", *MODALITIES) if k in t and not np.isnan(t[k][0])}
        proceed = self.threshold is None or score >= self.threshold
        return Confidence(score, float(t["disagreement"][0]), bool(proceed), mean[0], self.method,
                          self.threshold, parts, float(d[0]))

    __call__ = estimate

    def evaluate(self, batch: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """A batch (B rows) -> the head method's disagreement (B,), mean chunk (B, H, D) in physical units."""
        d, mean, _, _ = self._evaluate(batch, features=False)
        return d, mean

    def _evaluate(self, batch: Mapping[str, Any], features: bool
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray] | None, list[str]]:
        """``evaluate`` plus, from the same encode pass when ``features``, the modality features (float64
        (B, F) each, of the observation as given) and each row's embodiment."""
        import torch

        policy = self.policy
        was_training = policy.training
        policy.eval()
        try:
            with torch.inference_mode():
                if self.method == "tta":
                    return self._tta(batch, features)
                if features:
                    cond, embs, feats = policy.encode_with_features(batch)  # (B, H, d), {m: (B, F)}
                else:
                    (cond, embs), feats = policy.encode(batch), None
                b = cond.shape[0]
                dis = np.zeros(b, dtype=np.float64)
                means: list[np.ndarray | None] = [None] * b
                for emb, ix in _rows_by_embodiment(embs, cond.device).items():
                    head = policy.heads[emb]
                    c = cond[ix]
                    if self.method == "entropy":
                        d_e = head.entropy(c)  # (b,)
                        probs = torch.softmax(head.logits(c), dim=-1)  # (b, H, D, bins)
                        mean_n = (probs * _bin_centres(head, c.device)).sum(-1)  # (b, H, D): the expectation
                    else:
                        x = head.sample(c, self.n_samples, self._gen)  # (b, n, H, D) normalized
                        d_e = x.var(dim=1, unbiased=False).mean(dim=(1, 2)).sqrt()
                        mean_n = x.mean(dim=1)
                    mean = policy.normalizer.unnormalize(mean_n, emb, ACTION).float().cpu().numpy()
                    dis[ix.cpu().numpy()] = d_e.double().cpu().numpy()
                    for j, i in enumerate(ix.tolist()):
                        means[i] = mean[j]
                return dis, _stack(means), self._features(feats, batch), list(embs)
        finally:
            policy.train(was_training)

    def _tta(self, batch: Mapping[str, Any], features: bool = False
             ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray] | None, list[str]]:
        """n augmented copies of every row in one forward: spread of the predictions, copy 0's features."""
        import torch

        policy, n = self.policy, self.n_samples
        state = torch.as_tensor(batch[OBS_STATE]).float()
        b = state.shape[0]
        tasks = [batch[TASK]] * b if isinstance(batch[TASK], str) else list(batch[TASK])
        embs = batch.get(EMBODIMENT) or [policy.embodiments[0]] * b
        embs = [embs] * b if isinstance(embs, str) else list(embs)
        big: dict[str, Any] = {TASK: [t for t in tasks for _ in range(n)],
                               EMBODIMENT: [e for e in embs for _ in range(n)]}
        # copy 0 of each row is the observation as it is; copies 1.. are shifted and jittered
        st = state.repeat_interleave(n, 0)  # (B*n, P)
        noise = torch.from_numpy(self._rng.standard_normal(st.shape).astype(np.float32))
        noise[::n] = 0.0
        stats = policy.stats  # (a copy: read once)
        std = torch.zeros_like(st)
        for i, e in enumerate(big[EMBODIMENT]):
            s = stats[e][OBS_STATE]["std"]
            std[i, : s.shape[0]] = torch.from_numpy(np.maximum(s, 1e-6))
        big[OBS_STATE] = st + self.state_jitter * std * noise
        shifts = self._rng.integers(-self.shift_px, self.shift_px + 1, size=(b * n, 2))
        shifts[::n] = 0
        for cam in policy.config.cameras:
            key = image_key(cam)
            im = torch.as_tensor(batch[key]).repeat_interleave(n, 0)  # (B*n, 3, S, S)
            big[key] = _shift_images(im, shifts)
        if features:
            cond, row_embs, feats = policy.encode_with_features(big)
            feats = {m: f[::n] for m, f in feats.items()}  # copy 0: the observation as given
        else:
            (cond, row_embs), feats = policy.encode(big), None
        dis = np.zeros(b, dtype=np.float64)
        means: list[np.ndarray | None] = [None] * b
        for emb, ix in _rows_by_embodiment(row_embs, cond.device).items():
            x = policy.heads[emb].predict(cond[ix])  # (m, H, D) normalized
            rows = ix.cpu().numpy() // n
            for r in np.unique(rows):
                xr = x[torch.from_numpy(np.flatnonzero(rows == r))]  # (n, H, D)
                dis[r] = float(xr.var(dim=0, unbiased=False).mean().sqrt())
                means[r] = policy.normalizer.unnormalize(xr.mean(0), emb, ACTION).float().cpu().numpy()
        return dis, _stack(means), self._features(feats, batch), list(row_embs[::n])

    def _features(self, feats: Mapping[str, Any] | None, batch: Mapping[str, Any]
                  ) -> dict[str, np.ndarray] | None:
        """The encoder's modality features (float64 numpy) plus the ``pixels`` thumbnails of the batch."""
        return None if feats is None else {**_numpy(feats), "pixels": thumbnails(self.policy, batch)}

    def _table(self, head_d: np.ndarray, feats: Mapping[str, np.ndarray] | None, embs: Sequence[str]
               ) -> dict[str, np.ndarray]:
        """Per-row arrays: ``score``, ``disagreement``, ``head_disagreement``, ``head_score`` and, when
        combined, the normalized parts (``head``, ``language``, ``image``, ``state``; NaN where an embodiment
        has no density statistics), ``density`` (their largest modality) and ``density_score``."""
        out = {"head_disagreement": head_d, "head_score": self.score_from(head_d)}
        if not self.combined or feats is None:
            out.update(score=out["head_score"], disagreement=head_d)
            return out
        assert self.feature_density is not None and self.calibration is not None
        head_n = head_d / max(float(self.calibration["head_p99"]), EPS)
        dens = self.feature_density.normalized(feats, embs)
        combined, parts = _combine(head_n, dens)
        density = _largest_modality(dens)  # NaN: no statistics
        out.update(parts, score=1.0 / (1.0 + combined), disagreement=combined, density=density,
                   density_score=1.0 / (1.0 + density))
        return out

    def _collect(self, source: Any, max_frames: int | None, progress: bool, features: bool
                 ) -> tuple[np.ndarray, dict[str, np.ndarray] | None, list[str]]:
        """Head disagreements (N,), modality features {m: (N, F)} (when ``features``) and embodiments of many
        frames, batch by batch."""
        ds, fs, es = [], [], []
        for batch in _batches(self.policy, source, self.batch_size, max_frames, self.seed, progress):
            d, _, f, e = self._evaluate(batch, features)
            ds.append(d)
            fs.append(f)
            es.extend(e)
        if not features:
            feats = None
        elif ds:
            feats = {m: np.concatenate([f[m] for f in fs]) for m in MODALITIES}
        else:
            feats = {m: np.zeros((0, w)) for m, w in feature_dims(self.policy).items()}
        return (np.concatenate(ds) if ds else np.zeros(0)), feats, es

    def score_table(self, source: Any, max_frames: int | None = None, progress: bool = False
                    ) -> dict[str, np.ndarray]:
        """Per-frame arrays (see ``_table``) of many frames: the combined score and each component alone, from
        one pass (what ``benchmarks/confidence.py`` compares)."""
        d, feats, embs = self._collect(source, max_frames, progress, features=self.combined)
        return self._table(d, feats, embs)

    def scores(self, source: Any, max_frames: int | None = None, progress: bool = False) -> np.ndarray:
        """Scores of many frames: a ChunkDataset (or any indexable of items), frame dicts or a batch."""
        return self.score_table(source, max_frames, progress)["score"]

    # -- calibration -----------------------------------------------------------------------------
    def calibrate(self, frames: Any, percentile: float = 5.0, max_frames: int | None = 512,
                  progress: bool = True) -> float:
        """Set the threshold to the ``percentile``-th percentile of the scores of in-distribution frames
        (validation frames the policy did not train on): about ``100 - percentile`` % of such frames
        proceed. With ``density``, first fit the feature-density statistics on the same frames; their own
        density parts are cross-fitted (``vlaforge.online.density``) so the threshold is not biased by the
        fit. Returns the threshold."""
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"calibrate.percentile: expected a value in [0, 100], got {percentile!r}")
        d, feats, embs = self._collect(frames, max_frames, progress, features=self.density)
        if d.size == 0:
            raise ValueError("calibrate: expected at least one frame, got none")
        qs = (0, 1, 5, 25, 50, 75, 95, 99, 100)
        head_p99 = float(np.percentile(d, 99))
        s = self.score_from(d)
        thresholds = {"head": float(np.percentile(s, percentile))}
        cal: dict[str, Any] = {"percentile": float(percentile), "frames": int(d.size), "method": self.method,
                               "head_p99": head_p99,
                               "head_disagreement_percentiles": {str(q): float(np.percentile(d, q))
                                                                 for q in qs}}
        self.feature_density = None
        if self.density:
            assert feats is not None
            self.feature_density, cross = FeatureDensity.fit(feats, embs, self.shrinkage, self.folds,
                                                             self.seed)
            if self.feature_density is not None:
                cal["density"] = self.feature_density.summary()
                combined, _ = _combine(d / max(head_p99, EPS), cross)
                density = _largest_modality(cross)
                thresholds["density"] = float(np.nanpercentile(1.0 / (1.0 + density), percentile))
                s = 1.0 / (1.0 + combined)
                thresholds["combined"] = float(np.percentile(s, percentile))
        cal.update(thresholds=thresholds, score_percentiles={str(q): float(np.percentile(s, q)) for q in qs},
                   score_mean=float(s.mean()))
        self.calibration = cal
        self.threshold = _calibrated_threshold(cal, self.combined, None)
        return self.threshold  # type: ignore[return-value]

    # -- persistence -----------------------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in SETTINGS}

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "head": self.policy.config.head, **self._settings(),
                "calibration": self.calibration,
                "score": "higher = more confident; proceed when score >= threshold"}

    def replace(self, **overrides: Any) -> "ConfidenceEstimator":
        """A new estimator for the same policy with these settings changed (e.g. ``n_samples``), keeping the
        calibration and the threshold; switching ``density`` on or off picks the threshold calibrated for
        that score."""
        kw = {**self._settings(), "batch_size": self.batch_size, **overrides}
        combined = bool(kw["density"]) and self.feature_density is not None
        if "threshold" not in overrides and combined != self.combined:
            kw["threshold"] = _calibrated_threshold(self.calibration, combined, self.threshold)
        est = type(self)(self.policy, **kw)
        est._adopt(self.calibration, self.feature_density, "replace")
        return est

    def _adopt(self, calibration: dict[str, Any] | None, density: FeatureDensity | None, source: str) -> None:
        if calibration and calibration.get("method", self.method) != self.method:
            raise ValueError(f"{source}: calibrated with method {calibration['method']!r}, the estimator "
                             f"uses {self.method!r}: calibrate again")
        if density is not None and "head_p99" not in (calibration or {}):
            raise ValueError(f"{source}: density statistics without the head's calibration (head_p99)")
        self.calibration, self.feature_density = calibration, density

    def save(self, checkpoint_dir: str | os.PathLike) -> Path:
        """Write ``confidence.json`` (and, with density statistics, ``confidence.safetensors`` first) into the
        checkpoint directory, each atomically; the JSON records the SHA-256 of the tensors it goes with
        (``vlaforge.online.confidence_file``). ``Policy.load`` ignores both; ``Policy.save`` to the same
        directory replaces the directory and drops them."""
        return confidence_file.write(checkpoint_dir, self.to_dict(), self.feature_density)

    @classmethod
    def load(cls, policy: Any, checkpoint_dir: str | os.PathLike, **overrides: Any) -> "ConfidenceEstimator":
        """The estimator saved beside a checkpoint (``overrides`` replace saved settings)."""
        path, meta, density = confidence_file.read(policy, checkpoint_dir, feature_dims(policy))
        kw = {k: meta[k] for k in SETTINGS if k in meta}
        kw.setdefault("density", False)  # version 1
        saved = bool(kw["density"]) and density is not None  # the score the saved threshold is for
        kw.update(overrides)
        combined = bool(kw["density"]) and density is not None
        if "threshold" not in overrides and combined != saved:
            kw["threshold"] = _calibrated_threshold(meta.get("calibration"), combined, meta["threshold"])
        est = cls(policy, **kw)
        est._adopt(meta.get("calibration"), density, str(path))
        return est


def _calibrated_threshold(calibration: Mapping[str, Any] | None, combined: bool, default: float | None
                          ) -> float | None:
    """The threshold calibrated for the combined score or for the head's own one (``default`` without)."""
    thresholds = (calibration or {}).get("thresholds")
    if not thresholds:
        return default
    return thresholds["combined"] if combined and "combined" in thresholds else thresholds["head"]


def _largest_modality(parts: Mapping[str, np.ndarray]) -> np.ndarray:
    """Row-wise largest normalized density part over the modalities (NaN only where every part is NaN)."""
    return np.fmax.reduce(np.stack([parts[m] for m in MODALITIES]), axis=0)


def _combine(head: np.ndarray, density: Mapping[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Normalized parts -> their row-wise max (NaN density parts are skipped; a NaN head spread, from
    non-finite outputs, counts as infinitely uncertain) and the parts, head first."""
    parts = {"head": np.where(np.isnan(head), np.inf, head), **density}
    return np.fmax.reduce(np.stack(list(parts.values())), axis=0), parts


# ------------------------------------------------------------------------------------------------ helpers

def _rows_by_embodiment(embs: Sequence[str], device: Any) -> dict[str, Any]:
    import torch

    rows: dict[str, list[int]] = {}
    for i, e in enumerate(embs):
        rows.setdefault(e, []).append(i)
    return {e: torch.tensor(ix, device=device) for e, ix in rows.items()}


def _bin_centres(head: Any, device: Any):
    import torch

    idx = torch.arange(head.num_bins, device=device)
    return head.from_bins(idx[:, None]).T  # (D, bins): centre of bin k in dimension d


def _stack(rows: Sequence[np.ndarray | None]) -> np.ndarray:
    return np.stack([r for r in rows])  # type: ignore[misc]


def feature_dims(policy: Any) -> dict[str, int]:
    """The width of each density part's features: ``Policy.feature_dims()`` plus the ``pixels`` thumbnails."""
    side = min(PIXEL_GRID, policy.config.image_size)
    return {**policy.feature_dims(), "pixels": len(policy.config.cameras) * 3 * side * side}


def thumbnails(policy: Any, batch: Mapping[str, Any]) -> np.ndarray:
    """A batch's camera images -> (B, cameras * 3 * G * G) float64 in [0, 1]: each image (uint8 0-255 or float
    0-1, (B, 3, S, S)) averaged over G x G blocks, G = ``PIXEL_GRID`` (or S, for smaller images)."""
    import torch
    import torch.nn.functional as F

    side = min(PIXEL_GRID, policy.config.image_size)
    out = []
    for cam in policy.config.cameras:
        key = image_key(cam)
        if key not in batch:
            raise KeyError(f"{key}: missing from the batch; the policy reads cameras "
                           f"{list(policy.config.cameras)}")
        im = torch.as_tensor(batch[key])
        if im.ndim != 4 or im.shape[1] != 3:
            raise ValueError(f"{key}: expected images (B, 3, S, S), got shape {tuple(im.shape)}")
        x = im.double() / 255.0 if im.dtype == torch.uint8 else im.double()
        out.append(F.adaptive_avg_pool2d(x.cpu(), side).flatten(1))
    return torch.cat(out, 1).numpy()


def _numpy(feats: Mapping[str, Any] | None) -> dict[str, np.ndarray] | None:
    """{modality: (B, F) tensor} -> float64 arrays on the CPU."""
    return None if feats is None else {m: f.double().cpu().numpy() for m, f in feats.items()}


def _shift_images(im: Any, shifts: np.ndarray) -> Any:
    """(N, 3, S, S) images, (N, 2) integer (dy, dx): replicate-border shift (the training augmentation)."""
    import torch

    n, _, h, w = im.shape
    ar_h, ar_w = torch.arange(h), torch.arange(w)
    dy = torch.from_numpy(shifts[:, 0])[:, None]
    dx = torch.from_numpy(shifts[:, 1])[:, None]
    rows = (ar_h[None] + dy).clamp(0, h - 1)  # (N, S)
    cols = (ar_w[None] + dx).clamp(0, w - 1)  # (N, S)
    out = torch.gather(im, 2, rows[:, None, :, None].expand(n, im.shape[1], h, w))
    return torch.gather(out, 3, cols[:, None, None, :].expand(n, im.shape[1], h, w))


def _policy_keys(policy: Any) -> list[str]:
    return [image_key(c) for c in policy.config.cameras] + [OBS_STATE, TASK, EMBODIMENT]


def _batches(policy: Any, source: Any, batch_size: int, max_frames: int | None, seed: int,
             progress: bool = False) -> Iterator[dict[str, Any]]:
    """Batches (only the keys the policy reads) from a dataset, a list of frame dicts or one batch dict."""
    import torch

    keys = _policy_keys(policy)
    if isinstance(source, Mapping):  # already a batch
        n = len(source[OBS_STATE])
        idx = np.arange(n) if max_frames is None or n <= max_frames else np.sort(
            np.random.default_rng(seed).choice(n, max_frames, replace=False))
        for i in range(0, len(idx), batch_size):
            sel = idx[i:i + batch_size]
            out = {}
            for k in keys:
                if k not in source:
                    continue
                v = source[k]
                out[k] = [v[j] for j in sel] if isinstance(v, (list, tuple)) else torch.as_tensor(v)[sel]
            yield out
        return
    n = len(source)
    idx = np.arange(n) if max_frames is None or n <= max_frames else np.sort(
        np.random.default_rng(seed).choice(n, max_frames, replace=False))
    from tqdm import tqdm

    bar = tqdm(total=len(idx), desc="confidence scores", unit="frame", disable=not progress,
               dynamic_ncols=True)
    try:
        for i in range(0, len(idx), batch_size):
            items = [source[int(j)] for j in idx[i:i + batch_size]]
            if items and all(isinstance(it, Mapping) and _is_frame(it, policy) for it in items):
                parts = [policy.frame_to_batch(it) for it in items]  # uint8 frame dicts
            else:
                parts = [{k: (v if isinstance(v, str) else torch.as_tensor(v)[None]) for k, v in it.items()
                          if k in keys} for it in items]
            out: dict[str, Any] = {}
            for k in keys:
                vals = [p[k] for p in parts if k in p]
                if len(vals) != len(parts):
                    continue
                if isinstance(vals[0], str):
                    out[k] = list(vals)
                elif isinstance(vals[0], list):
                    out[k] = [x for v in vals for x in v]
                else:
                    out[k] = torch.cat(vals, 0)
            bar.update(len(items))
            yield out
    finally:
        bar.close()


def _is_frame(item: Mapping[str, Any], policy: Any) -> bool:
    """A DESIGN frame dict (uint8 (H, W, 3) images) rather than a dataset item ((3, H, W) floats)."""
    im = item.get(image_key(policy.config.cameras[0]))
    return im is not None and np.asarray(im).ndim == 3 and np.asarray(im).shape[-1] == 3 and \
        np.asarray(im).dtype == np.uint8
