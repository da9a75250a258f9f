"""LoRA adapters (Hu et al. 2021) on a policy's weight matrices, and merging them back into plain weights.

    names = add_lora(policy, rank=8, groups=("fusion",))  # the adapters' parameter names (they train)
    ...                                                    # train: W frozen, W + (alpha / rank) B A learns
    merge_lora(policy)                                     # plain weights again: save, export, serve

Each adapted matrix ``W`` (out, in) gets ``A`` (rank, in), small random, and ``B`` (out, rank), zeros, so the
policy starts exactly where it was. They ride on ``torch.nn.utils.parametrize``, which also reaches weights
that are not ``nn.Linear`` modules (the attention's fused ``in_proj_weight``): every Linear weight and every
``in_proj_weight`` in the chosen parameter groups (``Policy.parameter_groups``) is adapted. ``merge_lora``
removes the parametrizations, leaving ``W + (alpha / rank) B A`` in place, so a merged policy has the
original's parameter names and shapes and saves as an ordinary checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize


class LoRA(nn.Module):
    """The parametrization ``W -> W + scale * B @ A``."""

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, in_features))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5), generator=generator)
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        self.scale = alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.B @ self.A).to(weight.dtype)


def _targets(policy: nn.Module, groups: Iterable[str]) -> list[tuple[nn.Module, str, str]]:
    """(module, attribute, full name) of every weight matrix to adapt in ``groups``."""
    wanted = {name for g in groups for name, _ in policy.parameter_groups()[g]}
    out = []
    for mod_name, mod in policy.named_modules():
        for attr in ("weight", "in_proj_weight"):
            full = f"{mod_name}.{attr}" if mod_name else attr
            p = mod._parameters.get(attr)
            if p is not None and p.ndim == 2 and full in wanted and (attr == "in_proj_weight"
                                                                      or isinstance(mod, nn.Linear)):
                out.append((mod, attr, full))
    return out


def add_lora(policy: nn.Module, rank: int, alpha: float | None = None, groups: Iterable[str] = ("fusion",),
             seed: int = 0) -> list[str]:
    """Add rank-``rank`` adapters (``alpha``: default ``rank``, a scale of 1) to the weight matrices of
    ``groups``. Returns the adapters' parameter names; every other parameter is left as it was."""
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"LoRA rank: expected a positive int, got {rank!r}")
    groups = tuple(groups)
    known = set(policy.parameter_groups())
    if unknown := [g for g in groups if g not in known]:
        raise ValueError(f"LoRA groups: unknown {unknown}; expected some of {sorted(known)}")
    targets = _targets(policy, groups)
    if not targets:
        raise ValueError(f"LoRA: no weight matrix to adapt in groups {list(groups)}")
    g = torch.Generator().manual_seed(seed)
    for mod, attr, _ in targets:
        w = getattr(mod, attr)
        parametrize.register_parametrization(mod, attr, LoRA(w.shape[0], w.shape[1], rank,
                                                             float(alpha or rank), g).to(w.device))
    return [n for n, _ in policy.named_parameters() if n.endswith((".A", ".B")) and ".parametrizations." in n]


def merge_lora(policy: nn.Module) -> int:
    """Fold every adapter into its weight and remove it; returns how many were merged."""
    merged = 0
    for mod in list(policy.modules()):
        if parametrize.is_parametrized(mod):
            for attr in list(mod.parametrizations):
                parametrize.remove_parametrizations(mod, attr, leave_parametrized=True)
                merged += 1
    return merged
