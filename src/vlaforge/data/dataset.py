"""Training items from a dataset: one frame's observation and the chunk of actions that follows it.

Camera frames are decoded once into a uint8 memory-mapped cache beside the dataset
(``.vlaforge/cache/<fingerprint>/``) so training never waits on video decoding. The fingerprint covers
info.json, the episode index and every data and video file (path, size, mtime), so adding an episode or
rewriting a file builds a new cache (and removes the old one).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlaforge.data import format as fmt
from vlaforge.data.format import DatasetFormatError
from vlaforge.data.reader import DatasetReader
from vlaforge.data.stats import policy_stats
from vlaforge.types import ACTION, ACTION_IS_PAD, EMBODIMENT, OBS_ENV_STATE, OBS_STATE, TASK

CACHE_DIR = fmt.WORK_DIR + "/cache"
SPLITS = ("train", "val", "all")


# ---------------------------------------------------------------------------------------------- frame cache


def frame_cache(
    reader: DatasetReader, cache_dir: str | Path | None = None, progress: bool = True
) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """``{camera_key: (raw uint8 file, (N, H, W, 3))}``, built on first use and whenever the dataset changes.

    Open one with ``open_cached(path, shape)``."""
    base = Path(cache_dir) if cache_dir is not None else _default_cache_base(reader.root)
    fp = reader.fingerprint()
    final = base / fp
    shapes = {k: (reader.num_frames, *fmt.image_hwc(k, reader.features[k])) for k in reader.camera_keys}
    if not _cache_ok(final, fp, shapes):
        _build_cache(reader, base, final, fp, shapes, progress)
    for old in base.iterdir():
        if old.name != fp and not old.name.startswith(".tmp-"):
            shutil.rmtree(old, ignore_errors=True)  # caches of an older version of the data
    return {k: (final / f"{_safe(k)}.u8", shape) for k, shape in shapes.items()}


def open_cached(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    return np.memmap(
        path, dtype=np.uint8, mode="c", shape=shape
    )  # copy-on-write: writable views, no disk writes


def _default_cache_base(root: Path) -> Path:
    """``root/.vlaforge/cache``, or a per-dataset folder under ~/.cache/vlaforge when root is read-only."""
    base = root / CACHE_DIR
    try:
        base.mkdir(parents=True, exist_ok=True)
        if os.access(base, os.W_OK):
            return base
    except OSError:
        pass
    import hashlib

    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vlaforge" / "frames" / key


def _safe(key: str) -> str:
    return key.replace("/", "_")


def _cache_ok(path: Path, fp: str, shapes: Mapping[str, tuple]) -> bool:
    try:
        meta = json.loads((path / "cache.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    want = {k: list(s) for k, s in shapes.items()}
    if meta.get("fingerprint") != fp or meta.get("shapes") != want:
        return False
    return all((path / f"{_safe(k)}.u8").stat().st_size == int(np.prod(s)) for k, s in shapes.items())


def _build_cache(reader: DatasetReader, base: Path, final: Path, fp: str, shapes, progress: bool) -> None:
    from tqdm import tqdm

    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{fp}-", dir=base))
    try:
        total = reader.num_frames * len(shapes)
        with tqdm(
            total=total,
            desc="decoding frames into the cache",
            unit="frame",
            disable=not progress,
            dynamic_ncols=True,
        ) as bar:
            for key, shape in shapes.items():
                arr = np.memmap(tmp / f"{_safe(key)}.u8", dtype=np.uint8, mode="w+", shape=shape)
                reader.decode_camera(key, arr, progress=bar.update)
                arr.flush()
                del arr
        (tmp / "cache.json").write_text(
            json.dumps({"fingerprint": fp, "shapes": {k: list(s) for k, s in shapes.items()}})
        )
        if final.exists() and not _cache_ok(final, fp, shapes):
            shutil.rmtree(final, ignore_errors=True)  # a broken leftover (never a complete cache in use)
        try:
            os.replace(
                tmp, final
            )  # fails on a non-empty final: another process (e.g. a DDP rank) won the race
        except OSError:
            if not _cache_ok(final, fp, shapes):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- dataset


def split_episodes(num_episodes: int, split: str, val_fraction: float, seed: int) -> np.ndarray:
    """Episode indices of ``split``: a seeded permutation, the first ``round(val_fraction * n)`` are val."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a value in [0, 1), got {val_fraction}")
    if split == "all":
        return np.arange(num_episodes)
    perm = np.random.default_rng(seed).permutation(num_episodes)
    n_val = round(val_fraction * num_episodes)
    if val_fraction > 0 and num_episodes >= 2:
        n_val = min(max(n_val, 1), num_episodes - 1)
    chosen = perm[:n_val] if split == "val" else perm[n_val:]
    return np.sort(chosen)


def _instruction_table(instructions) -> Callable[[str], list[str] | None]:
    """A lookup task name -> [canonical, paraphrase, ...], or None when the name is unknown."""
    if instructions is None:
        try:  # the catalogue behind vlaforge.sim.metaworld.instructions, without the simulator import
            from vlaforge.sim.instructions import instructions as lookup
        except ImportError:
            return lambda name: None
        instructions = lookup
    if isinstance(instructions, Mapping):
        table = {k: list(v) for k, v in instructions.items()}
        return lambda name: table.get(name)

    def call(name: str):
        try:
            out = instructions(name)
        except (KeyError, ValueError):
            return None
        return list(out) if out else None

    return call


ENV_SPREAD_FLOOR = 0.005  # m: a coordinate that (nearly) never moves within a task is centred, not blown up


def _standardize_per_task(env: np.ndarray, reader: DatasetReader) -> np.ndarray:
    """(N, E) environment states -> each task's frames standardized by that task's mean and spread."""
    rows: dict[str, list[np.ndarray]] = {}
    for ep in reader.episodes:
        name = ep.task_name or reader.task_of(ep)
        rows.setdefault(name, []).append(np.arange(ep.start, ep.start + ep.length))
    out = np.empty_like(env)
    for ix in rows.values():
        ix = np.concatenate(ix)
        e = env[ix].astype(np.float64)
        out[ix] = ((e - e.mean(0)) / np.maximum(e.std(0), ENV_SPREAD_FLOOR)).astype(env.dtype)
    return out


class ChunkDataset(torch.utils.data.Dataset):
    """Items with the DESIGN keys for every frame of the chosen episodes.

    ``observation.images.<cam>`` float32 (3, H, W) in [0, 1] (random shift of up to ``shift`` pixels when
    ``augment``), ``observation.state`` (P,), ``action`` (H, D): the actions from this frame on, the last
    action repeated past the episode end, ``action_is_pad`` bool (H,) marking those, ``task`` (the
    instruction; with ``paraphrase`` one of the task's instructions at random), ``embodiment`` (the dataset's
    robot_type), and with ``env_state`` ``observation.environment_state`` (E,) (an auxiliary training target;
    also in ``stats``). With ``env_state_per_task`` that target is standardized per task (each task's own mean
    and spread over every frame of its episodes, spreads floored at ``ENV_SPREAD_FLOOR`` m): the auxiliary
    loss then measures where things are among that task's layouts, not which task it is.
    """

    def __init__(
        self,
        root: str | Path,
        chunk_size: int,
        split: str = "train",
        val_fraction: float = 0.1,
        augment: bool = True,
        paraphrase: bool = True,
        seed: int = 0,
        instructions: Mapping[str, Sequence[str]] | Callable[[str], Sequence[str]] | None = None,
        shift: int = 4,
        cache_dir: str | Path | None = None,
        progress: bool = True,
        env_state: bool = False,
        env_state_per_task: bool = False,
    ):
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size: expected >= 1, got {chunk_size}")
        self.reader = reader = DatasetReader(root)
        if reader.num_episodes == 0:
            raise DatasetFormatError(f"{reader.root}: the dataset has no episodes")
        for key in (OBS_STATE, ACTION):
            if key not in reader.features:
                raise DatasetFormatError(
                    f"{reader.root / fmt.INFO_PATH}: feature {key!r} is missing; "
                    f"features: {sorted(reader.features)}"
                )
        self.chunk_size = int(chunk_size)
        self.split, self.augment, self.paraphrase, self.shift = (
            split,
            bool(augment),
            bool(paraphrase),
            int(shift),
        )
        self.embodiment = reader.robot_type
        if env_state and OBS_ENV_STATE not in reader.features:
            raise DatasetFormatError(
                f"{reader.root}: feature {OBS_ENV_STATE!r} is missing (asked for as an auxiliary target); "
                f"features: {sorted(reader.features)}. Datasets collected by `vlaforge collect` record it; "
                f"otherwise set policy.aux_env_weight=0"
            )
        keys = [OBS_STATE, ACTION] + ([OBS_ENV_STATE] if env_state else [])
        cols = reader.columns(keys)
        self._state = np.ascontiguousarray(cols[OBS_STATE], dtype=np.float32)  # (N, P)
        self._action = np.ascontiguousarray(cols[ACTION], dtype=np.float32)  # (N, D)
        self._env = (np.ascontiguousarray(cols[OBS_ENV_STATE], dtype=np.float32)
                     .reshape(reader.num_frames, -1) if env_state else None)  # (N, E)
        ends = np.empty(reader.num_frames, dtype=np.int64)
        for ep in reader.episodes:
            ends[ep.start : ep.start + ep.length] = ep.start + ep.length
        if self._env is not None and env_state_per_task:
            self._env = _standardize_per_task(self._env, reader)
        self._end = ends  # (N,) one past each frame's episode end
        self.episode_indices = split_episodes(reader.num_episodes, split, val_fraction, seed)
        eps = [reader.episodes[i] for i in self.episode_indices]
        self._frames = (
            np.concatenate([np.arange(e.start, e.start + e.length) for e in eps])
            if eps
            else np.zeros(0, dtype=np.int64)
        )
        lookup = _instruction_table(instructions) if paraphrase else (lambda name: None)
        self._ep_of = np.empty(reader.num_frames, dtype=np.int64)
        self._texts: list[list[str]] = []
        for j, ep in enumerate(reader.episodes):
            self._ep_of[ep.start : ep.start + ep.length] = j
            stored = reader.task_of(ep)
            table = lookup(ep.task_name or stored) if paraphrase else None
            self._texts.append(table if table else [stored])
        self.camera_keys = list(reader.camera_keys)
        self._cache = frame_cache(reader, cache_dir, progress) if self.camera_keys else {}
        self._images: dict[str, np.ndarray] = {}
        self._images_pid = -1
        self._stats = None
        self._rng: np.random.Generator | None = None
        self._rng_pid = -1

    def __len__(self) -> int:
        return len(self._frames)

    def __getstate__(self) -> dict:
        # memory maps are reopened in each process (a pickled memmap would copy the whole cache)
        state = dict(self.__dict__)
        state["_images"], state["_images_pid"], state["_rng"], state["_rng_pid"] = {}, -1, None, -1
        return state

    def _maps(self) -> dict[str, np.ndarray]:
        if self._images_pid != os.getpid():
            self._images = {k: open_cached(p, s) for k, (p, s) in self._cache.items()}
            self._images_pid = os.getpid()
        return self._images

    def _generator(self) -> np.random.Generator:
        # one generator per process: DataLoader workers get distinct torch seeds, so distinct streams
        if self._rng_pid != os.getpid():
            self._rng = np.random.default_rng(torch.initial_seed() % (2**63))
            self._rng_pid = os.getpid()
        return self._rng  # type: ignore[return-value]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.get(i)

    def get(self, i: int, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """Item ``i``; ``rng`` drives augmentation and paraphrase sampling (default: this process's
        generator).

        The trainer passes a generator seeded by the item's position in the data stream, so a resumed run
        draws exactly the same shifts and paraphrases as an uninterrupted one."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        g = int(self._frames[i])
        end = int(self._end[g])
        steps = g + np.arange(self.chunk_size)  # (H,)
        pad = steps >= end
        steps = np.minimum(steps, end - 1)
        item: dict[str, Any] = {}
        if rng is None and (self.augment or self.paraphrase):
            rng = self._generator()
        images = self._maps()
        for key in self.camera_keys:
            img = images[key][g]  # (H, W, 3) uint8
            if self.augment and self.shift > 0:
                img = self._random_shift(img, rng)
            item[key] = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
        item[OBS_STATE] = torch.from_numpy(self._state[g].copy())
        if self._env is not None:
            item[OBS_ENV_STATE] = torch.from_numpy(self._env[g].copy())
        item[ACTION] = torch.from_numpy(self._action[steps])  # (H, D)
        item[ACTION_IS_PAD] = torch.from_numpy(pad)
        texts = self._texts[int(self._ep_of[g])]
        item[TASK] = (
            texts[int(rng.integers(len(texts)))] if (self.paraphrase and len(texts) > 1) else texts[0]
        )
        item[EMBODIMENT] = self.embodiment
        return item

    def _random_shift(self, img: np.ndarray, rng) -> np.ndarray:
        """Pad by replicating the border ``shift`` pixels and crop back at a random offset (DrQ's shift)."""
        h, w = img.shape[:2]
        dy, dx = rng.integers(-self.shift, self.shift + 1, size=2)
        rows = np.clip(np.arange(h) + dy, 0, h - 1)
        cols = np.clip(np.arange(w) + dx, 0, w - 1)
        return img[rows][:, cols]

    @property
    def stats(self) -> dict[str, dict[str, dict[str, np.ndarray]]]:
        """``{embodiment: {observation.state: {mean, std, min, max, q01, q99}, action: {...}}}`` over every
        frame of the dataset (all splits, so train and val normalize alike)."""
        if self._stats is None:
            self._stats = policy_stats(self._state, self._action, self.embodiment, self._env)
        return self._stats

    @property
    def num_episodes(self) -> int:
        return len(self.episode_indices)

    def items_by_task(self) -> dict[str, list[int]]:
        """``{task name: indices of this split's items}`` (the episode's ``task_name``, else its
        instruction): per-task batches, as meta-learning draws them."""
        out: dict[str, list[int]] = {}
        for i, g in enumerate(self._frames):
            ep = self.reader.episodes[int(self._ep_of[g])]
            out.setdefault(ep.task_name or self.reader.task_of(ep), []).append(i)
        return out


# ---------------------------------------------------------------------------------------------- batches


def collate(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack items into a batch: tensors stacked, strings as lists; ``observation.state`` and ``action``
    zero-padded on their last axis to the largest size when embodiments of different sizes mix."""
    if not items:
        raise ValueError("collate: expected at least one item, got none")
    keys = list(items[0])
    for n, it in enumerate(items[1:], 1):
        if set(it) != set(keys):
            raise KeyError(f"collate: item {n} has keys {sorted(it)}, item 0 has {sorted(keys)}")
    batch: dict[str, Any] = {}
    for key in keys:
        values = [it[key] for it in items]
        if isinstance(values[0], str):
            batch[key] = list(values)
            continue
        values = [v if isinstance(v, torch.Tensor) else torch.as_tensor(v) for v in values]
        if key in (OBS_STATE, ACTION):
            size = max(v.shape[-1] for v in values)
            values = [
                torch.nn.functional.pad(v, (0, size - v.shape[-1])) if v.shape[-1] < size else v
                for v in values
            ]
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) > 1:
            raise ValueError(f"collate: {key}: items disagree in shape: {sorted(shapes)}")
        batch[key] = torch.stack(values)
    return batch
