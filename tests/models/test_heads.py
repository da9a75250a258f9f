"""Every registered head learns a task that needs both vision and language (its shapes, gradients, padding,
save/load and confidence: tests/test_contracts.py)."""

import numpy as np
import pytest
import torch

from vlaforge import presets, synthetic
from vlaforge.config import head_names
from vlaforge.policy import Policy

HEADS = head_names()


def tiny(head, **kw):
    return presets.get("tiny").replace(head=head, **kw)


def _train(head, steps, lr=3e-3, seed=0):
    torch.manual_seed(seed)
    cfg = tiny(head)
    stats = {"sawyer": synthetic.stats_for(cfg.chunk_size, 4, 4)}
    policy = Policy(cfg, stats)
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        loss, _ = policy.compute_loss(synthetic.make_batch(32, cfg.chunk_size, 4, 4, cfg.image_size, rng))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return policy, cfg


STEPS = {"regression": 400, "tokens": 250, "flow": 600, "diffusion": 500}  # a new head must choose its own
# L1 regression at 3e-3 sometimes settles with one colour unresolved (0.24-0.34 of the case spread for seed 0
# on AVX-512, 0.02 on AVX2); at 1e-3 seeds 0-2 all land under 0.07 on AVX-512 (the limit is 0.25)
LR = {"regression": 1e-3}


@pytest.mark.parametrize("head", HEADS)
def test_head_learns_vision_and_language(head):
    policy, cfg = _train(head, STEPS[head], lr=LR.get(head, 3e-3))
    rng = np.random.default_rng(123)
    targets = {(c, s): synthetic.case_trajectory(c, s, cfg.chunk_size, 4)
               for c in synthetic.COLORS for s in synthetic.INSTRUCTIONS}
    keys = list(targets)
    spread = min(np.abs(targets[a] - targets[b]).mean() for i, a in enumerate(keys) for b in keys[i + 1:])
    gen = torch.Generator().manual_seed(0)
    errors = {}
    for (color, instr), target in targets.items():
        errs = []
        for _ in range(3):  # fresh images: square anywhere, new noise
            obs = {"observation.images.corner": synthetic.make_frame(color, cfg.image_size, rng),
                   "observation.state": rng.normal(size=4).astype(np.float32), "task": instr}
            errs.append(np.abs(policy.predict_chunk(obs, generator=gen) - target).mean())
        errors[(color, instr)] = float(np.mean(errs))
    worst = max(errors.values())
    # each case reproduced well under the distance between cases: vision and language both reach the actions
    assert worst < 0.25 * spread, f"{head}: per-case errors {errors}, spread between cases {spread:.3f}"
