"""The auxiliary environment-state loss: recorded ``observation.environment_state`` -> dataset items and
statistics -> a policy head that learns to read object positions from the image, in training only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vlaforge import synthetic
from vlaforge.data import ChunkDataset, DatasetRecorder, collate
from vlaforge.data.format import DatasetFormatError

from .conftest import TASKS, debug_config, events

ENV = "observation.environment_state"


def write_env_dataset(root: Path, episodes: int = 8, length: int = 10, seed: int = 0) -> Path:
    """Synthetic episodes whose environment state (3,) is a function of the image's colour: an "object" at
    x = +0.1 for one colour and -0.1 for the other, a constant second coordinate (a missing object) and a
    little noise."""
    rng = np.random.default_rng(seed)
    colors = list(synthetic.COLORS)
    with DatasetRecorder(root, fps=10, cameras=("corner",), image_size=64, env_state_dim=3,
                         env_state_names=("x", "y", "absent")) as rec:
        for e in range(episodes):
            color, task = colors[e % 2], list(TASKS)[(e // 2) % 2]
            traj = synthetic.case_trajectory(color, TASKS[task], length, 4)
            x = 0.1 if e % 2 == 0 else -0.1
            for t in range(length):
                rec.add_frame({"observation.images.corner": synthetic.make_frame(color, 64, rng),
                               "observation.state": rng.normal(size=4).astype(np.float32), "action": traj[t],
                               ENV: np.array([x + 0.005 * rng.normal(), 0.02 * t / length, 0.0], np.float32)})
            rec.save_episode(task=task, instruction=TASKS[task], seed=e, success=True)
    return root


@pytest.fixture(scope="module")
def env_dataset(tmp_path_factory) -> Path:
    return write_env_dataset(tmp_path_factory.mktemp("env") / "data")


def test_recorder_requires_and_checks_the_environment_state(tmp_path):
    good = {"observation.state": np.zeros(4), "action": np.zeros(4),
            "observation.images.corner": np.zeros((8, 8, 3), np.uint8)}
    with DatasetRecorder(tmp_path / "a", fps=10, cameras=["corner"], image_size=8, env_state_dim=3) as rec:
        with pytest.raises(KeyError, match="missing 'observation.environment_state'"):
            rec.add_frame(good)
        with pytest.raises(ValueError,
                           match=r"observation.environment_state: expected shape \(3,\), got \(2,\)"):
            rec.add_frame({**good, ENV: np.zeros(2)})
    with DatasetRecorder(tmp_path / "b", fps=10, cameras=["corner"], image_size=8) as rec:
        with pytest.raises(KeyError, match=r"unexpected keys \['observation.environment_state'\]"):
            rec.add_frame({**good, ENV: np.zeros(3)})


def test_dataset_items_and_stats_carry_the_environment_state_on_request(env_dataset, tiny_dataset):
    plain = ChunkDataset(env_dataset, chunk_size=8, progress=False)
    assert ENV not in plain[0] and ENV not in plain.stats["sawyer"]  # off unless asked for
    ds = ChunkDataset(env_dataset, chunk_size=8, progress=False, env_state=True)
    batch = collate([ds[i] for i in range(4)])
    assert batch[ENV].shape == (4, 3) and batch[ENV].dtype == torch.float32
    s = ds.stats["sawyer"][ENV]
    assert s["min"][0] < -0.09 and s["max"][0] > 0.09 and s["std"][2] == 0
    with pytest.raises(DatasetFormatError,
                       match="observation.environment_state' is missing.*aux_env_weight=0"):
        ChunkDataset(tiny_dataset, chunk_size=8, progress=False, env_state=True)


def test_per_task_standardization_centres_and_scales_each_task_on_its_own(env_dataset):
    """``env_state_per_task``: each task's frames by that task's mean and spread (floored), so a coordinate
    that never moves stays 0 and the others have mean 0 and spread 1 within every task."""
    from vlaforge.data.dataset import ENV_SPREAD_FLOOR

    raw = ChunkDataset(env_dataset, chunk_size=8, progress=False, env_state=True)
    ds = ChunkDataset(env_dataset, chunk_size=8, progress=False, env_state=True, env_state_per_task=True)
    reader = ds.reader
    tasks = {}
    for ep in reader.episodes:
        tasks.setdefault(ep.task_name or reader.task_of(ep), []).extend(range(ep.start, ep.start + ep.length))
    assert len(tasks) == 2
    for frames in tasks.values():
        r, z = raw._env[frames].astype(np.float64), ds._env[frames].astype(np.float64)
        expect = (r - r.mean(0)) / np.maximum(r.std(0), ENV_SPREAD_FLOOR)
        np.testing.assert_allclose(z, expect, atol=1e-5)
        np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(z[:, :2].std(0), 1, atol=1e-4)  # x (colour) and y (time) move
        assert np.all(z[:, 2] == 0)  # the absent object: centred, not divided by zero
    # items and the statistics the policy normalizes with carry the standardized target
    item = ds[0]
    assert torch.allclose(item[ENV], torch.from_numpy(ds._env[int(ds._frames[0])]))
    assert abs(ds.stats["sawyer"][ENV]["mean"][0]) < 0.2


def _policy(env_dim: int, weight: float, stats, env_token: bool = False):
    from vlaforge import presets
    from vlaforge.config import EmbodimentSpec
    from vlaforge.policy import Policy

    cfg = presets.get("tiny").replace(head="regression", aux_env_weight=weight, env_token=env_token,
                                      embodiments={"sawyer": EmbodimentSpec(4, 4, env_state_dim=env_dim)})
    return Policy(cfg, stats)


def aux_prediction(policy, batch) -> torch.Tensor:
    """The auxiliary head's environment state for a batch, physical units (B, E)."""
    with torch.no_grad():
        tokens, _ = policy._tokens(batch)
        if policy.config.env_token:
            pred = tokens["env_pred/sawyer"]
        else:
            pred = policy.aux_heads["sawyer"](policy._fuse(tokens).mean(1))
    return policy.normalizer.unnormalize(pred, "sawyer", ENV)


@pytest.mark.parametrize("env_token", [False, True])
def test_aux_loss_is_added_and_trains_only_from_batches_that_have_the_target(env_dataset, env_token):
    ds = ChunkDataset(env_dataset, chunk_size=8, progress=False, env_state=True)
    batch = collate([ds[i] for i in range(0, 40, 5)])
    torch.manual_seed(0)
    policy = _policy(3, 0.5, ds.stats, env_token)
    if env_token:  # a reader before fusion (group fusion) and no readout head
        assert len(policy.aux_heads) == 0
        assert [n for n, _ in policy.parameter_groups()["fusion"] if n.startswith("env_readers.")]
        aux_weight = policy.env_readers["sawyer"].read[1].weight
    else:
        assert [n for n, _ in policy.parameter_groups()["heads"] if n.startswith("aux_heads.")]
        aux_weight = policy.aux_heads["sawyer"][0].weight
    loss, info = policy.compute_loss(batch)
    assert loss.item() == pytest.approx(info["loss/sawyer"] + 0.5 * info["aux_env/sawyer"], rel=1e-5)
    loss.backward()
    assert aux_weight.grad.abs().sum() > 0
    if env_token:
        return
    # without the key (deployment data, corrections) the loss is the action loss alone
    policy.zero_grad()
    no_env = {k: v for k, v in batch.items() if k != ENV}
    loss2, info2 = policy.compute_loss(no_env)
    assert "aux_env/sawyer" not in info2 and loss2.item() == pytest.approx(info2["loss/sawyer"])
    loss2.backward()
    assert (policy.aux_heads["sawyer"][0].weight.grad is None
            or policy.aux_heads["sawyer"][0].weight.grad.abs().sum() == 0)
    # weight 0: no auxiliary head at all, and the checkpoint is the one it always was
    plain = _policy(3, 0.0, ds.stats)
    assert len(plain.aux_heads) == 0 and not any(k.startswith("aux_heads") for k in plain.state_dict())
    # a wrong-sized target is a clear error
    bad = dict(batch, **{ENV: batch[ENV][:, :2]})
    with pytest.raises(ValueError, match=r"observation.environment_state: expected shape \(B, 3\)"):
        policy.compute_loss(bad)


def test_stats_without_the_environment_state_are_a_clear_error(env_dataset):
    ds = ChunkDataset(env_dataset, chunk_size=8, progress=False)  # stats without the env key
    with pytest.raises(ValueError, match="missing 'observation.environment_state', the auxiliary target"):
        _policy(3, 1.0, ds.stats)


@pytest.mark.parametrize("env_token,per_task", [(False, False), (True, False), (True, True)])
def test_training_with_the_aux_loss_learns_to_read_the_object_from_the_image(env_dataset, tmp_path,
                                                                              env_token, per_task):
    """Through the real trainer: the auxiliary head ends far better than predicting the mean, the checkpoint
    round-trips and predicts chunks from frames that have no environment state. ``per_task``: the target is
    standardized per task (policy.aux_env_per_task) and the prediction is in those units."""
    from vlaforge.policy import Policy
    from vlaforge.training import train

    cfg = debug_config(env_dataset, tmp_path / "run", "policy.head=regression", "policy.aux_env_weight=1.0",
                       f"policy.env_token={str(env_token).lower()}",
                       f"policy.aux_env_per_task={str(per_task).lower()}",
                       "steps=60", "batch_size=16", "val_interval=60", "log_interval=10", "ckpt_interval=60")
    result = train(cfg)
    logs = events(tmp_path / "run", "train")
    assert "aux_env/sawyer" in logs[-1]
    policy = Policy.load(result.checkpoint)
    assert policy.config.embodiments["sawyer"].env_state_dim == 3 and policy.config.aux_env_weight == 1.0
    assert policy.config.aux_env_per_task == per_task
    ds = ChunkDataset(env_dataset, chunk_size=8, progress=False, env_state=True, env_state_per_task=per_task)
    batch = collate([ds[i] for i in range(len(ds))])
    pred = aux_prediction(policy, batch)
    x, x_hat = batch[ENV][:, 0], pred[:, 0]
    mse, var = float(((x_hat - x) ** 2).mean()), float(x.var())
    assert mse < 0.1 * var, (mse, var)  # the colour, hence the object's x, is read from the image
    frame = {k: (v.permute(1, 2, 0) * 255).to(torch.uint8).numpy() if k.startswith("observation.images.")
             else v for k, v in ds[0].items() if k not in (ENV, "action", "action_is_pad")}
    assert policy.predict_chunk(frame).shape == (8, 4)
