"""Write -> read round trip, the LeRobot v3.0 layout, and errors for broken datasets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from data_testkit import write_episodes

from vlaforge.data import format as fmt
from vlaforge.data.format import DatasetFormatError
from vlaforge.data.reader import DatasetReader

FIXTURE = Path(__file__).parent / "fixtures"


def decode_all(reader: DatasetReader, key: str) -> np.ndarray:
    h, w, c = fmt.image_hwc(key, reader.features[key])
    out = np.zeros((reader.num_frames, h, w, c), np.uint8)
    reader.decode_camera(key, out)
    return out


def test_round_trip_exact_state_action_and_images_within_codec_bound(small_dataset):
    root, written = small_dataset
    r = DatasetReader(root)
    assert r.num_episodes == 6 and r.num_frames == sum(written["lengths"])
    cols = r.columns(["observation.state", "action", "episode_index", "frame_index", "index", "timestamp"])
    np.testing.assert_array_equal(cols["observation.state"], written["state"])  # bit-exact
    np.testing.assert_array_equal(cols["action"], written["action"])
    np.testing.assert_array_equal(cols["episode_index"], written["episode"])
    np.testing.assert_array_equal(cols["index"], np.arange(r.num_frames))
    starts = np.cumsum([0, *written["lengths"][:-1]])
    np.testing.assert_array_equal(
        cols["frame_index"], np.arange(r.num_frames) - np.repeat(starts, written["lengths"])
    )
    np.testing.assert_allclose(cols["timestamp"], cols["frame_index"] / r.fps, rtol=0, atol=1e-6)
    # H.264 4:4:4 crf 0: lossless in YUV; only the RGB <-> YUV rounding remains (measured max 2 levels)
    err = np.abs(decode_all(r, "observation.images.corner").astype(int) - written["images"]["corner"])
    assert err.max() <= 2, err.max()
    assert err.mean() < 0.5, err.mean()


def test_layout_matches_lerobot_v30(small_dataset):
    root, written = small_dataset
    info = json.loads((root / fmt.INFO_PATH).read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10 and info["robot_type"] == "sawyer"
    assert (
        info["total_episodes"] == 6
        and info["total_frames"] == sum(written["lengths"])
        and info["total_tasks"] == 2
    )
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert info["splits"] == {"train": "0:6"}
    assert {"chunks_size", "data_files_size_in_mb", "video_files_size_in_mb"} <= set(info)
    feats = info["features"]
    assert feats["observation.state"] == {"dtype": "float32", "shape": [4], "names": None}
    cam = feats["observation.images.corner"]
    assert cam["dtype"] == "video" and cam["shape"] == [24, 24, 3]
    assert cam["info"]["video.codec"] == "h264" and cam["info"]["video.pix_fmt"] == "yuv444p"
    for k in (
        "timestamp",
        "frame_index",
        "episode_index",
        "index",
        "task_index",
        "next.success",
        "next.done",
    ):
        assert k in feats
    # packed every 4 episodes: two data files, two video files
    assert sorted(p.relative_to(root).as_posix() for p in (root / "data").rglob("*.parquet")) == [
        "data/chunk-000/file-000.parquet",
        "data/chunk-000/file-001.parquet",
    ]
    assert len(list((root / "videos/observation.images.corner/chunk-000").glob("file-*.mp4"))) == 2
    data = pq.read_table(root / "data/chunk-000/file-000.parquet")
    assert data.schema.field("observation.state").type.list_size == 4
    assert b"huggingface" in data.schema.metadata
    tasks = pq.read_table(root / fmt.TASKS_PATH)
    assert tasks.column("task").to_pylist() == ["do task-0", "do task-1"]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    eps = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["length"] for e in eps] == written["lengths"]
    assert [e["seed"] for e in eps] == [100 + i for i in range(6)]
    assert eps[1]["videos/observation.images.corner/from_timestamp"] == pytest.approx(7 / 10)
    assert eps[4]["videos/observation.images.corner/from_timestamp"] == 0.0  # first episode of file-001
    assert eps[5]["dataset_from_index"] == sum(written["lengths"][:5])
    assert "stats/observation.state/q99" in eps[0] and "stats/observation.images.corner/mean" in eps[0]
    stats = json.loads((root / fmt.STATS_PATH).read_text())
    np.testing.assert_allclose(stats["action"]["mean"], written["action"].mean(0), rtol=1e-6)
    assert np.asarray(stats["observation.images.corner"]["mean"]).shape == (3, 1, 1)


def test_reads_a_dataset_lerobot_recorded(tmp_path):
    """Fixture recorded by LeRobot 0.4.4 (AV1 video); expected items are what LeRobotDataset returned for
    it."""
    root = tmp_path / "lr"
    shutil.copytree(FIXTURE / "lerobot_v30_tiny", root)
    expected = np.load(FIXTURE / "lerobot_v30_tiny_expected.npz")
    from vlaforge.data import ChunkDataset

    ds = ChunkDataset(root, chunk_size=8, split="all", augment=False, paraphrase=False, progress=False)
    assert len(ds) == 18 and ds.embodiment == "sawyer"
    items = [ds[i] for i in range(len(ds))]
    np.testing.assert_array_equal(
        np.stack([it["observation.state"].numpy() for it in items]), expected["state"]
    )
    np.testing.assert_array_equal(np.stack([it["action"].numpy() for it in items]), expected["action"])
    np.testing.assert_array_equal(np.stack([it["action_is_pad"].numpy() for it in items]), expected["pad"])
    imgs = np.stack(
        [(it["observation.images.corner"].numpy() * 255).round().astype(np.uint8) for it in items]
    )
    np.testing.assert_array_equal(imgs, expected["images"])  # same FFmpeg decoder: identical pixels
    assert [it["task"] for it in items] == list(expected["task"])


# -------------------------------------------------------------------------------------------- broken datasets


def _broken(tmp_path, name) -> Path:
    root = tmp_path / name
    write_episodes(root, [4, 5], image_size=16)
    return root


def test_error_missing_info(tmp_path):
    root = _broken(tmp_path, "a")
    (root / fmt.INFO_PATH).unlink()
    with pytest.raises(DatasetFormatError, match=r"meta/info.json is missing"):
        DatasetReader(root)
    with pytest.raises(DatasetFormatError, match="does not exist"):
        DatasetReader(tmp_path / "nowhere")


def test_error_wrong_codebase_version(tmp_path):
    root = _broken(tmp_path, "b")
    info = json.loads((root / fmt.INFO_PATH).read_text())
    info["codebase_version"] = "v2.1"
    (root / fmt.INFO_PATH).write_text(json.dumps(info))
    with pytest.raises(DatasetFormatError, match=r"expected codebase_version 'v3.0', got 'v2.1'.*convert"):
        DatasetReader(root)


def test_error_features_disagree_with_data(tmp_path):
    root = _broken(tmp_path, "c")
    info = json.loads((root / fmt.INFO_PATH).read_text())
    info["features"]["observation.state"]["shape"] = [7]
    (root / fmt.INFO_PATH).write_text(json.dumps(info))
    with pytest.raises(DatasetFormatError, match=r"observation.state.*shape \(7,\).*shape \(4,\)"):
        DatasetReader(root)
    info["features"]["observation.state"]["shape"] = [4]
    info["features"]["observation.velocity"] = {"dtype": "float32", "shape": [3], "names": None}
    (root / fmt.INFO_PATH).write_text(json.dumps(info))
    with pytest.raises(DatasetFormatError, match=r"declares feature 'observation.velocity'.*no such column"):
        DatasetReader(root)
    del info["features"]["observation.velocity"]
    info["features"]["observation.images.corner"]["shape"] = [32, 32, 3]
    (root / fmt.INFO_PATH).write_text(json.dumps(info))
    with pytest.raises(DatasetFormatError, match=r"32x32 in meta/info.json, the video is 16x16"):
        DatasetReader(root)


def test_error_missing_files(tmp_path):
    root = _broken(tmp_path, "d")
    video = root / "videos/observation.images.corner/chunk-000/file-000.mp4"
    video.rename(video.with_suffix(".bak"))
    with pytest.raises(DatasetFormatError, match=r"file-000.mp4: video file of episode 0 .* is missing"):
        DatasetReader(root)
    video.with_suffix(".bak").rename(video)
    (root / "data/chunk-000/file-000.parquet").unlink()
    with pytest.raises(DatasetFormatError, match=r"file-000.parquet: data file of episode 0 is missing"):
        DatasetReader(root)


def test_error_missing_tasks_and_episode_index(tmp_path):
    root = _broken(tmp_path, "e")
    (root / fmt.TASKS_PATH).unlink()
    with pytest.raises(DatasetFormatError, match=r"meta/tasks.parquet is missing"):
        DatasetReader(root)
    root = _broken(tmp_path, "f")
    shutil.rmtree(root / fmt.EPISODES_DIR)
    with pytest.raises(DatasetFormatError, match=r"lists 2 episodes, but there is no meta/episodes"):
        DatasetReader(root)


def test_error_video_shorter_than_metadata(tmp_path):
    from vlaforge.data import video as vid

    root = _broken(tmp_path, "g")
    path = root / "videos/observation.images.corner/chunk-000/file-000.mp4"
    frames = list(vid.iter_frames(path))[:6]  # 9 frames expected
    vid.encode_frames(frames, path, 10, vid.VideoSettings())
    r = DatasetReader(root)
    with pytest.raises(
        DatasetFormatError, match=r"episodes 0..1: .*expected frames at 9 timestamps, 3 missing"
    ):
        decode_all(r, "observation.images.corner")
