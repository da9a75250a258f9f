"""Record episodes into a LeRobot v3.0 dataset; every episode commits atomically.

How a kill at any moment (SIGKILL included) leaves the dataset:

1. ``save_episode`` writes the episode (data.parquet, one mp4 per camera, episode.json) into a temp directory
   under ``.vlaforge/staging`` and renames it to ``episode-NNNNNN``: that rename is the episode's commit.
2. Every ``pack_every`` episodes, and at ``close()``, staged episodes are packed into the v3 files: new
   ``data/chunk-C/file-F.parquet`` and ``videos/<key>/chunk-C/file-F.mp4`` (always new file indices, never a
   rewrite of a packed file), then the last ``meta/episodes`` file is replaced with one that lists them. That
   replace is the commit point of the pack; tasks.parquet, stats.json and info.json follow, then the staged
   directories are deleted.
3. Opening a recorder on an existing dataset (``resume=True``) repairs whatever a kill left: staged copies of
   packed episodes, files no episode points to, and stale tasks/stats/info.

Readers (``DatasetReader``, ``ChunkDataset``) see packed episodes plus committed staged ones, and ignore the
rest.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from vlaforge.data import format as fmt
from vlaforge.data import stats as st
from vlaforge.data import video as vid
from vlaforge.data.format import DatasetFormatError
from vlaforge.data.reader import (
    STAGED_DATA,
    STAGED_META,
    STAGING_DIR,
    DatasetReader,
    derive_tasks,
    list_staged,
)
from vlaforge.fsutil import atomic_path, fsync_dir, fsync_file
from vlaforge.types import ACTION, EMBODIMENT, OBS_ENV_STATE, OBS_STATE, TASK, image_key

LOCK_FILE = fmt.WORK_DIR + "/writer.lock"



class DatasetRecorder:
    """Append episodes to ``root``. Use as a context manager, or call ``close()``.

    ``add_frame(frame)`` takes a DESIGN frame dict plus ``"action"`` (and optionally ``"next.success"``);
    ``save_episode(task=..., seed=..., success=...)`` commits the frames added since the last save;
    ``discard_episode()`` drops them. ``task`` is the task's name (e.g. ``"pick-place-v3"``); ``instruction``
    is the sentence stored as LeRobot's task string (default: ``task``).
    """

    def __init__(
        self,
        root: str | Path,
        fps: int,
        cameras: Sequence[str],
        image_size: int,
        robot_type: str = "sawyer",
        state_dim: int = 4,
        action_dim: int = 4,
        state_names: Sequence[str] | None = None,
        action_names: Sequence[str] | None = None,
        env_state_dim: int = 0,
        env_state_names: Sequence[str] | None = None,
        video: vid.VideoSettings | None = None,
        resume: bool = False,
        pack_every: int = 50,
        chunks_size: int = fmt.DEFAULT_CHUNKS_SIZE,
        data_files_size_in_mb: int = fmt.DEFAULT_DATA_FILES_MB,
        video_files_size_in_mb: int = fmt.DEFAULT_VIDEO_FILES_MB,
    ):
        if int(fps) <= 0 or int(image_size) <= 0:
            raise ValueError(f"fps and image_size: expected positive ints, got {fps} and {image_size}")
        self.root = Path(root)
        self.fps = int(fps)
        self.cameras = tuple(cameras)
        self.image_size = int(image_size)
        self.robot_type = robot_type
        self.video = video or vid.VideoSettings()
        self.pack_every = max(1, int(pack_every))
        self.features = fmt.make_features(
            self.cameras, self.image_size, state_dim, action_dim, state_names, action_names,
            env_state_dim, env_state_names,
        )
        self.state_dim, self.action_dim, self.env_state_dim = (int(state_dim), int(action_dim),
                                                               int(env_state_dim))
        self._lock_fd: int | None = None
        self._buffer: list[dict[str, Any]] = []
        self._closed = False

        info_path = self.root / fmt.INFO_PATH
        if info_path.exists():
            if not resume:
                raise FileExistsError(
                    f"{self.root}: a dataset is already there; pass resume=True (--resume) to add to it, "
                    f"or choose another directory"
                )
        elif self.root.exists() and any(p.name != fmt.WORK_DIR for p in self.root.iterdir()):
            raise FileExistsError(
                f"{self.root}: directory is not empty and holds no dataset (no meta/info.json)"
            )
        self._lock()
        if info_path.exists():
            self.info = fmt.load_info(self.root)
            self._check_compatible(self.info)
            self.recover()
        else:
            self.info = fmt.make_info(
                self.fps,
                robot_type,
                self.features,
                chunks_size=chunks_size,
                data_files_size_in_mb=data_files_size_in_mb,
                video_files_size_in_mb=video_files_size_in_mb,
            )
            fmt.write_json(info_path, self.info)
        self._load_state()

    # ------------------------------------------------------------------ lifecycle

    def _lock(self) -> None:
        import fcntl

        work = self.root / fmt.WORK_DIR
        work.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(self.root / LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise RuntimeError(f"{self.root}: another recorder is writing this dataset") from e
            raise
        self._lock_fd = fd

    def close(self) -> None:
        """Pack staged episodes into the v3 files and release the dataset. Unsaved frames are dropped."""
        if self._closed:
            return
        try:
            self._buffer.clear()
            self.pack()
        finally:
            self._closed = True
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_compatible(self, info: Mapping) -> None:
        problems = []
        if int(info["fps"]) != self.fps:
            problems.append(f"fps: dataset has {info['fps']}, recorder was given {self.fps}")
        if info.get("robot_type") != self.robot_type:
            problems.append(
                f"robot_type: dataset has {info.get('robot_type')!r}, recorder was given {self.robot_type!r}"
            )
        have, want = info["features"], self.features
        for k in sorted(set(have) | set(want)):
            a, b = have.get(k), want.get(k)
            if a is None or b is None:
                problems.append(
                    f"feature {k!r}: {'missing in the dataset' if a is None else 'not recorded now'}"
                )
            elif (a["dtype"], list(a["shape"])) != (b["dtype"], list(b["shape"])):
                problems.append(
                    f"feature {k!r}: dataset has {a['dtype']} {a['shape']}, "
                    f"recorder has {b['dtype']} {b['shape']}"
                )
        if problems:
            raise DatasetFormatError(
                f"{self.root}: cannot resume, the recording differs: " + "; ".join(problems)
            )

    def _load_state(self) -> None:
        self._rows = fmt.read_episodes(self.root)
        staged = [(i, d) for i, d in list_staged(self.root) if i >= len(self._rows)]
        self._staged_rows = [json.loads((d / STAGED_META).read_text()) for _, d in staged]
        known = fmt.read_tasks(self.root) if (self.root / fmt.TASKS_PATH).is_file() else []
        self.tasks = derive_tasks(known, [*self._rows, *self._staged_rows])
        all_rows = [*self._rows, *self._staged_rows]
        self.num_episodes = len(all_rows)
        self.num_frames = int(sum(r["length"] for r in all_rows))

    def episodes(self) -> list[dict]:
        """``{episode_index, task_name, seed, success, length}`` of every committed episode, and the
        ``extras`` it was saved with."""
        keys = ("episode_index", "task_name", "seed", "success", "length")
        return [{k: r.get(k) for k in keys}
                | {k: v for k, v in r.items() if k not in fmt.EPISODE_ROW_KEYS and "/" not in k}
                for r in [*self._rows, *self._staged_rows]]

    # ------------------------------------------------------------------ frames and episodes

    def add_frame(self, frame: Mapping[str, Any]) -> None:
        """Buffer one frame: ``observation.state`` (P,), ``action`` (D,), each camera uint8 (H, W, 3), and
        ``observation.environment_state`` (E,) when the recorder was made with ``env_state_dim`` E > 0."""
        if self._closed:
            raise RuntimeError("add_frame: the recorder is closed")
        allowed = {OBS_STATE, ACTION, fmt.SUCCESS, TASK, EMBODIMENT, *(image_key(c) for c in self.cameras)}
        if self.env_state_dim:
            allowed.add(OBS_ENV_STATE)
        extra = sorted(set(frame) - allowed)
        if extra:
            raise KeyError(f"add_frame: unexpected keys {extra}; expected {sorted(allowed)}")
        emb = frame.get(EMBODIMENT)
        if emb is not None and emb != self.robot_type:
            raise ValueError(f"add_frame: embodiment: expected {self.robot_type!r}, got {emb!r}")
        out: dict[str, Any] = {}
        dims = [(OBS_STATE, self.state_dim), (ACTION, self.action_dim)]
        if self.env_state_dim:
            dims.append((OBS_ENV_STATE, self.env_state_dim))
        for key, dim in dims:
            if key not in frame:
                raise KeyError(f"add_frame: missing {key!r}")
            v = np.asarray(frame[key], dtype=np.float32)
            if v.shape != (dim,):
                raise ValueError(f"add_frame: {key}: expected shape ({dim},), got {v.shape}")
            if not np.all(np.isfinite(v)):
                raise ValueError(f"add_frame: {key}: expected finite values, got {v.tolist()}")
            out[key] = v
        for cam in self.cameras:
            key = image_key(cam)
            if key not in frame:
                raise KeyError(f"add_frame: missing {key!r}")
            img = np.asarray(frame[key])
            want = (self.image_size, self.image_size, 3)
            if img.dtype != np.uint8 or img.shape != want:
                raise ValueError(f"add_frame: {key}: expected uint8 {want}, got {img.dtype} {img.shape}")
            out[key] = img
        out[fmt.SUCCESS] = bool(np.asarray(frame.get(fmt.SUCCESS, False)).reshape(-1)[0])
        self._buffer.append(out)

    @property
    def buffered_frames(self) -> int:
        return len(self._buffer)

    def discard_episode(self) -> None:
        """Drop the frames added since the last save."""
        self._buffer.clear()

    def save_episode(
        self, task: str, seed: int | None = None, success: bool | None = None, instruction: str | None = None,
        extras: Mapping[str, str | int | float | bool | None] | None = None,
    ) -> int:
        """Commit the buffered frames as one episode; returns its episode_index. ``extras``: more columns of
        the episode's row in ``meta/episodes`` (scalars, e.g. how it was made: ``{"expert": "centred"}``);
        ``episodes()`` returns them."""
        if self._closed:
            raise RuntimeError("save_episode: the recorder is closed")
        extras = dict(extras or {})
        for k, v in extras.items():
            if not (isinstance(k, str) and k.isidentifier()) or k in fmt.EPISODE_ROW_KEYS:
                raise ValueError(f"save_episode extras: expected identifier names other than "
                                 f"{sorted(fmt.EPISODE_ROW_KEYS)}, got {k!r}")
            if v is not None and not isinstance(v, (str, int, float, bool)):
                raise ValueError(f"save_episode extras[{k!r}]: expected a str, int, float, bool or None, "
                                 f"got {type(v).__name__}")
        n = len(self._buffer)
        if n == 0:
            raise ValueError("save_episode: no frames were added since the last save")
        text = instruction if instruction is not None else task
        if text not in self.tasks:
            self.tasks.append(text)
        task_index = self.tasks.index(text)
        idx, start = self.num_episodes, self.num_frames
        frames = self._buffer
        cols: dict[str, np.ndarray] = {
            OBS_STATE: np.stack([f[OBS_STATE] for f in frames]),  # (n, P)
            ACTION: np.stack([f[ACTION] for f in frames]),  # (n, D)
            fmt.SUCCESS: np.array([f[fmt.SUCCESS] for f in frames]),
            fmt.DONE: np.arange(n) == n - 1,
            "timestamp": (np.arange(n) / self.fps).astype(np.float32),
            "frame_index": np.arange(n, dtype=np.int64),
            "episode_index": np.full(n, idx, dtype=np.int64),
            "index": np.arange(start, start + n, dtype=np.int64),
            "task_index": np.full(n, task_index, dtype=np.int64),
        }
        if self.env_state_dim:
            cols[OBS_ENV_STATE] = np.stack([f[OBS_ENV_STATE] for f in frames])  # (n, E)
        staging = self.root / STAGING_DIR
        tmp = staging / f".tmp-episode-{idx:06d}"
        final = staging / f"episode-{idx:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        fmt.write_parquet(tmp / STAGED_DATA, fmt.frames_table(self.features, cols))
        ep_stats = {k: st.feature_stats(v) for k, v in cols.items()}
        for cam in self.cameras:
            key = image_key(cam)
            imgs = np.stack([f[key] for f in frames])  # (n, H, W, 3)
            mp4 = tmp / f"{key}.mp4"
            vid.encode_frames(imgs, mp4, self.fps, self.video)
            fsync_file(mp4)
            ep_stats[key] = st.image_stats(imgs)
        row = {
            "episode_index": idx,
            "tasks": [text],
            "length": n,
            "dataset_from_index": start,
            "dataset_to_index": start + n,
            "task_name": task,
            "seed": None if seed is None else int(seed),
            "success": None if success is None else bool(success),
            **extras,
            **fmt.flatten_stats(ep_stats),
        }
        fmt.write_json(tmp / STAGED_META, row)
        os.replace(tmp, final)  # the commit
        fsync_dir(staging)
        self._buffer = []
        self._staged_rows.append(row)
        self.num_episodes += 1
        self.num_frames += n
        if len(self._staged_rows) >= self.pack_every:
            self.pack()
        return idx

    # ------------------------------------------------------------------ packing

    def pack(self) -> int:
        """Move staged episodes into the v3 files (see the module doc). Returns how many were packed."""
        staged = [(i, d) for i, d in list_staged(self.root) if i >= len(self._rows)]
        if not staged:
            return 0
        if [i for i, _ in staged] != list(range(len(self._rows), len(self._rows) + len(staged))):
            raise DatasetFormatError(
                f"{self.root / STAGING_DIR}: staged episodes are not contiguous: "
                f"{[i for i, _ in staged][:10]} after {len(self._rows)} packed"
            )
        rows = [json.loads((d / STAGED_META).read_text()) for _, d in staged]
        next_data = self._next_file(self._rows, "data")
        next_video = {
            image_key(c): self._next_file(self._rows, f"videos/{image_key(c)}") for c in self.cameras
        }
        for group in self._groups(staged):
            self._pack_group(group, rows, staged, next_data, next_video)
            next_data = fmt.next_chunk_file(*next_data, int(self.info["chunks_size"]))
            next_video = {
                k: fmt.next_chunk_file(*v, int(self.info["chunks_size"])) for k, v in next_video.items()
            }
        self._commit_rows(rows)
        for _, d in staged:
            shutil.rmtree(d, ignore_errors=True)
        self._load_state()
        return len(staged)

    def _next_file(self, rows: list[dict], prefix: str) -> tuple[int, int]:
        locs = [
            (r[f"{prefix}/chunk_index"], r[f"{prefix}/file_index"])
            for r in rows
            if f"{prefix}/chunk_index" in r
        ]
        return fmt.next_chunk_file(*max(locs), int(self.info["chunks_size"])) if locs else (0, 0)

    def _groups(self, staged: list[tuple[int, Path]]) -> list[list[int]]:
        """Positions in ``staged`` per output file, keeping files under the size limits."""
        data_cap = float(self.info.get("data_files_size_in_mb", fmt.DEFAULT_DATA_FILES_MB)) * 2**20
        video_cap = float(self.info.get("video_files_size_in_mb", fmt.DEFAULT_VIDEO_FILES_MB)) * 2**20
        groups: list[list[int]] = [[]]
        data_size, video_size = 0.0, 0.0
        for j, (_, d) in enumerate(staged):
            ds = (d / STAGED_DATA).stat().st_size
            vs = max([(d / f"{image_key(c)}.mp4").stat().st_size for c in self.cameras] or [0])
            if groups[-1] and (data_size + ds > data_cap or video_size + vs > video_cap):
                groups.append([])
                data_size, video_size = 0.0, 0.0
            groups[-1].append(j)
            data_size += ds
            video_size += vs
        return groups

    def _pack_group(self, group, rows, staged, data_loc, video_locs) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        dirs = [staged[j][1] for j in group]
        data_path = self.root / self.info["data_path"].format(chunk_index=data_loc[0], file_index=data_loc[1])
        table = pa.concat_tables([pq.read_table(d / STAGED_DATA) for d in dirs])
        fmt.write_parquet(data_path, table)
        for j in group:
            rows[j]["data/chunk_index"], rows[j]["data/file_index"] = data_loc
        for key, loc in video_locs.items():
            out = self.root / self.info["video_path"].format(
                video_key=key, chunk_index=loc[0], file_index=loc[1]
            )
            with atomic_path(out) as tmp:
                starts = vid.concat(
                    [d / f"{key}.mp4" for d in dirs],
                    tmp,
                    self.fps,
                    [rows[j]["length"] for j in group],
                    self.video,
                )
            for j, t0 in zip(group, starts):
                rows[j][f"videos/{key}/chunk_index"], rows[j][f"videos/{key}/file_index"] = loc
                rows[j][f"videos/{key}/from_timestamp"] = t0
                rows[j][f"videos/{key}/to_timestamp"] = t0 + rows[j]["length"] / self.fps

    def _commit_rows(self, new_rows: list[dict]) -> None:
        """Replace the last meta/episodes file with one that also lists ``new_rows``: the pack's commit."""
        import pyarrow.parquet as pq

        files = sorted((self.root / fmt.EPISODES_DIR).glob("chunk-*/file-*.parquet"))
        if files:
            last = files[-1]
            chunk, file = int(last.parent.name.split("-")[1]), int(last.stem.split("-")[1])
            old = pq.read_table(last).to_pylist()
        else:
            chunk, file, old = 0, 0, []
        for r in new_rows:
            r["meta/episodes/chunk_index"], r["meta/episodes/file_index"] = chunk, file
        fmt.write_parquet(
            self.root / fmt.EPISODES_PATH.format(chunk_index=chunk, file_index=file),
            fmt.episodes_table([*old, *new_rows]),
        )
        self._refresh_meta()

    def _refresh_meta(self) -> None:
        """Rewrite tasks.parquet, stats.json and info.json from meta/episodes and the data files."""
        rows = fmt.read_episodes(self.root)
        known = fmt.read_tasks(self.root) if (self.root / fmt.TASKS_PATH).is_file() else []
        tasks = derive_tasks(known, rows)
        if rows:
            fmt.write_parquet(self.root / fmt.TASKS_PATH, fmt.tasks_table(tasks))
            reader = DatasetReader(self.root, include_staged=False, warn_stale=False)
            numeric = [
                k
                for k, f in fmt.data_features(reader.features).items()
                if f["dtype"] not in ("string", "image")
            ]
            cols = reader.columns(numeric)
            stats = {k: st.feature_stats(v) for k, v in cols.items()}
            per_ep = fmt.read_episode_stats(self.root)
            for key in reader.camera_keys:
                parts = [s[key] for s in per_ep if key in s]
                if parts:
                    stats[key] = st.aggregate(parts)
            fmt.write_json(self.root / fmt.STATS_PATH, st.to_json(stats))
            for key in reader.video_keys:
                first = reader.episodes[0].videos[key][0]
                self.info["features"][key]["info"] = {**vid.probe(first), **self.video.info()}
        self.info.update(
            total_episodes=len(rows),
            total_frames=int(sum(r["length"] for r in rows)),
            total_tasks=len(tasks),
            splits={"train": f"0:{len(rows)}"},
        )
        fmt.write_json(self.root / fmt.INFO_PATH, self.info)

    # ------------------------------------------------------------------ recovery

    def recover(self) -> dict:
        """Undo what a killed writer left half-done; returns counts of what was cleaned."""
        rows = fmt.read_episodes(self.root)
        done = {"staged_removed": 0, "orphans_removed": 0, "meta_refreshed": False}
        staging = self.root / STAGING_DIR
        if staging.is_dir():
            for p in staging.iterdir():
                if p.name.startswith(".tmp-"):
                    shutil.rmtree(p, ignore_errors=True)
                elif p.name.startswith("episode-") and not (p / STAGED_META).is_file():
                    # a committed episode always has its meta: this one was packed and its removal cut short
                    shutil.rmtree(p, ignore_errors=True)
                    done["staged_removed"] += 1
        expect = len(rows)
        for i, d in list_staged(self.root):
            if i < len(rows) or i != expect:  # packed already, or after a gap (unreachable)
                shutil.rmtree(d, ignore_errors=True)
                done["staged_removed"] += 1
            else:
                expect += 1
        referenced = set()
        for r in rows:
            referenced.add(
                self.root
                / self.info["data_path"].format(
                    chunk_index=r["data/chunk_index"], file_index=r["data/file_index"]
                )
            )
            for key in fmt.video_keys(self.info["features"]):
                referenced.add(
                    self.root
                    / self.info["video_path"].format(
                        video_key=key,
                        chunk_index=r[f"videos/{key}/chunk_index"],
                        file_index=r[f"videos/{key}/file_index"],
                    )
                )
        candidates = list((self.root / "data").glob("chunk-*/*")) + list(
            (self.root / "videos").glob("*/chunk-*/*")
        )
        for p in candidates:
            if p.is_file() and p not in referenced:
                p.unlink()
                done["orphans_removed"] += 1
        tasks_ok = True
        if rows:
            known = fmt.read_tasks(self.root) if (self.root / fmt.TASKS_PATH).is_file() else []
            tasks_ok = derive_tasks(known, rows) == known
        stale = (
            int(self.info.get("total_episodes", -1)) != len(rows)
            or not tasks_ok
            or (bool(rows) and not (self.root / fmt.STATS_PATH).is_file())
        )
        if stale:
            self._refresh_meta()
            done["meta_refreshed"] = True
        return done
