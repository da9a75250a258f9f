"""One policy over two robots of different sizes and cameras: a Meta-World Sawyer (4-D state and action,
camera ``corner``) and a robosuite Panda (9-D state, 7-D action, camera ``agentview``), each from its own
dataset recorded by ``vlaforge collect``. It trains on balanced mixed batches, saves and loads bit-exact,
reads each robot's own camera at deployment and runs in both simulators."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.conftest import debug_config, tensors


@pytest.fixture(scope="module")
def two_robots(tmp_path_factory) -> tuple[Path, Path]:
    from vlaforge.apps.collect import CollectConfig, collect

    root = tmp_path_factory.mktemp("robots")
    collect(CollectConfig(out=root / "sawyer", tasks=["drawer-open-v3"], episodes_per_task=2, image_size=64,
                          max_steps=60, post_success_steps=0, keep_failed=True, progress=False))
    collect(CollectConfig(out=root / "panda", tasks=["lift-panda"], episodes_per_task=2, image_size=64,
                          cameras=("agentview",), max_steps=40, post_success_steps=0, keep_failed=True,
                          progress=False))
    return root / "sawyer", root / "panda"


def test_the_mixture_is_balanced_and_renames_cameras(two_robots):
    from vlaforge.data import ChunkDataset
    from vlaforge.data.mixed import MixedDataset

    sawyer, panda = (ChunkDataset(p, chunk_size=8, progress=False) for p in two_robots)
    mixed = MixedDataset([sawyer, panda], cameras=("corner",))
    assert len(mixed) == 2 * max(len(sawyer), len(panda))
    robots = [mixed.get(i)["embodiment"] for i in range(len(mixed))]
    assert robots.count("sawyer") == robots.count("panda")
    item = mixed.get(1)
    assert item["embodiment"] == "panda" and "observation.images.corner" in item
    assert "observation.images.agentview" not in item and item["action"].shape == (8, 7)
    assert mixed.embodiment_cameras == {"sawyer": ("corner",), "panda": ("agentview",)}
    assert set(mixed.stats) == {"sawyer", "panda"}
    with pytest.raises(ValueError, match="distinct robots"):
        MixedDataset([sawyer, sawyer], cameras=("corner",))
    with pytest.raises(ValueError, match="records 1 cameras \\['agentview'\\]; the policy has 2"):
        MixedDataset([panda], cameras=("corner", "topview"))


def test_one_policy_trains_on_both_robots_and_runs_in_both_simulators(two_robots, tmp_path):
    from vlaforge.evaluation.rollout import EvalConfig, evaluate
    from vlaforge.policy import Policy
    from vlaforge.training import train

    data = ",".join(str(p) for p in two_robots)
    cfg = debug_config(data, tmp_path / "run", "policy.language_encoder=hash", "policy.image_size=64")
    ckpt = train(cfg).checkpoint
    policy = Policy.load(ckpt)
    embs = policy.config.embodiments
    assert (embs["sawyer"].state_dim, embs["sawyer"].action_dim, embs["sawyer"].cameras) == (4, 4, ())
    panda_spec = embs["panda"]
    assert (panda_spec.state_dim, panda_spec.action_dim, panda_spec.cameras) == (9, 7, ("agentview",))
    # save / load bit-exact, the per-robot cameras included
    policy.save(tmp_path / "again")
    again = Policy.load(tmp_path / "again")
    assert again.config == policy.config
    a, b = tensors(ckpt / "model.safetensors"), tensors(tmp_path / "again" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # each robot's frame, with its own camera name, gives a chunk of its own size
    s = policy.config.image_size
    panda = {"observation.images.agentview": np.zeros((s, s, 3), np.uint8), "observation.state": np.zeros(9),
             "task": "lift the cube", "embodiment": "panda"}
    assert policy.predict_chunk(panda).shape == (policy.config.chunk_size, 7)
    with pytest.raises(KeyError, match="the policy expects cameras of 'panda' \\['agentview'\\]"):
        wrong = {k.replace("agentview", "corner"): v for k, v in panda.items()}  # Meta-World's camera name
        policy.predict_chunk(wrong)
    # and it runs in both simulators (one short episode each: this checks the plumbing, not success)
    for task in ("drawer-open-v3", "lift-panda"):
        res = evaluate(EvalConfig(checkpoint=str(ckpt), tasks=(task,), episodes=1, max_steps=4, videos=0),
                       progress=False, print_table=False)
        assert res["episodes"][0]["steps"] == 4


@pytest.mark.parametrize("task", ["lift-ur5e", "two-arm-lift-panda"])
def test_collect_train_eval_for_the_other_robosuite_robots(tmp_path, task):
    """The UR5e (13-D state, 7-D action) and the two-arm Panda (18-D, 14-D) go through the same commands."""
    from vlaforge.apps.collect import CollectConfig, collect
    from vlaforge.evaluation.rollout import EvalConfig, evaluate
    from vlaforge.policy import Policy
    from vlaforge.sim import simulator_for_task
    from vlaforge.training import train

    sim = simulator_for_task(task)
    collect(CollectConfig(out=tmp_path / "data", tasks=[task], episodes_per_task=2, image_size=64,
                          cameras=("agentview",), max_steps=30, post_success_steps=0, keep_failed=True,
                          progress=False))
    cfg = debug_config(tmp_path / "data", tmp_path / "run", "policy.language_encoder=hash",
                       "policy.image_size=64", "policy.cameras=agentview")
    ckpt = train(cfg).checkpoint
    res = evaluate(EvalConfig(checkpoint=str(ckpt), tasks=(task,), episodes=1, max_steps=3, videos=0),
                   progress=False, print_table=False)
    robot = Policy.read_config(ckpt).embodiments[sim.embodiment]
    assert (robot.state_dim, robot.action_dim) == (sim.state_dim, sim.action_dim)
    assert res["episodes"][0]["steps"] == 3
