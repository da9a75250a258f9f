"""The fusion transformer: one sequence per frame, read out by learned action queries.

Sequence: [embodiment token, language tokens, image tokens (every camera), state token, H action queries],
each with a learned modality-type embedding. The outputs at the query positions, (B, H, d), condition the
head.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

TYPE_EMBODIMENT, TYPE_LANGUAGE, TYPE_IMAGE, TYPE_STATE, TYPE_QUERY = range(5)


class Fusion(nn.Module):
    def __init__(self, d_model: int, depth: int, heads: int, chunk_size: int, mlp_ratio: float = 4.0,
                 dropout: float = 0.0):
        super().__init__()
        self.type_embed = nn.Embedding(5, d_model)
        self.queries = nn.Parameter(torch.randn(chunk_size, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, heads, int(d_model * mlp_ratio), dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, embodiment: torch.Tensor, language: torch.Tensor, images: torch.Tensor,
                state: torch.Tensor) -> torch.Tensor:
        """embodiment (B, 1, d), language (B, L, d), images (B, N, d), state (B, 1, d) -> readouts
        (B, H, d)."""
        b = embodiment.shape[0]
        te = self.type_embed.weight
        queries = self.queries.unsqueeze(0).expand(b, -1, -1)
        seq = torch.cat([embodiment + te[TYPE_EMBODIMENT], language + te[TYPE_LANGUAGE],
                         images + te[TYPE_IMAGE], state + te[TYPE_STATE], queries + te[TYPE_QUERY]],
                        dim=1)  # (B, T, d)
        # on CPU the plain (math) attention: the fused CPU flash-attention kernel's backward took a quarter of
        # a training step for these ~40-token sequences; elsewhere PyTorch chooses
        with sdpa_kernel(SDPBackend.MATH) if seq.device.type == "cpu" else contextlib.nullcontext():
            out = self.encoder(seq)
        return self.norm(out[:, -self.queries.shape[0]:])  # (B, H, d)
