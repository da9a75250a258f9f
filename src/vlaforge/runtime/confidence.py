"""How sure is the policy about this observation? A score per frame, a threshold, a go / no-go.

    est = ConfidenceEstimator(policy, n_samples=5)
    est.calibrate(val_dataset, percentile=5.0)     # threshold from in-distribution frames
    c = est.estimate(obs)                          # Confidence(score, disagreement, proceed, mean_chunk)
    est.save(checkpoint_dir)                       # confidence.json beside the policy
    est = ConfidenceEstimator.load(policy, checkpoint_dir)
    Controller(policy, safety, confidence=est, on_low_confidence=ask_a_person)

Score convention: **higher = more confident**, in [0, 1]. ``disagreement`` is the raw uncertainty the score
comes from (>= 0, lower = more confident). ``proceed`` is ``score >= threshold`` (always True while no
threshold is set: an uncalibrated estimator never stops the robot).

Methods (``method="auto"`` picks by head):

- flow, diffusion -> ``samples``: d = RMS over (H, D) of the std across ``n_samples`` chunks sampled in
  ONE batched head call on one encoding of the observation, in normalized action units; score ``1 / (1 + d)``.
- tokens -> ``entropy``: d = mean entropy (nats) of the per-step, per-dimension bin distributions;
  score ``1 - d / log(num_bins)`` (1: one-hot, 0: uniform).
- regression -> ``tta``: d = the same RMS spread over ``n_samples`` test-time-augmented copies (copy 0 as
  observed; the others with the image shifted by up to ``shift_px`` pixels, as in training, and the state
  jittered by ``state_jitter`` training stds), in one batched forward; score ``1 / (1 + d)``.

A regression head is deterministic: its "samples" are identical, so sample disagreement would always say
"certain". The test-time-augmentation ensemble asks instead whether the prediction is stable under the
perturbations the policy was trained to be invariant to (the dataset's random shift); off-distribution
inputs tend to sit where the learned map is less flat. It is a weaker signal than a generative head's own
spread and costs ``n_samples`` full forward passes (the samples method encodes once and only re-runs the
head); see docs/confidence_and_adaptation.md. ``tta`` may be chosen for any head.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from vlaforge.types import ACTION, EMBODIMENT, OBS_STATE, TASK, image_key

CONFIDENCE_FILE = "confidence.json"
FORMAT_VERSION = 1
METHODS = ("auto", "samples", "entropy", "tta")


class ConfidenceNotSupported(ValueError):
    """The chosen method does not apply to this policy's head."""


@dataclass(frozen=True)
class Confidence:
    """One verdict. ``score``: higher = more confident, in [0, 1]; ``mean_chunk`` (H, D) in physical units."""

    score: float
    disagreement: float
    proceed: bool
    mean_chunk: np.ndarray = field(repr=False)
    method: str = ""
    threshold: float | None = None


def auto_method(head: str) -> str:
    return {"flow": "samples", "diffusion": "samples", "tokens": "entropy", "regression": "tta"}[head]


class ConfidenceEstimator:
    """Scores observations for one policy. Not thread-safe (one estimator per control loop)."""

    def __init__(self, policy: Any, n_samples: int = 5, threshold: float | None = None, method: str = "auto",
                 shift_px: int = 4, state_jitter: float = 0.05, seed: int = 0, batch_size: int = 32):
        if method not in METHODS:
            raise ValueError(f"ConfidenceEstimator.method: expected one of {METHODS}, got {method!r}")
        head = policy.config.head
        method = auto_method(head) if method == "auto" else method
        if method == "samples" and head not in ("flow", "diffusion"):
            raise ConfidenceNotSupported(
                f"method 'samples' needs a generative head (flow, diffusion), the policy has {head!r}: "
                f"its samples {'are identical' if head == 'regression' else 'are per-bin draws'}; use "
                f"{auto_method(head)!r} (method='auto')")
        if method == "entropy" and head != "tokens":
            raise ConfidenceNotSupported(f"method 'entropy' needs the tokens head, the policy has {head!r}")
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
        self.policy = policy
        self.method = method
        self.n_samples = int(n_samples)
        self.threshold = None if threshold is None else float(threshold)
        self.shift_px = int(shift_px)
        self.state_jitter = float(state_jitter)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.calibration: dict[str, Any] | None = None
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        import torch

        device = getattr(self.policy, "device", "cpu")
        self._gen = torch.Generator(device=device).manual_seed(int(seed))  # on the policy's device
        self._rng = np.random.default_rng(int(seed))

    # -- scoring ---------------------------------------------------------------------------------
    def score_from(self, disagreement: np.ndarray) -> np.ndarray:
        """The score (higher = more confident, in [0, 1]) for raw disagreements."""
        d = np.asarray(disagreement, dtype=np.float64)
        if self.method == "entropy":
            return np.clip(1.0 - d / math.log(self.policy.config.num_bins), 0.0, 1.0)
        return 1.0 / (1.0 + d)

    def estimate(self, obs: Mapping[str, Any]) -> Confidence:
        """One frame dict -> its :class:`Confidence` (the controller's hook calls this)."""
        d, mean = self.evaluate(self.policy.frame_to_batch(obs))
        score = float(self.score_from(d)[0])
        proceed = self.threshold is None or score >= self.threshold
        return Confidence(score, float(d[0]), bool(proceed), mean[0], self.method, self.threshold)

    __call__ = estimate

    def evaluate(self, batch: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """A batch (B rows) -> disagreement (B,) and mean chunk (B, H, D) in physical units."""
        import torch

        policy = self.policy
        was_training = policy.training
        policy.eval()
        try:
            with torch.inference_mode():
                if self.method == "tta":
                    return self._tta(batch)
                cond, embs = policy.encode(batch)  # (B, H, d)
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
                return dis, _stack(means)
        finally:
            policy.train(was_training)

    def _tta(self, batch: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """n augmented copies of every row in one forward: spread of their predictions."""
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
        cond, row_embs = policy.encode(big)
        dis = np.zeros(b, dtype=np.float64)
        means: list[np.ndarray | None] = [None] * b
        for emb, ix in _rows_by_embodiment(row_embs, cond.device).items():
            x = policy.heads[emb].predict(cond[ix])  # (m, H, D) normalized
            rows = ix.cpu().numpy() // n
            for r in np.unique(rows):
                xr = x[torch.from_numpy(np.flatnonzero(rows == r))]  # (n, H, D)
                dis[r] = float(xr.var(dim=0, unbiased=False).mean().sqrt())
                means[r] = policy.normalizer.unnormalize(xr.mean(0), emb, ACTION).float().cpu().numpy()
        return dis, _stack(means)

    def scores(self, source: Any, max_frames: int | None = None, progress: bool = False) -> np.ndarray:
        """Scores of many frames: a ChunkDataset (or any indexable of items), frame dicts or a batch."""
        out = [self.score_from(self.evaluate(b)[0]) for b in
               _batches(self.policy, source, self.batch_size, max_frames, self.seed, progress)]
        return np.concatenate(out) if out else np.zeros(0)

    # -- calibration -----------------------------------------------------------------------------
    def calibrate(self, frames: Any, percentile: float = 5.0, max_frames: int | None = 512,
                  progress: bool = True) -> float:
        """Set the threshold to the ``percentile``-th percentile of the scores of in-distribution frames
        (validation frames the policy did not train on): about ``100 - percentile`` % of such frames
        proceed. Returns the threshold."""
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"calibrate.percentile: expected a value in [0, 100], got {percentile!r}")
        s = self.scores(frames, max_frames=max_frames, progress=progress)
        if s.size == 0:
            raise ValueError("calibrate: expected at least one frame, got none")
        self.threshold = float(np.percentile(s, percentile))
        qs = (0, 1, 5, 25, 50, 75, 95, 99, 100)
        self.calibration = {"percentile": float(percentile), "frames": int(s.size),
                            "score_percentiles": {str(q): float(np.percentile(s, q)) for q in qs},
                            "score_mean": float(s.mean())}
        return self.threshold

    # -- persistence -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "head": self.policy.config.head, "method": self.method,
                "n_samples": self.n_samples, "threshold": self.threshold, "shift_px": self.shift_px,
                "state_jitter": self.state_jitter, "seed": self.seed, "calibration": self.calibration,
                "score": "higher = more confident; proceed when score >= threshold"}

    def save(self, checkpoint_dir: str | os.PathLike) -> Path:
        """Write ``confidence.json`` into the checkpoint directory (atomically). ``Policy.load`` ignores it;
        note that ``Policy.save`` to the same directory replaces the directory and drops it."""
        directory = Path(checkpoint_dir)
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory}: expected a checkpoint directory, found none")
        path = directory / CONFIDENCE_FILE
        fd, tmp = tempfile.mkstemp(prefix=f".{CONFIDENCE_FILE}.", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_dict(), f, indent=2)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, policy: Any, checkpoint_dir: str | os.PathLike, **overrides: Any) -> "ConfidenceEstimator":
        """The estimator saved beside a checkpoint (``overrides`` replace saved settings)."""
        path = Path(checkpoint_dir) / CONFIDENCE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no calibrated confidence estimator here (ConfidenceEstimator"
                                    f".calibrate + save, or benchmarks/confidence.py --save-calibration)")
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: expected JSON, got a parse error: {e}") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: expected format_version {FORMAT_VERSION}, "
                             f"got {meta.get('format_version')!r}")
        if meta.get("head") != policy.config.head:
            raise ValueError(f"{path}: calibrated for a {meta.get('head')!r} head, the policy has "
                             f"{policy.config.head!r}")
        kw = {k: meta[k] for k in ("n_samples", "threshold", "method", "shift_px", "state_jitter", "seed")}
        kw.update(overrides)
        est = cls(policy, **kw)
        est.calibration = meta.get("calibration")
        return est


def has_calibration(checkpoint_dir: str | os.PathLike) -> bool:
    return (Path(checkpoint_dir) / CONFIDENCE_FILE).is_file()


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
