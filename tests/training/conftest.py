"""Fixtures for the training tests: a tiny dataset recorded with DatasetRecorder (64 px, the tiny preset)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vlaforge import synthetic

TASKS = {"trace-upper": synthetic.INSTRUCTIONS[0], "trace-lower": synthetic.INSTRUCTIONS[1]}


def write_dataset(root: Path, episodes: int = 6, length: int = 12, robot_type: str = "sawyer",
                  state_dim: int = 4, action_dim: int = 4, seed: int = 0, image_size: int = 64) -> Path:
    """Episodes of the synthetic vision+language task: the colour in the image and the instruction decide the
    action trajectory, so there is something to learn."""
    from vlaforge.data import DatasetRecorder

    rng = np.random.default_rng(seed)
    with DatasetRecorder(root, fps=10, cameras=("corner",), image_size=image_size, robot_type=robot_type,
                         state_dim=state_dim, action_dim=action_dim) as rec:
        for e in range(episodes):
            color = list(synthetic.COLORS)[e % 2]
            task = list(TASKS)[(e // 2) % 2]
            traj = synthetic.case_trajectory(color, TASKS[task], length, action_dim)  # (length, D)
            for t in range(length):
                rec.add_frame({
                    "observation.images.corner": synthetic.make_frame(color, image_size, rng),
                    "observation.state": rng.normal(size=state_dim).astype(np.float32),
                    "action": traj[t],
                })
            rec.save_episode(task=task, instruction=TASKS[task], seed=e, success=True)
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Six 12-frame episodes (one goes to validation); its frame cache is built once for the session."""
    root = write_dataset(tmp_path_factory.mktemp("data") / "tiny")
    from vlaforge.data import ChunkDataset

    ChunkDataset(root, chunk_size=8, progress=False)  # build the decoded-frame cache once
    return root


def debug_config(dataset: Path, out: Path, *overrides: str):
    """The ``debug`` preset on a dataset (8 steps in two stages of 4, batch 4 to keep tests quick), quiet, in
    fp32 (``bf16=auto`` times both precisions and may choose either on a CPU with native bf16, so runs that
    are compared must pin it), with ``path=value`` overrides."""
    from vlaforge.training import build_config

    return build_config("debug", [f"dataset={dataset}", f"out={out}", "progress=false", "tensorboard=false",
                                  "steps=8", "batch_size=4", "val_interval=4", "threads=1", "bf16=false",
                                  *overrides])


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def events(run: Path, kind: str) -> list[dict]:
    import json

    lines = (run / "log.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]
