"""A synthetic task where the right action chunk needs both the image and the instruction.

Four cases: a red or a blue square (anywhere in a noisy image) x two instructions. Each case has its own
trajectory, so a policy that ignores vision or language cannot fit all four. Used by the tests that show
heads learn, and by the quick demo.
"""

from __future__ import annotations

import numpy as np

from vlaforge.types import ACTION, ACTION_IS_PAD, EMBODIMENT, OBS_STATE, TASK, image_key

COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220)}
INSTRUCTIONS = ("trace the upper curve", "trace the lower curve")


def case_trajectory(color: str, instruction: str, chunk_size: int, action_dim: int) -> np.ndarray:
    """(H, D) float32 target chunk for one of the four cases."""
    c = list(COLORS).index(color)
    s = INSTRUCTIONS.index(instruction)
    t = np.linspace(0, 1, chunk_size, dtype=np.float32)[:, None]
    d = np.arange(action_dim, dtype=np.float32)[None]
    sign = 1.0 if s == 0 else -1.0
    phase = 0.0 if c == 0 else np.pi / 2
    return (0.8 * sign * np.sin(2 * np.pi * t + phase + 0.3 * d)).astype(np.float32)


def make_frame(color: str, image_size: int, rng: np.random.Generator) -> np.ndarray:
    img = rng.integers(90, 140, size=(image_size, image_size, 3), dtype=np.uint8)
    side = image_size // 4
    y, x = rng.integers(0, image_size - side, size=2)
    img[y:y + side, x:x + side] = COLORS[color]
    return img


def make_batch(n: int, chunk_size: int, action_dim: int, state_dim: int, image_size: int,
               rng: np.random.Generator, camera: str = "corner", embodiment: str = "sawyer") -> dict:
    """A training batch in the DESIGN batch layout (numpy arrays; float images in [0, 1])."""
    colors = rng.choice(list(COLORS), size=n)
    instr = rng.choice(INSTRUCTIONS, size=n)
    images = np.stack([make_frame(c, image_size, rng) for c in colors]).transpose(0, 3, 1, 2)
    return {
        image_key(camera): images.astype(np.float32) / 255.0,
        OBS_STATE: rng.normal(size=(n, state_dim)).astype(np.float32),
        ACTION: np.stack([case_trajectory(c, s, chunk_size, action_dim) for c, s in zip(colors, instr)]),
        ACTION_IS_PAD: np.zeros((n, chunk_size), dtype=bool),
        TASK: list(instr),
        EMBODIMENT: [embodiment] * n,
    }


def stats_for(chunk_size: int, action_dim: int, state_dim: int) -> dict:
    """Statistics of the synthetic data, in the policy's stats format."""
    acts = np.concatenate([case_trajectory(c, s, chunk_size, action_dim)
                           for c in COLORS for s in INSTRUCTIONS])

    def summary(x: np.ndarray) -> dict:
        return {"mean": x.mean(0), "std": x.std(0), "min": x.min(0), "max": x.max(0),
                "q01": np.quantile(x, 0.01, axis=0), "q99": np.quantile(x, 0.99, axis=0)}

    state = np.random.default_rng(0).normal(size=(4096, state_dim)).astype(np.float32)
    return {"observation.state": summary(state), "action": summary(acts)}
