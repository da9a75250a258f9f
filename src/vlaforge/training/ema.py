"""Exponential moving average of a model's weights: what validation uses and what gets saved as the policy.

    ema = EMA(policy, decay=0.999)
    ema.update(policy)          # after every optimizer step
    ema.model                   # a Policy with the averaged weights (eval mode, no gradients)

The decay ramps up with the number of updates n: ``min(decay, (1 + n) / (10 + n))``, so early weights are not
overweighted. Every floating-point parameter and buffer is averaged, frozen ones included: a frozen tensor's
average converges to its (constant) value, so the EMA of a model whose encoders froze mid-run matches them.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        if not 0 <= decay < 1:
            raise ValueError(f"ema_decay: expected a float in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update uses."""
        if self.decay == 0:
            return 0.0
        n = self.updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        ema_t, src_t = _float_tensors(self.model), _float_tensors(model)
        if len(ema_t) != len(src_t):
            raise ValueError(f"EMA.update: expected a model with {len(ema_t)} float tensors, "
                             f"got {len(src_t)}")
        if d == 0:
            torch._foreach_copy_(ema_t, src_t)
        else:
            torch._foreach_lerp_(ema_t, src_t, 1.0 - d)  # ema += (1 - d) * (x - ema)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, tensors, updates: int) -> None:
        if hasattr(self.model, "load_weights"):  # a Policy: strict, with a clear error on a mismatch
            self.model.load_weights(tensors, source="ema.safetensors")
        else:
            self.model.load_state_dict(tensors)
        self.updates = int(updates)


def _float_tensors(model: nn.Module) -> list[torch.Tensor]:
    out = [p for p in model.parameters() if p.is_floating_point()]
    out += [b for b in model.buffers() if b.is_floating_point()]
    return out
