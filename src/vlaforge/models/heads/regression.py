"""Regression head: one linear readout per chunk step, L1 loss."""

from __future__ import annotations

import torch
from torch import nn

from vlaforge.models.heads.base import ActionHead, masked_mean


class RegressionHead(ActionHead):
    name = "regression"

    def __init__(self, d_model, chunk_size, action_dim, low, high, config):
        super().__init__(d_model, chunk_size, action_dim, low, high, config)
        self.proj = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, action_dim))

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self.proj(cond)  # (B, H, D)

    def loss(self, cond, actions, pad_mask):
        per_step = (self(cond) - actions).abs().mean(-1)  # (B, H)
        return masked_mean(per_step, pad_mask)

    def sample(self, cond, n=1, generator=None):
        return self(cond).unsqueeze(1).expand(-1, n, -1, -1)  # (B, n, H, D): deterministic

    def predict(self, cond, generator=None):
        return self(cond)
