"""A tiny policy trained for a few hundred steps on ``vlaforge.synthetic``, once per test process.

Shared by the confidence and adaptation tests: training runs once (cached), every test gets a
fresh copy of the trained weights so that one test's adaptation never leaks into another.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from vlaforge import presets, synthetic
from vlaforge.policy import Policy

STEPS = {"flow": 500, "tokens": 200, "regression": 200, "diffusion": 300}
BATCH = 32


def _frame(color: str, instruction: str, image_size: int, rng: np.random.Generator) -> dict:
    return {"observation.images.corner": synthetic.make_frame(color, image_size, rng),
            "observation.state": rng.normal(size=4).astype(np.float32), "task": instruction,
            "embodiment": "sawyer"}


def training_frames(n: int, image_size: int = 64, seed: int = 7) -> list[dict]:
    """Fresh frames from the training distribution (square anywhere, both colours, both instructions)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        color, instruction = str(rng.choice(list(synthetic.COLORS))), str(rng.choice(synthetic.INSTRUCTIONS))
        out.append(_frame(color, instruction, image_size, rng))
    return out


def noise_frames(n: int, image_size: int = 64, seed: int = 8) -> list[dict]:
    """Pure uniform-noise images (no square), otherwise like the training frames."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        f = _frame("red", str(rng.choice(synthetic.INSTRUCTIONS)), image_size, rng)
        f["observation.images.corner"] = rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
        out.append(f)
    return out


@functools.cache
def _trained(head: str) -> tuple[dict, object, dict]:
    torch.manual_seed(0)
    cfg = presets.get("tiny").replace(head=head)
    stats = {"sawyer": synthetic.stats_for(cfg.chunk_size, 4, 4)}
    policy = Policy(cfg, stats)
    steps, lr = STEPS[head], 3e-3
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    rng = np.random.default_rng(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; one thread is nearly as fast for this size
    try:
        for _ in range(steps):
            batch = synthetic.make_batch(BATCH, cfg.chunk_size, 4, 4, cfg.image_size, rng)
            loss, _ = policy.compute_loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    finally:
        torch.set_num_threads(threads)
    state = {k: v.detach().clone() for k, v in policy.state_dict().items()}
    return state, cfg, stats


def trained_policy(head: str = "flow") -> Policy:
    """A fresh Policy holding a copy of the cached trained weights."""
    state, cfg, stats = _trained(head)
    policy = Policy(cfg, stats)
    policy.load_state_dict(state)
    policy.eval()
    return policy
