"""Flow-matching head: learn the velocity that carries Gaussian noise to the action chunk along a straight
path, x_t = (1 - t) * noise + t * action; sample with ``FlowSettings.steps`` Euler steps from t = 0 to 1."""

from __future__ import annotations

import torch

from vlaforge.models.heads.base import ActionHead, ChunkDenoiser, masked_mean, repeat_for_samples


class FlowHead(ActionHead):
    name = "flow"
    generative = True

    def __init__(self, d_model, chunk_size, action_dim, low, high, config):
        super().__init__(d_model, chunk_size, action_dim, low, high, config)
        self.steps = self.sampling_steps = int(config.settings(self.name).steps)  # FlowSettings
        self.net = ChunkDenoiser(d_model, chunk_size, action_dim, config.head_width, config.head_depth)

    def loss(self, cond, actions, pad_mask):
        b = actions.shape[0]
        noise = torch.randn_like(actions)
        t = torch.rand(b, device=actions.device)
        xt = (1 - t)[:, None, None] * noise + t[:, None, None] * actions
        v = self.net(xt, t, self.net.prepare(cond), pad_mask)
        per_step = ((v - (actions - noise)) ** 2).mean(-1)  # (B, H)
        return masked_mean(per_step, pad_mask)

    def sample(self, cond, n=1, generator=None):
        b, h, _ = cond.shape
        x = torch.randn(b * n, h, self.action_dim, device=cond.device, generator=generator)
        return self.sample_from(repeat_for_samples(cond, n), x).view(b, n, h, self.action_dim)

    def sample_from(self, cond, noise):
        feat = self.net.prepare(cond)  # (N, H, w)
        x, dt = noise, 1.0 / self.steps
        for i in range(self.steps):
            t = torch.full((noise.shape[0],), i * dt, device=cond.device)
            x = x + dt * self.net(x, t, feat)
        return self.clamp_range(x)
