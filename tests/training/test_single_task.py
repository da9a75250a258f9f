"""A single Meta-World task trains out of the box with every training preset, though its gripper never moves
(a constant action dimension): the dimension is centred, reported in the log and in ``dataset info``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vlaforge.training.recipe import preset_names

TASKS = ("drawer-open-v3", "button-press-topdown-v3", "reach-v3")


@pytest.fixture(scope="module")
def single_task_data(tmp_path_factory) -> dict[str, Path]:
    """Two scripted demonstrations of each task, one dataset per task (64 px, the policy's smallest size),
    with every camera some preset reads (``mt10``: corner, corner4, gripperPOV)."""
    from vlaforge.apps.collect import CollectConfig, collect
    from vlaforge.training import build_config

    cameras = tuple(dict.fromkeys(c for p in preset_names() for c in build_config(p).policy.cameras))
    root = tmp_path_factory.mktemp("single")
    out = {}
    for task in TASKS:
        collect(CollectConfig(out=root / task, tasks=[task], episodes_per_task=2, image_size=64, max_steps=80,
                              post_success_steps=0, max_tries_factor=20, keep_failed=True, progress=False,
                              cameras=cameras))
        out[task] = root / task
    return out


@pytest.mark.parametrize("task", TASKS)
def test_the_gripper_is_constant_and_dataset_info_says_how_it_is_normalized(single_task_data, task):
    from tests.test_cli import run_cli

    stats = json.loads((single_task_data[task] / "meta/stats.json").read_text())["action"]
    assert stats["q01"][3] == stats["q99"][3] == stats["min"][3] == stats["max"][3]  # the premise
    code, out, _ = run_cli(["dataset", "info", str(single_task_data[task])])
    assert code == 0
    assert (f"note: sawyer action: dimension(s) [3] constant in the data "
            f"(3: {stats['min'][3]:g}): centred" in out)


@pytest.mark.parametrize("preset", preset_names())
@pytest.mark.parametrize("task", TASKS)
def test_every_preset_trains_on_a_single_task(single_task_data, tmp_path, preset, task):
    from vlaforge.policy import Policy
    from vlaforge.training import build_config, train

    stages = len(build_config(preset).stages)
    cfg = build_config(preset, [f"dataset={single_task_data[task]}", f"out={tmp_path / 'run'}",
                                f"steps={stages}", "batch_size=4", "policy.image_size=64", "val_interval=0",
                                "ckpt_interval=0", "num_workers=0", "threads=1", "progress=false",
                                "tensorboard=false", "log_interval=1"])
    assert cfg.policy.min_spread == 0  # nothing set by hand
    result = train(cfg)
    assert result.status == "finished"
    log = (tmp_path / "run" / "train.log").read_text()
    assert "normalization: sawyer action: dimension(s) [3] constant in the data" in log
    assert "precision: " in log
    policy = Policy.load(result.checkpoint)
    frame = policy.example_frame()
    chunk = policy.predict_chunk(frame)
    assert chunk.shape == (policy.config.chunk_size, 4) and np.isfinite(chunk).all()
    a = np.asarray(json.loads((single_task_data[task] / "meta/stats.json").read_text())["action"]["min"][3])
    # the constant maps to 0 and back, at unit scale (not blown up by a zero spread)
    assert policy.normalizer.scale[("sawyer", "action")][3] == 1.0
    assert policy.normalizer.center[("sawyer", "action")][3] == pytest.approx(a)
