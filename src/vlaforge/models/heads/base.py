"""One base class for action heads, and the chunk denoiser shared by the generative heads.

A head maps the fusion readouts ``cond`` (B, H, d) to a chunk of normalized actions (B, H, D):
- ``loss(cond, actions, pad_mask)``: a scalar; padded steps (``pad_mask`` True) never contribute.
- ``sample(cond, n, generator=None)``: (B, n, H, D) independent samples (deterministic heads repeat one).
- ``predict(cond, generator=None)``: (B, H, D), the chunk a controller executes.
- generative heads also ``sample_from(cond, noise)``: cond (N, H, d), one row per sample, and Gaussian noise
  (N, H, D) -> chunks (N, H, D), deterministically: ``sample`` draws the noise and calls it,
  ``vlaforge export`` traces it with the steps unrolled.
"""

from __future__ import annotations

import torch
from torch import nn

from vlaforge.models.encoders import timestep_embedding


def masked_mean(per_step: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of (B, H) per-step losses over the steps that are not padding."""
    if pad_mask is None:
        return per_step.mean()
    keep = (~pad_mask).to(per_step.dtype)
    return (per_step * keep).sum() / keep.sum().clamp_min(1.0)


class ActionHead(nn.Module):
    """Base class. ``low``/``high``: per-dimension range of the data in normalized units (from the stats).

    ``name``: the name the head is registered under (``vlaforge.config.HEADS``; the contract tests check it).
    ``sampling_steps``: network evaluations per sampled chunk (flow: Euler steps; diffusion: DDIM steps)."""

    name = ""
    generative = False

    def __init__(self, d_model: int, chunk_size: int, action_dim: int, low, high, config):
        super().__init__()
        self.d_model, self.chunk_size, self.action_dim = d_model, chunk_size, action_dim
        self.sampling_steps = 1
        # derived from the saved statistics, so not persisted in the weights
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32).reshape(action_dim),
                             persistent=False)
        self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32).reshape(action_dim),
                             persistent=False)

    def loss(self, cond: torch.Tensor, actions: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, cond: torch.Tensor, n: int = 1,
               generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.sample(cond, 1, generator)[:, 0]

    def clamp_range(self, x: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
        """Clamp normalized actions to the data range widened by ``margin`` times its span."""
        span = (self.high - self.low).clamp_min(1e-3)
        return torch.maximum(torch.minimum(x, self.high + margin * span), self.low - margin * span)


class ChunkDenoiser(nn.Module):
    """Predicts a velocity / noise for a noisy chunk, given time and the fusion readouts.

    x_t (B, H, D), t (B,) in [0, 1], cond features from ``prepare`` (B, H, w) -> (B, H, D).
    A small transformer over the H chunk steps keeps the chunk temporally coherent.
    """

    def __init__(self, d_model: int, chunk_size: int, action_dim: int, width: int, depth: int):
        super().__init__()
        self.width = width
        self.in_proj = nn.Linear(action_dim, width)
        self.cond_proj = nn.Linear(d_model, width)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
        self.pos = nn.Parameter(torch.randn(chunk_size, width) * 0.02)
        heads = 4 if width % 4 == 0 else 1
        layer = nn.TransformerEncoderLayer(width, heads, width * 2, 0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, action_dim))

    def prepare(self, cond: torch.Tensor) -> torch.Tensor:
        return self.cond_proj(cond) + self.pos  # (B, H, w)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond_feat: torch.Tensor,
                pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``pad_mask`` (B, H), True past the episode end: those steps are never attended to, so padding
        cannot leak into the prediction for real steps."""
        temb = self.time_mlp(timestep_embedding(t, self.width))  # (B, w)
        h = self.in_proj(x) + cond_feat + temb[:, None]
        if pad_mask is not None:
            pad_mask = pad_mask.clone()
            pad_mask[:, 0] = False  # a chunk starts at a real frame; never mask a whole row
        return self.out(self.layers(h, src_key_padding_mask=pad_mask))  # (B, H, D)


def repeat_for_samples(cond: torch.Tensor, n: int) -> torch.Tensor:
    """(B, H, d) -> (B*n, H, d), each batch element repeated n times consecutively."""
    return cond.repeat_interleave(n, dim=0)
