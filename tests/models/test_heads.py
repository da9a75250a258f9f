"""Every head: shapes, finite gradients on every trainable parameter, padding ignored, and it learns a task
that needs both vision and language."""

import numpy as np
import pytest
import torch

from tests.conftest import uniform_stats
from vlaforge import presets, synthetic
from vlaforge.config import EmbodimentSpec
from vlaforge.policy import Policy

HEADS = ["regression", "tokens", "flow", "diffusion"]


def tiny(head, **kw):
    return presets.get("tiny").replace(head=head, **kw)


def batch_for(cfg, n=6, seed=0):
    rng = np.random.default_rng(seed)
    return synthetic.make_batch(n, cfg.chunk_size, 4, 4, cfg.image_size, rng)


@pytest.mark.parametrize("head", HEADS)
def test_shapes_and_finite_gradients(head):
    torch.manual_seed(0)
    cfg = tiny(head)
    policy = Policy(cfg, {"sawyer": uniform_stats(4, 4)})
    loss, info = policy.compute_loss(batch_for(cfg))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert set(info) == {"loss", "loss/sawyer"} and all(isinstance(v, float) for v in info.values())
    loss.backward()
    for name, p in policy.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    obs = {"observation.images.corner": np.zeros((64, 64, 3), np.uint8), "observation.state": np.zeros(4, np.float32),
           "task": "trace the upper curve"}
    chunk = policy.predict_chunk(obs)
    assert chunk.shape == (cfg.chunk_size, 4) and chunk.dtype == np.float32 and np.isfinite(chunk).all()
    samples = policy.sample_chunks(obs, n=5)
    assert samples.shape == (5, cfg.chunk_size, 4) and np.isfinite(samples).all()
    if head in ("flow", "diffusion", "tokens"):
        assert samples.std(0).max() > 0, "a generative head gave five identical samples"


@pytest.mark.parametrize("head", HEADS)
def test_padded_steps_never_contribute(head):
    torch.manual_seed(0)
    cfg = tiny(head)
    policy = Policy(cfg, {"sawyer": uniform_stats(4, 4)})
    batch = batch_for(cfg)
    batch["action_is_pad"][:, 5:] = True
    torch.manual_seed(1)
    a, _ = policy.compute_loss(batch)
    changed = dict(batch, action=batch["action"].copy())
    changed["action"][:, 5:] = 1e3  # garbage past the episode end
    torch.manual_seed(1)
    b, _ = policy.compute_loss(changed)
    assert torch.equal(a, b)
    changed["action"][:, 2] += 0.5  # a real step does matter
    torch.manual_seed(1)
    c, _ = policy.compute_loss(changed)
    assert not torch.equal(a, c)


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


STEPS = {"regression": 400, "tokens": 250, "flow": 600, "diffusion": 500}


@pytest.mark.parametrize("head", HEADS)
def test_head_learns_vision_and_language(head):
    policy, cfg = _train(head, STEPS[head])
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
