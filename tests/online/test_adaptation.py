"""OnlineAdapter: FIFO buffer, clear errors, only the chosen groups move, exact rollback, recorded
corrections, and replay keeping the old tasks while a correction is learnt."""

import re

import numpy as np
import pytest
import torch

from tests.conftest import uniform_stats
from tests.online.tiny_trained import trained_policy, training_frames
from vlaforge import presets, synthetic
from vlaforge.online.adaptation import OnlineAdapter
from vlaforge.policy import Policy

H = presets.get("tiny").chunk_size


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def fresh_policy(head="regression", seed=0):
    torch.manual_seed(seed)
    return Policy(presets.get("tiny").replace(head=head), {"sawyer": uniform_stats(4, 4)})


def chunk(value, k=H):
    return np.full((k, 4), value, np.float32)


class SyntheticReplay:
    """Items in ChunkDataset's format from the synthetic task the tiny policy was trained on."""

    chunk_size = H
    camera_keys = ["observation.images.corner"]

    def __len__(self):
        return 512

    def __getitem__(self, i):
        b = synthetic.make_batch(1, H, 4, 4, 64, np.random.default_rng(i))
        return {k: v[0] for k, v in b.items()}


def weights(policy):
    return {k: v.detach().clone() for k, v in policy.state_dict().items()}


def test_buffer_is_fifo_and_bounded():
    adapter = OnlineAdapter(fresh_policy(), buffer_size=3, auto_adapt=False)
    frames = training_frames(5)
    for i, f in enumerate(frames):
        adapter.add_correction(f, chunk(i / 10, k=1 + i))
    assert len(adapter.buffer) == 3 and adapter.corrections_total == 5
    assert [float(c.action[0, 0]) for c in adapter.buffer] == pytest.approx([0.2, 0.3, 0.4])
    last = adapter.buffer[-1]
    key = "observation.images.corner"
    np.testing.assert_array_equal(last.images[key], frames[4][key])
    assert last.pad.tolist() == [False] * 5 + [True] * (H - 5)  # K = 5 actions, the rest is padding
    np.testing.assert_array_equal(last.action[5:], chunk(0.4, H - 5))  # last action repeated, as ChunkDataset


def test_corrections_of_the_wrong_shape_are_clear_errors():
    adapter = OnlineAdapter(fresh_policy(), auto_adapt=False)
    f = training_frames(1)[0]
    for bad in (chunk(0.1, H + 1), np.zeros((H, 5), np.float32), np.zeros(4, np.float32), np.zeros((0, 4))):
        with pytest.raises(ValueError, match=rf"expected shape \(K, 4\) with 1 <= K <= {H}.*got "
                                             + re.escape(str(bad.shape))):
            adapter.add_correction(f, bad)
    nan = chunk(0.1)
    nan[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN/Inf in rows \[2\]"):
        adapter.add_correction(f, nan)
    with pytest.raises(ValueError, match=r"observation.state: expected shape \(4,\).*got \(7,\)"):
        adapter.add_correction(dict(f, **{"observation.state": np.zeros(7, np.float32)}), chunk(0.1))
    with pytest.raises(ValueError, match="one frame per action"):
        adapter.add_correction(f, chunk(0.1, 3), observations=[f])
    assert len(adapter.buffer) == 0  # nothing half-stored


@pytest.mark.parametrize("groups", [("heads",), ("heads", "fusion")])
def test_adapt_changes_only_the_chosen_groups(groups):
    policy = fresh_policy("flow")
    before = weights(policy)
    flags = {n: p.requires_grad for n, p in policy.named_parameters()}
    adapter = OnlineAdapter(policy, train_groups=groups, lr=1e-2, steps=3, batch_size=4, auto_adapt=False)
    for f in training_frames(4):
        adapter.add_correction(f, chunk(0.5))
    result = adapter.adapt()
    assert result.steps == 3 and result.version == 1 == adapter.version
    owned = {n: g for g, params in policy.parameter_groups().items() for n, _ in params}
    after = weights(policy)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed, "adapt() changed nothing"
    assert {owned[n] for n in changed} == set(groups)  # every chosen group moved, nothing else did
    assert {n: p.requires_grad for n, p in policy.named_parameters()} == flags


def test_rollback_restores_bit_identical_weights_and_versions_are_on_disk(tmp_path):
    policy = fresh_policy()
    v0 = weights(policy)
    adapter = OnlineAdapter(policy, lr=1e-2, steps=2, batch_size=4, auto_adapt=False, versions_dir=tmp_path)
    for f in training_frames(3):
        adapter.add_correction(f, chunk(0.7))
    r1 = adapter.adapt()
    v1 = weights(policy)
    r2 = adapter.adapt()
    v2 = weights(policy)
    assert adapter.versions == [0, 1, 2]
    assert any(not torch.equal(v1[k], v2[k]) for k in v1)
    assert adapter.rollback() == 1
    assert all(torch.equal(v1[k], t) for k, t in policy.state_dict().items())
    assert adapter.rollback() == 0
    assert all(torch.equal(v0[k], t) for k, t in policy.state_dict().items())
    with pytest.raises(RuntimeError, match="nothing to roll back"):
        adapter.rollback()
    assert r1.path.endswith("v0001.safetensors") and r2.path.endswith("v0002.safetensors")
    adapter.load_version(r2.path)  # from disk: the weights of version 2 again, exactly
    assert all(torch.equal(v2[k], t) for k, t in policy.state_dict().items())


def test_adapts_every_n_corrections():
    adapter = OnlineAdapter(fresh_policy(), adapt_every=3, steps=1, batch_size=2)
    frames = training_frames(7)
    results = [adapter.add_correction(f, chunk(0.1)) for f in frames]
    assert [r is not None for r in results] == [False, False, True, False, False, True, False]
    assert adapter.version == 2 and adapter.pending == 1


def test_corrections_are_recorded_as_a_dataset(tmp_path):
    from vlaforge.data import ChunkDataset

    policy = fresh_policy()
    frames = training_frames(6)
    a = np.linspace(-0.5, 0.5, 5 * 4, dtype=np.float32).reshape(5, 4)
    with OnlineAdapter(policy, auto_adapt=False, record_to=tmp_path / "corr") as adapter:
        adapter.add_correction(frames[0], a, observations=frames[:5], task_name="trace-v0")
        adapter.add_correction(frames[5], chunk(0.25, 3))  # no observations: only its first frame is known
    ds = ChunkDataset(tmp_path / "corr", chunk_size=H, split="all", augment=False, paraphrase=False,
                      progress=False)
    assert ds.num_episodes == 2 and len(ds) == 5 + 1
    first = ds[0]
    np.testing.assert_allclose(first["action"][:5].numpy(), a)
    assert first["action_is_pad"].tolist() == [False] * 5 + [True] * (H - 5)
    assert first["task"] == frames[0]["task"]
    np.testing.assert_allclose(first["observation.state"].numpy(), frames[0]["observation.state"])
    np.testing.assert_allclose(ds[3]["action"][:2].numpy(), a[3:])  # frame 3: the rest of the chunk
    last = ds[5]
    np.testing.assert_allclose(last["action"][0].numpy(), chunk(0.25, 1)[0])
    assert last["action_is_pad"].tolist() == [False] + [True] * (H - 1)


def _errors(policy, instruction, target):
    rng = np.random.default_rng(5)
    new = np.mean([np.abs(policy.predict_chunk(dict(f, task=instruction)) - target).mean()
                   for f in training_frames(12, seed=31)])
    old = []
    for c in synthetic.COLORS:
        for s in synthetic.INSTRUCTIONS:
            for _ in range(3):
                frame = {"observation.images.corner": synthetic.make_frame(c, 64, rng),
                         "observation.state": rng.normal(size=4).astype(np.float32), "task": s}
                old.append(np.abs(policy.predict_chunk(frame) - synthetic.case_trajectory(c, s, H, 4)).mean())
    return float(new), float(np.mean(old))


def test_corrections_are_learnt_and_replay_limits_forgetting():
    instruction, target = "hold the arm still", chunk(0.3)
    new0, old0 = _errors(trained_policy("regression"), instruction, target)
    out = {}
    for name, replay in (("replay", SyntheticReplay()), ("no replay", None)):
        policy = trained_policy("regression")
        adapter = OnlineAdapter(policy, replay=replay, replay_fraction=0.5, lr=1e-3, steps=60, batch_size=16,
                                auto_adapt=False)
        for f in training_frames(20, seed=40):
            adapter.add_correction(dict(f, task=instruction), target)
        result = adapter.adapt()
        assert result.replay_per_batch == (8 if replay else 0) and result.loss_last < result.loss_first
        out[name] = _errors(policy, instruction, target)
    new_r, old_r = out["replay"]
    new_n, old_n = out["no replay"]
    assert new_r < 0.3 * new0  # the correction was learnt
    assert old_r < 0.6 * old_n  # replaying the original data keeps much more of the old tasks
    assert old_r < 3 * old0


def test_anchor_keeps_the_adapted_weights_near_the_deployed_ones():
    """L2-SP: with the same corrections and steps, a strong anchor moves the head much less than none."""
    frames = training_frames(4)
    drift = {}
    for anchor in (0.0, 10.0):
        policy = fresh_policy()
        base = {n: p.detach().clone() for n, p in policy.parameter_groups()["heads"]}
        adapter = OnlineAdapter(policy, lr=1e-2, steps=30, batch_size=4, auto_adapt=False, anchor=anchor)
        for f in frames:
            adapter.add_correction(f, chunk(0.9))
        adapter.adapt()
        with torch.no_grad():
            drift[anchor] = sum(float(((p - base[n]) ** 2).sum())
                                for n, p in policy.parameter_groups()["heads"])
    assert drift[0.0] > 0 and drift[10.0] < 0.5 * drift[0.0], drift
    with pytest.raises(ValueError, match="anchor: expected a value >= 0"):
        OnlineAdapter(fresh_policy(), anchor=-1.0)
