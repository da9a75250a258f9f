"""Helpers for the data tests: synthetic episodes written with DatasetRecorder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlaforge.data.recorder import DatasetRecorder


def synthetic_image(rng: np.random.Generator, size: int, t: int) -> np.ndarray:
    """A frame with structure (gradient + a moving block + noise), uint8 (size, size, 3)."""
    y, x = np.mgrid[0:size, 0:size]
    img = np.stack([(x * 255 // size), (y * 255 // size), np.full_like(x, (t * 17) % 256)], -1).astype(
        np.int32
    )
    c = (t * 3) % max(1, size - 8)
    img[c : c + 8, c : c + 8] = [250, 30, 30]
    img += rng.integers(-20, 21, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_episodes(
    root: Path,
    lengths: list[int],
    tasks: list[str] | None = None,
    cameras: tuple[str, ...] = ("corner",),
    image_size: int = 24,
    state_dim: int = 4,
    action_dim: int = 4,
    robot_type: str = "sawyer",
    seed: int = 0,
    resume: bool = False,
    pack_every: int = 50,
    fps: int = 10,
) -> dict:
    """Record episodes of the given lengths; returns what was written
    (per-frame arrays, per-episode lists)."""
    rng = np.random.default_rng(seed)
    tasks = tasks or [f"task-{i % 2}" for i in range(len(lengths))]
    out = {"state": [], "action": [], "images": {c: [] for c in cameras}, "episode": []}
    with DatasetRecorder(
        root,
        fps=fps,
        cameras=cameras,
        image_size=image_size,
        robot_type=robot_type,
        state_dim=state_dim,
        action_dim=action_dim,
        resume=resume,
        pack_every=pack_every,
    ) as rec:
        for e, (n, task) in enumerate(zip(lengths, tasks)):
            for t in range(n):
                frame = {
                    "observation.state": rng.normal(size=state_dim).astype(np.float32),
                    "action": rng.uniform(-1, 1, size=action_dim).astype(np.float32),
                    "next.success": t == n - 1,
                }
                for c in cameras:
                    frame[f"observation.images.{c}"] = synthetic_image(rng, image_size, t + 5 * e)
                    out["images"][c].append(frame[f"observation.images.{c}"])
                rec.add_frame(frame)
                out["state"].append(frame["observation.state"])
                out["action"].append(frame["action"])
                out["episode"].append(e)
            rec.save_episode(task=task, seed=100 + e, success=True, instruction=f"do {task}")
    return {
        "state": np.stack(out["state"]),
        "action": np.stack(out["action"]),
        "episode": np.array(out["episode"]),
        "images": {c: np.stack(v) for c, v in out["images"].items()},
        "lengths": list(lengths),
        "tasks": tasks,
    }
