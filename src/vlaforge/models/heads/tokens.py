"""Token head: every action dimension quantized into ``num_bins`` uniform bins over the data's normalized
range, predicted with cross-entropy; decoded by bin centres (argmax for ``predict``, sampling for
``sample``)."""

from __future__ import annotations

import torch
from torch import nn

from vlaforge.models.heads.base import ActionHead, masked_mean


class TokenHead(ActionHead):
    name = "tokens"

    def __init__(self, d_model, chunk_size, action_dim, low, high, config):
        super().__init__(d_model, chunk_size, action_dim, low, high, config)
        self.num_bins = int(config.settings(self.name).num_bins)  # TokensSettings
        self.proj = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(),
                                  nn.Linear(d_model, action_dim * self.num_bins))

    def logits(self, cond: torch.Tensor) -> torch.Tensor:
        b, h, _ = cond.shape
        return self.proj(cond).view(b, h, self.action_dim, self.num_bins)  # (B, H, D, bins)

    def _span(self) -> torch.Tensor:
        return (self.high - self.low).clamp_min(1e-6)

    def to_bins(self, actions: torch.Tensor) -> torch.Tensor:
        idx = torch.floor((actions - self.low) / self._span() * self.num_bins)
        return idx.clamp(0, self.num_bins - 1).long()  # (B, H, D)

    def from_bins(self, idx: torch.Tensor) -> torch.Tensor:
        return self.low + (idx.float() + 0.5) * self._span() / self.num_bins

    def loss(self, cond, actions, pad_mask):
        logits = self.logits(cond)
        ce = nn.functional.cross_entropy(logits.permute(0, 3, 1, 2), self.to_bins(actions), reduction="none")
        return masked_mean(ce.mean(-1), pad_mask)  # ce: (B, H, D)

    def entropy(self, cond: torch.Tensor) -> torch.Tensor:
        """(B,) mean entropy (nats) of the bin distributions: a confidence signal."""
        logp = torch.log_softmax(self.logits(cond), dim=-1)
        return -(logp.exp() * logp).sum(-1).mean(dim=(1, 2))

    def predict(self, cond, generator=None):
        return self.from_bins(self.logits(cond).argmax(-1))

    def sample(self, cond, n=1, generator=None):
        probs = torch.softmax(self.logits(cond), dim=-1)  # (B, H, D, bins)
        b, h, d, k = probs.shape
        idx = torch.multinomial(probs.reshape(-1, k), n, replacement=True, generator=generator)  # (B*H*D, n)
        idx = idx.view(b, h, d, n).permute(0, 3, 1, 2)  # (B, n, H, D)
        return self.from_bins(idx)
