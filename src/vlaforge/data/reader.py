"""Open a LeRobot v3.0 dataset (ours or one LeRobot recorded), check it, read its columns and camera frames.

Episodes come from ``meta/episodes`` (the commit point of every write) followed by the episodes a recorder
has staged but not yet packed into the v3 files (``.vlaforge/staging``), so a collection that was killed
opens with every episode it finished. Files no episode points to (left by a killed writer) are ignored.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlaforge.data import format as fmt
from vlaforge.data.format import DatasetFormatError

STAGING_DIR = fmt.WORK_DIR + "/staging"
STAGED_META = "episode.json"
STAGED_DATA = "data.parquet"

_REQUIRED_EPISODE_COLUMNS = (
    "episode_index",
    "length",
    "dataset_from_index",
    "dataset_to_index",
    "data/chunk_index",
    "data/file_index",
)


@dataclass
class EpisodeRef:
    """Where one episode lives and what it is."""

    index: int
    length: int
    tasks: list[str]
    data_file: Path
    videos: dict[str, tuple[Path, float]] = field(default_factory=dict)  # key -> (file, from_timestamp)
    task_name: str | None = None
    seed: int | None = None
    success: bool | None = None
    staged: bool = False
    start: int = 0  # first frame's position in the reader's frame order
    extras: dict = field(default_factory=dict)  # further columns of its row, e.g. {"expert": "centred"}


def staged_video_path(ep_dir: Path, key: str) -> Path:
    return ep_dir / f"{key}.mp4"


def list_staged(root: Path) -> list[tuple[int, Path]]:
    """``(episode_index, dir)`` of committed staged episodes, sorted (temp dirs start with '.')."""
    d = root / STAGING_DIR
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        if p.is_dir() and p.name.startswith("episode-") and (p / STAGED_META).is_file():
            try:
                out.append((int(p.name.split("-", 1)[1]), p))
            except ValueError:
                continue
    return sorted(out)


def derive_tasks(known: Sequence[str], rows: Sequence[Mapping]) -> list[str]:
    """The task table: ``known`` then every task of ``rows`` (episode order) not yet in it."""
    tasks = list(known)
    seen = set(tasks)
    for r in rows:
        for t in r.get("tasks") or []:
            if t not in seen:
                seen.add(t)
                tasks.append(t)
    return tasks


class DatasetReader:
    """A checked, read-only view of a dataset directory."""

    def __init__(self, root: str | Path, include_staged: bool = True, warn_stale: bool = True):
        import pyarrow.parquet as pq

        self.root = root = Path(root)
        self.info = fmt.load_info(root)
        self.features: dict[str, dict] = self.info["features"]
        self.fps = int(self.info["fps"])
        self.robot_type = self.info.get("robot_type") or "unknown"
        self.video_keys = fmt.video_keys(self.features)
        self.camera_keys = self.video_keys + fmt.image_keys(self.features)

        rows = fmt.read_episodes(root)
        if not rows and int(self.info.get("total_episodes", 0)) > 0:
            raise DatasetFormatError(
                f"{root / fmt.EPISODES_DIR}: meta/info.json lists {self.info['total_episodes']} episodes, "
                f"but there is no meta/episodes/chunk-*/file-*.parquet"
            )
        self._check_rows(rows)
        has_tasks = (root / fmt.TASKS_PATH).is_file()
        # a writer killed between committing its first episode rows and refreshing the meta files leaves rows,
        # no tasks.parquet and an info.json that counts fewer episodes: the tasks are derived from the rows
        # (what the refresh writes); without that sign of an interrupted writer, a missing file is an error
        interrupted = int(self.info.get("total_episodes", 0)) < len(rows)
        known = fmt.read_tasks(root) if has_tasks or (rows and not interrupted) else []
        staged_rows: list[tuple[dict, Path]] = []
        if include_staged:
            for idx, d in list_staged(root):
                if idx < len(rows):
                    continue  # already packed; the writer had not removed it yet
                if idx != len(rows) + len(staged_rows):
                    break  # a gap: nothing after it is part of the dataset
                staged_rows.append((json.loads((d / STAGED_META).read_text()), d))
        self.tasks = derive_tasks(known, [*rows, *(r for r, _ in staged_rows)])

        self.episodes: list[EpisodeRef] = []
        for r in rows:
            self.episodes.append(self._ref(r))
        for r, d in staged_rows:
            ref = self._ref(r, staged_dir=d)
            self.episodes.append(ref)
        pos = 0
        for ep in self.episodes:
            ep.start = pos
            pos += ep.length
        self.num_frames = pos
        self._check_files(pq)
        n_info = int(self.info.get("total_episodes", 0))
        if warn_stale and n_info != len(rows):
            warnings.warn(
                f"{root / fmt.INFO_PATH}: total_episodes is {n_info} but meta/episodes lists {len(rows)}; "
                f"the writer was interrupted before it refreshed info.json "
                f"(reopening it with the recorder repairs it)",
                stacklevel=2,
            )

    # ------------------------------------------------------------------ checks

    def _check_rows(self, rows: list[dict]) -> None:
        where = self.root / fmt.EPISODES_DIR
        if not rows:
            return
        need = list(_REQUIRED_EPISODE_COLUMNS)
        for k in self.video_keys:
            need += [f"videos/{k}/chunk_index", f"videos/{k}/file_index", f"videos/{k}/from_timestamp"]
        missing = [c for c in need if c not in rows[0]]
        if missing:
            raise DatasetFormatError(f"{where}: episode rows lack columns {missing}")
        expect_from = 0
        for i, r in enumerate(rows):
            if r["episode_index"] != i:
                raise DatasetFormatError(
                    f"{where}: expected episode_index {i} in row {i}, got {r['episode_index']}"
                )
            if (
                r["dataset_from_index"] != expect_from
                or r["dataset_to_index"] - r["dataset_from_index"] != r["length"]
            ):
                raise DatasetFormatError(
                    f"{where}: episode {i}: frames [{r['dataset_from_index']}, {r['dataset_to_index']}) "
                    f"with length {r['length']} do not follow the previous episode "
                    f"(expected to start at {expect_from})"
                )
            expect_from = r["dataset_to_index"]

    def _ref(self, r: Mapping, staged_dir: Path | None = None) -> EpisodeRef:
        if staged_dir is None:
            data = self.root / self.info["data_path"].format(
                chunk_index=r["data/chunk_index"], file_index=r["data/file_index"]
            )
            videos = {
                k: (
                    self.root
                    / self.info["video_path"].format(
                        video_key=k,
                        chunk_index=r[f"videos/{k}/chunk_index"],
                        file_index=r[f"videos/{k}/file_index"],
                    ),
                    float(r[f"videos/{k}/from_timestamp"]),
                )
                for k in self.video_keys
            }
        else:
            data = staged_dir / STAGED_DATA
            videos = {k: (staged_video_path(staged_dir, k), 0.0) for k in self.video_keys}
        return EpisodeRef(
            index=int(r["episode_index"]),
            length=int(r["length"]),
            tasks=list(r.get("tasks") or []),
            data_file=data,
            videos=videos,
            task_name=r.get("task_name"),
            seed=r.get("seed"),
            success=r.get("success"),
            staged=staged_dir is not None,
            extras={k: v for k, v in r.items() if k not in fmt.EPISODE_ROW_KEYS and "/" not in k},
        )

    def _check_files(self, pq) -> None:
        from vlaforge.data import video as vid

        seen: set[Path] = set()
        for ep in self.episodes:
            if ep.data_file not in seen:
                seen.add(ep.data_file)
                if not ep.data_file.is_file():
                    raise DatasetFormatError(f"{ep.data_file}: data file of episode {ep.index} is missing")
                fmt.check_data_schema(pq.read_schema(ep.data_file), self.features, ep.data_file)
            for key, (path, _) in ep.videos.items():
                if path in seen:
                    continue
                seen.add(path)
                if not path.is_file():
                    raise DatasetFormatError(f"{path}: video file of episode {ep.index} ({key}) is missing")
                info = vid.probe(path)
                h, w, _ = fmt.image_hwc(key, self.features[key])
                if (info["video.height"], info["video.width"]) != (h, w):
                    raise DatasetFormatError(
                        f"{path}: feature {key!r} is {h}x{w} in meta/info.json, the video is "
                        f"{info['video.height']}x{info['video.width']}"
                    )

    # ------------------------------------------------------------------ reading

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    def task_of(self, ep: EpisodeRef) -> str:
        return ep.tasks[0] if ep.tasks else ""

    def columns(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Every frame's values of ``keys`` (non-video features), episodes in order: (N,) or (N, n) arrays."""
        import pyarrow.parquet as pq

        for k in keys:
            if k not in self.features or self.features[k]["dtype"] in ("video", "image"):
                raise KeyError(
                    f"columns: {k!r} is not a data feature; data features: "
                    f"{sorted(fmt.data_features(self.features))}"
                )
        parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        cache: dict[Path, tuple[dict[str, np.ndarray], np.ndarray, dict[int, np.ndarray]]] = {}
        for ep in self.episodes:
            if ep.data_file not in cache:
                cols = list(dict.fromkeys([*keys, "episode_index", "frame_index"]))
                t = pq.read_table(ep.data_file, columns=cols)
                arrays = {k: fmt.column_to_numpy(t, k, self.features[k], ep.data_file) for k in cols}
                epi = arrays["episode_index"]
                order = np.lexsort((arrays["frame_index"], epi))
                groups: dict[int, np.ndarray] = {}
                if len(order):
                    sorted_ep = epi[order]
                    cuts = np.flatnonzero(np.diff(sorted_ep)) + 1
                    for chunk in np.split(order, cuts):
                        groups[int(epi[chunk[0]])] = chunk
                cache = {
                    ep.data_file: (arrays, epi, groups)
                }  # one file at a time: files are in episode order
            arrays, _, groups = cache[ep.data_file]
            rows = groups.get(ep.index, np.zeros(0, dtype=np.int64))
            if len(rows) != ep.length:
                raise DatasetFormatError(
                    f"{ep.data_file}: holds {len(rows)} frames of episode {ep.index}, "
                    f"meta/episodes says {ep.length}"
                )
            for k in keys:
                parts[k].append(arrays[k][rows])
        return {k: (np.concatenate(v) if v else np.zeros((0,), np.float32)) for k, v in parts.items()}

    def decode_camera(self, key: str, out: np.ndarray, progress: Callable[[int], None] | None = None) -> None:
        """Fill ``out`` (uint8 (N, H, W, 3)) with every frame of camera ``key``, decoding each file once."""
        from vlaforge.data import video as vid

        if key not in self.camera_keys:
            raise KeyError(f"decode_camera: {key!r} is not a camera; cameras: {self.camera_keys}")
        if self.features[key]["dtype"] == "image":
            return self._decode_images(key, out, progress)
        by_file: dict[Path, list[EpisodeRef]] = {}
        for ep in self.episodes:
            by_file.setdefault(ep.videos[key][0], []).append(ep)
        for path, eps in by_file.items():
            try:
                vid.decode_ranges(
                    path,
                    self.fps,
                    [(ep.videos[key][1], ep.length) for ep in eps],
                    [out[ep.start : ep.start + ep.length] for ep in eps],
                )
            except vid.VideoError as e:
                raise DatasetFormatError(f"{key}, episodes {eps[0].index}..{eps[-1].index}: {e}") from e
            if progress is not None:
                progress(sum(ep.length for ep in eps))

    def _decode_images(self, key: str, out: np.ndarray, progress) -> None:
        import io

        import pyarrow.parquet as pq
        from PIL import Image

        done: set[Path] = set()
        for ep in self.episodes:
            if ep.data_file in done:
                continue
            done.add(ep.data_file)
            t = pq.read_table(ep.data_file, columns=[key, "episode_index", "frame_index"])
            col = t.column(key).to_pylist()
            epi = t.column("episode_index").to_pylist()
            fi = t.column("frame_index").to_pylist()
            starts = {e.index: e.start for e in self.episodes if e.data_file == ep.data_file}
            for img, e, f in zip(col, epi, fi):
                if e in starts:
                    out[starts[e] + f] = np.asarray(Image.open(io.BytesIO(img["bytes"])).convert("RGB"))
            if progress is not None:
                progress(len(col))

    def fingerprint(self) -> str:
        """Changes whenever an episode is added or a referenced file is rewritten."""
        files = {self.root / fmt.INFO_PATH}
        files.update(sorted((self.root / fmt.EPISODES_DIR).glob("chunk-*/file-*.parquet")))
        for ep in self.episodes:
            files.add(ep.data_file)
            files.update(p for p, _ in ep.videos.values())
        h = hashlib.sha256()
        for entry in fmt.file_fingerprint(sorted(files)):
            h.update(repr((str(Path(entry[0]).relative_to(self.root)), entry[1], entry[2])).encode())
        h.update(repr([(e.index, e.length) for e in self.episodes]).encode())
        return h.hexdigest()[:16]

    def summary(self) -> dict:
        return {
            "root": str(self.root),
            "codebase_version": self.info["codebase_version"],
            "robot_type": self.robot_type,
            "fps": self.fps,
            "episodes": self.num_episodes,
            "staged_episodes": sum(e.staged for e in self.episodes),
            "frames": self.num_frames,
            "tasks": len(self.tasks),
        }
