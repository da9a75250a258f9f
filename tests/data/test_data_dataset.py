"""ChunkDataset: chunk windows and padding, splits, statistics, augmentation, the frame cache; collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_testkit import write_episodes

from vlaforge.data import ChunkDataset, collate
from vlaforge.data.dataset import CACHE_DIR


def make(root, **kw) -> ChunkDataset:
    kw.setdefault("progress", False)
    return ChunkDataset(root, **kw)


def test_chunks_follow_the_frame_and_pad_past_the_episode_end(small_dataset):
    root, w = small_dataset
    H = 8
    ds = make(root, chunk_size=H, split="all", augment=False, paraphrase=False)
    assert len(ds) == sum(w["lengths"])
    starts = np.cumsum([0, *w["lengths"][:-1]])
    for e, (s, n) in enumerate(zip(starts, w["lengths"])):
        for t in range(n):
            item = ds[int(s + t)]
            idx = s + np.minimum(t + np.arange(H), n - 1)  # last action repeated past the end
            np.testing.assert_array_equal(item["action"].numpy(), w["action"][idx])
            np.testing.assert_array_equal(item["action_is_pad"].numpy(), t + np.arange(H) >= n)
            np.testing.assert_array_equal(item["observation.state"].numpy(), w["state"][s + t])
    # episode of length 3 (index 1): its first frame has 3 real steps then 5 padded ones
    item = ds[int(starts[1])]
    assert item["action_is_pad"].tolist() == [False] * 3 + [True] * 5
    assert item["action"].shape == (H, 4) and item["action"].dtype == torch.float32
    img = item["observation.images.corner"]
    assert img.shape == (3, 24, 24) and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    err = (img.permute(1, 2, 0).numpy() * 255).round() - w["images"]["corner"][starts[1]]
    assert np.abs(err).max() <= 2
    assert item["task"] == "do task-1" and item["embodiment"] == "sawyer"


def test_split_is_by_episode_disjoint_and_seeded(tmp_path):
    root = tmp_path / "ds"
    write_episodes(root, [3 + (i % 4) for i in range(20)], image_size=8)
    kw = {"chunk_size": 4, "augment": False, "paraphrase": False}
    train, val, every = (
        make(root, split="train", **kw),
        make(root, split="val", **kw),
        make(root, split="all", **kw),
    )
    tr, va = set(train.episode_indices.tolist()), set(val.episode_indices.tolist())
    assert tr.isdisjoint(va) and tr | va == set(range(20)) and len(va) == 2  # val_fraction 0.1
    assert len(train) + len(val) == len(every)
    assert set(make(root, split="val", **kw).episode_indices.tolist()) == va  # same seed, same split
    others = {tuple(make(root, split="val", seed=s, **kw).episode_indices.tolist()) for s in range(1, 6)}
    assert len(others | {tuple(sorted(va))}) > 1  # other seeds give other splits
    # every frame of an item's episode is in the same split: check item episode ids
    ep_of = np.repeat(np.arange(20), [3 + (i % 4) for i in range(20)])
    assert {int(ep_of[g]) for g in val._frames} == va
    with pytest.raises(ValueError, match="split: expected one of"):
        make(root, split="test", **kw)


def test_stats_match_numpy(small_dataset):
    root, w = small_dataset
    ds = make(root, chunk_size=4, split="train")
    stats = ds.stats
    assert set(stats) == {"sawyer"} and set(stats["sawyer"]) == {"observation.state", "action"}
    for key, x in (("observation.state", w["state"]), ("action", w["action"])):
        s = stats["sawyer"][key]
        assert set(s) == {"mean", "std", "min", "max", "q01", "q99"}
        x = x.astype(np.float64)
        np.testing.assert_allclose(s["mean"], x.mean(0), rtol=1e-5)
        np.testing.assert_allclose(s["std"], x.std(0), rtol=1e-5)
        np.testing.assert_allclose(s["min"], x.min(0), rtol=1e-6)
        np.testing.assert_allclose(s["max"], x.max(0), rtol=1e-6)
        np.testing.assert_allclose(s["q01"], np.quantile(x, 0.01, axis=0), rtol=1e-5)
        np.testing.assert_allclose(s["q99"], np.quantile(x, 0.99, axis=0), rtol=1e-5)
        assert all(v.dtype == np.float32 and v.shape == (x.shape[1],) for v in s.values())
    from vlaforge.processing.normalize import as_stats

    as_stats(stats)  # the policy accepts them


def test_augmentation_shifts_and_paraphrases(small_dataset):
    root, w = small_dataset
    table = {"task-0": ["do task-0", "perform task zero", "task zero please"]}
    plain = make(root, chunk_size=4, split="all", augment=False, paraphrase=False)
    aug = make(root, chunk_size=4, split="all", augment=True, paraphrase=True, instructions=table, shift=3)
    base = plain[0]["observation.images.corner"]
    shifted = [aug[0]["observation.images.corner"] for _ in range(12)]
    assert any(not torch.equal(s, base) for s in shifted)
    for s in shifted:  # a shift: some offset of the replicate-padded image reproduces it exactly
        padded = torch.nn.functional.pad(base[None], (3, 3, 3, 3), mode="replicate")[0]
        assert any(
            torch.equal(padded[:, 3 + dy : 3 + dy + 24, 3 + dx : 3 + dx + 24], s)
            for dy in range(-3, 4)
            for dx in range(-3, 4)
        )
    assert {aug[0]["task"] for _ in range(40)} == set(table["task-0"])  # task-0's paraphrases
    first_task1 = w["lengths"][0]
    assert {aug[first_task1]["task"] for _ in range(10)} == {"do task-1"}  # unknown name: stored instruction
    assert plain[0]["task"] == "do task-0"


def test_collate_pads_mixed_embodiments(tmp_path):
    a = write_episodes(tmp_path / "a", [5, 4], image_size=8)
    write_episodes(tmp_path / "b", [6], image_size=8, state_dim=7, action_dim=6, robot_type="panda")
    da = make(tmp_path / "a", chunk_size=3, split="all", augment=False, paraphrase=False)
    db = make(tmp_path / "b", chunk_size=3, split="all", augment=False, paraphrase=False)
    batch = collate([da[0], db[0], da[4]])
    assert batch["observation.state"].shape == (3, 7) and batch["action"].shape == (3, 3, 6)
    assert batch["observation.images.corner"].shape == (3, 3, 8, 8)
    assert batch["embodiment"] == ["sawyer", "panda", "sawyer"]
    assert batch["task"] == ["do task-0", "do task-0", "do task-0"]
    np.testing.assert_array_equal(batch["observation.state"][0, :4].numpy(), a["state"][0])
    assert torch.all(batch["observation.state"][0, 4:] == 0) and torch.all(batch["action"][2, :, 4:] == 0)
    np.testing.assert_array_equal(batch["action"][1].numpy(), db[0]["action"].numpy())
    assert batch["action_is_pad"].dtype == torch.bool and batch["action_is_pad"][2].tolist() == [
        False,
        True,
        True,
    ]
    assert set(da.stats) == {"sawyer"} and set(db.stats) == {"panda"}
    with pytest.raises(KeyError, match="item 1 has keys"):
        collate([da[0], {"task": "x"}])


def test_cache_is_rebuilt_when_the_data_changes(tmp_path):
    root = tmp_path / "ds"
    w1 = write_episodes(root, [5, 6], image_size=16)
    ds1 = make(root, chunk_size=2, split="all", augment=False)
    caches = [p.name for p in (root / CACHE_DIR).iterdir()]
    assert len(caches) == 1
    make(root, chunk_size=2, split="all", augment=False)  # same data: the cache is reused
    assert [p.name for p in (root / CACHE_DIR).iterdir()] == caches
    w2 = write_episodes(root, [4], image_size=16, resume=True, seed=1)  # one more episode
    ds2 = make(root, chunk_size=2, split="all", augment=False)
    after = [p.name for p in (root / CACHE_DIR).iterdir()]
    assert len(after) == 1 and after != caches and len(ds2) == len(ds1) + 4
    new = (ds2[11]["observation.images.corner"].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(new - w2["images"]["corner"][0]).max() <= 2  # the new episode's frames are in the cache
    # rewriting a video file in place (same episodes) also invalidates it
    from vlaforge.data import video as vid

    path = root / "videos/observation.images.corner/chunk-000/file-000.mp4"
    frames = [255 - f for f in vid.iter_frames(path)]
    vid.encode_frames(frames, path, 10, vid.VideoSettings())
    ds3 = make(root, chunk_size=2, split="all", augment=False)
    img = (ds3[0]["observation.images.corner"].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(img - (255 - w1["images"]["corner"][0].astype(int))).max() <= 3


def test_dataloader_workers_read_the_cache(small_dataset):
    root, _ = small_dataset
    ds = make(root, chunk_size=4, split="all", augment=False, paraphrase=False)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=8, num_workers=2, collate_fn=collate, multiprocessing_context="spawn"
    )
    batches = list(loader)
    imgs = torch.cat([b["observation.images.corner"] for b in batches])
    ref = torch.stack([ds[i]["observation.images.corner"] for i in range(len(ds))])
    assert torch.equal(imgs, ref)
