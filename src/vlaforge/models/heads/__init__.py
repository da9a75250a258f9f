"""Action heads: one file each, one registry line each."""

from __future__ import annotations

from vlaforge.models.heads.base import ActionHead
from vlaforge.models.heads.diffusion import DiffusionHead
from vlaforge.models.heads.flow import FlowHead
from vlaforge.models.heads.regression import RegressionHead
from vlaforge.models.heads.tokens import TokenHead

HEADS: dict[str, type[ActionHead]] = {
    "regression": RegressionHead,
    "tokens": TokenHead,
    "flow": FlowHead,
    "diffusion": DiffusionHead,
}


def make_head(name: str, d_model: int, chunk_size: int, action_dim: int, low, high, config) -> ActionHead:
    if name not in HEADS:
        raise ValueError(f"head: expected one of {sorted(HEADS)}, got {name!r}")
    return HEADS[name](d_model, chunk_size, action_dim, low, high, config)
