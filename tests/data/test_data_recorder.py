"""DatasetRecorder: atomic episodes, SIGKILL at any moment, resume without duplicates, and its errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from data_testkit import write_episodes

from vlaforge.data import format as fmt
from vlaforge.data.reader import STAGING_DIR, DatasetReader
from vlaforge.data.recorder import DatasetRecorder

# A writer whose episode content is a function of its seed, so any surviving episode can be checked.
WRITER = r"""
import sys, numpy as np
from vlaforge.data.recorder import DatasetRecorder
root, target = sys.argv[1], int(sys.argv[2])
rec = DatasetRecorder(root, fps=10, cameras=["corner"], image_size=16, resume=True, pack_every=2)
done = {e["seed"] for e in rec.episodes()}
print("ready", flush=True)
for seed in range(target):
    if seed in done:
        continue
    n = 3 + seed % 5
    for t in range(n):
        rec.add_frame({"observation.state": np.full(4, seed * 100 + t, np.float32),
                       "action": np.full(4, -seed - t / 10, np.float32),
                       "observation.images.corner": np.full((16, 16, 3), (seed * 20 + t) % 256, np.uint8)})
    rec.save_episode(task=f"task-{seed % 3}", seed=seed, success=True)
rec.close()
print("done", flush=True)
"""


def _check_episodes(root: Path) -> list[int]:
    """Every episode the reader sees holds exactly what the writer wrote for its seed; returns the seeds."""
    r = DatasetReader(root)
    cols = r.columns(["observation.state", "action", "frame_index"])
    seeds = []
    for ep in r.episodes:
        seed = ep.seed
        n = 3 + seed % 5
        assert ep.length == n and ep.task_name == f"task-{seed % 3}"
        st = cols["observation.state"][ep.start : ep.start + n]
        np.testing.assert_array_equal(st[:, 0], seed * 100 + np.arange(n))
        np.testing.assert_array_equal(
            cols["action"][ep.start : ep.start + n, 0], (-seed - np.arange(n) / 10).astype(np.float32)
        )
        seeds.append(seed)
    assert len(seeds) == len(set(seeds)), f"duplicate episodes: {seeds}"
    return seeds


def _spawn_writer(root: Path, target: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.filterwarnings("ignore:.*total_episodes is")  # expected after a kill between commit and refresh
def test_sigkill_at_random_moments_then_resume(tmp_path):
    root, target = tmp_path / "ds", 24
    rng = np.random.default_rng(0)
    kills = 0
    for _ in range(6):
        p = _spawn_writer(root, target)
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        time.sleep(float(rng.uniform(0.0, 0.25)))
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += p.returncode == -signal.SIGKILL
        seeds = _check_episodes(root)  # opens after every kill, every committed episode intact
        assert seeds == sorted(seeds)
    assert kills >= 3
    p = _spawn_writer(root, target)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert _check_episodes(root) == list(range(target))
    info = json.loads((root / fmt.INFO_PATH).read_text())
    assert info["total_episodes"] == target  # packed and refreshed
    assert not list((root / STAGING_DIR).glob("episode-*"))
    files = {p.relative_to(root).as_posix() for p in (root / "data").rglob("*.parquet")}
    rows = fmt.read_episodes(root)
    assert files == {
        f"data/chunk-000/file-{i:03d}.parquet"
        for i in {(r["data/chunk_index"], r["data/file_index"])[1] for r in rows}
    }  # no orphans left


def _crash(monkeypatch, method: str):
    def boom(self, *a, **k):
        raise KeyboardInterrupt(f"simulated kill in {method}")

    monkeypatch.setattr(DatasetRecorder, method, boom)


def test_kill_before_the_pack_commits_leaves_orphans_that_are_ignored_then_removed(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    write_episodes(root, [4, 5], pack_every=50)
    rec = DatasetRecorder(root, fps=10, cameras=["corner"], image_size=24, resume=True)
    for n in (3, 6):
        for t in range(n):
            rec.add_frame(
                {
                    "observation.state": np.zeros(4),
                    "action": np.ones(4) * t,
                    "observation.images.corner": np.zeros((24, 24, 3), np.uint8),
                }
            )
        rec.save_episode(task="late", seed=7 + n)
    _crash(monkeypatch, "_commit_rows")  # data and video files written, episode index not replaced
    with pytest.raises(KeyboardInterrupt):
        rec.close()
    monkeypatch.undo()
    orphans = root / "data/chunk-000/file-001.parquet"
    assert orphans.is_file()
    r = DatasetReader(root)
    assert [e.length for e in r.episodes] == [4, 5, 3, 6] and [e.staged for e in r.episodes] == [
        False
    ] * 2 + [True] * 2
    with DatasetRecorder(root, fps=10, cameras=["corner"], image_size=24, resume=True) as rec:
        assert not orphans.exists()  # removed by recovery, then rewritten by the pack at close
    r = DatasetReader(root)
    assert [e.length for e in r.episodes] == [4, 5, 3, 6] and not any(e.staged for e in r.episodes)
    assert r.columns(["action"])["action"][-1, 0] == 5


def test_kill_after_the_pack_commits_does_not_duplicate(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    written = write_episodes(root, [4, 5], pack_every=50)
    rec = DatasetRecorder(root, fps=10, cameras=["corner"], image_size=24, resume=True)
    for t in range(3):
        rec.add_frame(
            {
                "observation.state": np.zeros(4),
                "action": np.zeros(4),
                "observation.images.corner": np.zeros((24, 24, 3), np.uint8),
            }
        )
    rec.save_episode(task="late", seed=9)
    _crash(
        monkeypatch, "_refresh_meta"
    )  # episodes index replaced; info/tasks/stats stale; staging not cleaned
    with pytest.raises(KeyboardInterrupt):
        rec.close()
    monkeypatch.undo()
    assert list((root / STAGING_DIR).glob("episode-000002"))  # the staged copy is still there
    with pytest.warns(UserWarning, match="total_episodes is 2 but meta/episodes lists 3"):
        r = DatasetReader(root)
    assert [e.length for e in r.episodes] == [4, 5, 3] and r.tasks == ["do task-0", "do task-1", "late"]
    np.testing.assert_array_equal(r.columns(["observation.state"])["observation.state"][:9], written["state"])
    rec = DatasetRecorder(root, fps=10, cameras=["corner"], image_size=24, resume=True)
    rec.close()
    info = json.loads((root / fmt.INFO_PATH).read_text())
    assert info["total_episodes"] == 3 and info["total_tasks"] == 3
    assert not list((root / STAGING_DIR).glob("episode-*"))
    assert fmt.read_tasks(root) == ["do task-0", "do task-1", "late"]


def test_recorder_errors(tmp_path):
    root = tmp_path / "ds"
    rec = DatasetRecorder(root, fps=10, cameras=["corner"], image_size=8)
    good = {
        "observation.state": np.zeros(4),
        "action": np.zeros(4),
        "observation.images.corner": np.zeros((8, 8, 3), np.uint8),
    }
    with pytest.raises(ValueError, match=r"observation.state: expected shape \(4,\), got \(7,\)"):
        rec.add_frame({**good, "observation.state": np.zeros(7)})
    with pytest.raises(
        ValueError, match=r"observation.images.corner: expected uint8 \(8, 8, 3\), got float64"
    ):
        rec.add_frame({**good, "observation.images.corner": np.zeros((8, 8, 3))})
    with pytest.raises(ValueError, match="action: expected finite values"):
        rec.add_frame({**good, "action": np.array([0, np.nan, 0, 0])})
    with pytest.raises(KeyError, match=r"unexpected keys \['observation.velocity'\]"):
        rec.add_frame({**good, "observation.velocity": np.zeros(3)})
    with pytest.raises(ValueError, match="embodiment: expected 'sawyer', got 'panda'"):
        rec.add_frame({**good, "embodiment": "panda"})
    with pytest.raises(ValueError, match="no frames were added"):
        rec.save_episode(task="x")
    rec.add_frame(good)
    rec.discard_episode()
    assert rec.buffered_frames == 0
    with pytest.raises(RuntimeError, match="another recorder is writing"):
        DatasetRecorder(root, fps=10, cameras=["corner"], image_size=8, resume=True)
    rec.add_frame(good)
    rec.save_episode(task="x")
    rec.close()
    with pytest.raises(FileExistsError, match="pass resume=True"):
        DatasetRecorder(root, fps=10, cameras=["corner"], image_size=8)
    with pytest.raises(
        fmt.DatasetFormatError,
        match=r"fps: dataset has 10, recorder was given 20.*"
        r"observation.images.corner.*\[8, 8, 3\].*\[16, 16, 3\]",
    ):
        DatasetRecorder(root, fps=20, cameras=["corner"], image_size=16, resume=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        DatasetRecorder(tmp_path / "other", fps=10, cameras=["corner"], image_size=8)


def test_collect_sigkill_then_resume(tmp_path):
    """The real `vlaforge collect` (Meta-World, scripted expert) killed mid-run, reopened and resumed."""
    out = tmp_path / "demo"
    cmd = [
        sys.executable,
        "-m",
        "vlaforge.cli",
        "collect",
        "--tasks",
        "reach-v3",
        "--episodes-per-task",
        "5",
        "--image-size",
        "32",
        "--out",
        str(out),
    ]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 90
    while time.time() < deadline and len(list((out / STAGING_DIR).glob("episode-*"))) < 2:
        assert p.poll() is None, p.stderr.read()
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    before = DatasetReader(out)
    assert before.num_episodes >= 2
    cols_before = before.columns(["observation.state", "action"])
    seeds_before = [e.seed for e in before.episodes]
    done = subprocess.run(
        cmd + ["--resume"], check=False, capture_output=True, text=True, env=env, timeout=180
    )
    assert done.returncode == 0, done.stderr
    assert "reach-v3" in done.stdout and f"(+{len(seeds_before)} before)" in done.stdout
    after = DatasetReader(out)
    seeds = [e.seed for e in after.episodes]
    assert len(seeds) == 5 and len(set(seeds)) == 5 and seeds[: len(seeds_before)] == seeds_before
    assert all(e.task_name == "reach-v3" and e.success for e in after.episodes)
    cols_after = after.columns(["observation.state", "action"])
    n = len(cols_before["action"])
    np.testing.assert_array_equal(cols_after["action"][:n], cols_before["action"])  # earlier episodes intact
    np.testing.assert_array_equal(cols_after["observation.state"][:n], cols_before["observation.state"])


def test_resume_removes_a_packed_episode_whose_removal_was_cut_short(tmp_path):
    """A kill inside pack()'s clean-up leaves a staged directory without its meta (already packed): resuming
    removes it and every episode stays readable (seen once in the SIGKILL test above)."""
    root = tmp_path / "ds"
    rec = DatasetRecorder(root, fps=10, cameras=["corner"], image_size=16, pack_every=2)
    for seed in range(2):
        for t in range(3 + seed % 5):  # what _check_episodes expects of each seed (as WRITER records)
            rec.add_frame({"observation.state": np.full(4, seed * 100 + t, np.float32),
                           "action": np.full(4, -seed - t / 10, np.float32),
                           "observation.images.corner": np.full((16, 16, 3), seed * 20 + t, np.uint8)})
        rec.save_episode(task=f"task-{seed % 3}", seed=seed, success=True)
    rec.close()
    leftover = root / STAGING_DIR / "episode-000001"
    leftover.mkdir(parents=True)
    (leftover / "observation.images.corner.mp4").write_bytes(b"half removed")
    rec = DatasetRecorder(root, fps=10, cameras=["corner"], image_size=16, resume=True, pack_every=2)
    rec.close()
    assert not leftover.exists()
    assert _check_episodes(root) == [0, 1]


def test_a_kill_before_the_first_meta_refresh_leaves_a_readable_dataset(tmp_path):
    """Rows committed, tasks.parquet not yet written, info.json still counting none (a kill inside the first
    pack): the reader derives the tasks from the rows; the recorder repairs the files on resume."""
    root = tmp_path / "ds"
    rec = DatasetRecorder(root, fps=10, cameras=["corner"], image_size=16, pack_every=2)
    for seed in range(2):
        for t in range(3 + seed % 5):
            rec.add_frame({"observation.state": np.full(4, seed * 100 + t, np.float32),
                           "action": np.full(4, -seed - t / 10, np.float32),
                           "observation.images.corner": np.full((16, 16, 3), seed * 20 + t, np.uint8)})
        rec.save_episode(task=f"task-{seed % 3}", seed=seed, success=True)
    rec.close()
    (root / fmt.TASKS_PATH).unlink()
    info = json.loads((root / fmt.INFO_PATH).read_text())
    (root / fmt.INFO_PATH).write_text(json.dumps(info | {"total_episodes": 0}))
    with pytest.warns(UserWarning, match="total_episodes is 0"):
        assert _check_episodes(root) == [0, 1]
    DatasetRecorder(root, fps=10, cameras=["corner"], image_size=16, resume=True, pack_every=2).close()
    assert (root / fmt.TASKS_PATH).is_file() and fmt.read_tasks(root) == ["task-0", "task-1"]
    (root / fmt.TASKS_PATH).unlink()  # now info.json is up to date: a missing tasks file is corruption
    with pytest.raises(fmt.DatasetFormatError, match="tasks.parquet is missing"):
        _check_episodes(root)


def test_episode_extras_are_kept_staged_and_packed(tmp_path):
    """``save_episode(extras=...)`` adds plain columns to the episode's row (how it was made); they read back
    from a staged episode and from the packed v3 files, where older episodes saved without them read None.
    Names the recorder fills itself, and non-scalar values, are refused."""
    root = tmp_path / "ds"
    good = {"observation.state": np.zeros(4), "action": np.zeros(4),
            "observation.images.corner": np.zeros((8, 8, 3), np.uint8)}
    rec = DatasetRecorder(root, fps=10, cameras=["corner"], image_size=8, pack_every=100)
    rec.add_frame(good)
    rec.save_episode(task="x")  # recorded before extras existed
    rec.add_frame(good)
    rec.save_episode(task="x", extras={"expert": "centred", "action_noise": 0.02})
    staged = rec.episodes()
    assert staged[1]["expert"] == "centred" and "expert" not in staged[0], staged
    assert DatasetReader(root).episodes[1].extras == {"expert": "centred", "action_noise": 0.02}
    rec.add_frame(good)
    with pytest.raises(ValueError, match=r"extras: expected identifier names other than .*got 'seed'"):
        rec.save_episode(task="x", extras={"seed": 3})
    with pytest.raises(ValueError, match=r"extras\['noise'\]: expected a str, int, float, bool or None, "
                                         r"got ndarray"):
        rec.save_episode(task="x", extras={"noise": np.zeros(2)})
    assert rec.buffered_frames == 1  # a refused save keeps the frames
    rec.close()  # packs
    packed = DatasetReader(root, include_staged=False).episodes
    assert [e.extras for e in packed] == [{"expert": None, "action_noise": None},
                                          {"expert": "centred", "action_noise": 0.02}]
