"""Diffusion head: DDPM training (``DiffusionSettings.train_steps`` noise levels, squared-cosine schedule) and
deterministic DDIM sampling with ``sample_steps`` steps.

The network predicts the clean chunk x0 rather than the noise: with a small denoiser and few sampling steps it
learns far faster on our tasks (after the 500 steps of the head-learning test, noise prediction was off by
0.35-0.50 per action, x0 prediction by under 0.01). DDIM needs only the implied noise, which follows from x0.
"""

from __future__ import annotations

import math

import torch

from vlaforge.models.heads.base import ActionHead, ChunkDenoiser, masked_mean, repeat_for_samples


def cosine_alpha_bars(steps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Cumulative products of (1 - beta_t) for the squared-cosine schedule, (steps,)."""
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = [min(1 - f((i + 1) / steps) / f(i / steps), max_beta) for i in range(steps)]
    return torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), 0).float()


class DiffusionHead(ActionHead):
    name = "diffusion"
    generative = True

    def __init__(self, d_model, chunk_size, action_dim, low, high, config):
        super().__init__(d_model, chunk_size, action_dim, low, high, config)
        settings = config.settings(self.name)  # DiffusionSettings
        self.train_steps = int(settings.train_steps)
        self.sample_steps = self.sampling_steps = int(settings.sample_steps)
        self.register_buffer("alpha_bars", cosine_alpha_bars(self.train_steps), persistent=False)
        self.net = ChunkDenoiser(d_model, chunk_size, action_dim, config.head_width, config.head_depth)

    def loss(self, cond, actions, pad_mask):
        b = actions.shape[0]
        noise = torch.randn_like(actions)
        k = torch.randint(0, self.train_steps, (b,), device=actions.device)
        ab = self.alpha_bars[k][:, None, None]
        xt = ab.sqrt() * actions + (1 - ab).sqrt() * noise
        x0 = self.net(xt, k.float() / self.train_steps, self.net.prepare(cond), pad_mask)
        return masked_mean(((x0 - actions) ** 2).mean(-1), pad_mask)

    def sample(self, cond, n=1, generator=None):
        b, h, _ = cond.shape
        x = torch.randn(b * n, h, self.action_dim, device=cond.device, generator=generator)
        return self.sample_from(repeat_for_samples(cond, n), x).view(b, n, h, self.action_dim)

    def sample_from(self, cond, noise):
        feat, x, m = self.net.prepare(cond), noise, noise.shape[0]
        # DDIM (eta = 0) over an evenly spaced subsequence of the training steps, from most to least noisy
        ks = torch.linspace(self.train_steps - 1, 0, self.sample_steps).round().long().tolist()
        for i, k in enumerate(ks):
            ab = self.alpha_bars[k]
            ab_prev = self.alpha_bars[ks[i + 1]] if i + 1 < len(ks) else torch.tensor(1.0, device=x.device)
            x0 = self.clamp_range(self.net(x, torch.full((m,), k / self.train_steps, device=x.device), feat))
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()  # the noise implied by x0
            x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
        return x
