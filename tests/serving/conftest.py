"""A tiny real policy (regression head: deterministic, so served chunks equal in-process ones) and a
server."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import uniform_stats

TOKEN = "correct-horse-battery"


def tiny_policy(head: str = "regression", embodiments: dict | None = None):
    from vlaforge import presets
    from vlaforge.config import EmbodimentSpec
    from vlaforge.policy import Policy

    cfg = presets.get("tiny").replace(head=head)
    stats = {"sawyer": uniform_stats(4, 4)}
    if embodiments:
        cfg = cfg.replace(embodiments={**cfg.embodiments, **{e: EmbodimentSpec(p, d) for e, (p, d) in
                                                              embodiments.items()}})
        stats |= {e: uniform_stats(p, d) for e, (p, d) in embodiments.items()}
    return Policy(cfg, stats).eval()


def frame(policy, seed: int = 0, task: str = "open the drawer", embodiment: str = "sawyer") -> dict:
    """A valid observation with random content (its own seed: different frames get different chunks)."""
    rng = np.random.default_rng(seed)
    s, p = policy.config.image_size, policy.config.embodiments[embodiment].state_dim
    out = {f"observation.images.{c}": rng.integers(0, 256, (s, s, 3), dtype=np.uint8)
           for c in policy.config.cameras}
    return out | {"observation.state": rng.normal(size=p).astype(np.float32), "task": task,
                  "embodiment": embodiment}


@pytest.fixture(scope="module")
def policy():
    return tiny_policy()


@pytest.fixture
def served(policy):
    """A running server with a token; yields (RunningServer, PolicyServer)."""
    from vlaforge.serving.server import PolicyServer

    server = PolicyServer(policy, token=TOKEN, max_batch=8)
    with server.run_in_thread() as running:
        yield running, server
