"""The on-disk layout: LeRobot's dataset format v3.0, written with pyarrow and PyAV only.

```
root/
  meta/info.json                                   codebase_version "v3.0", fps, robot_type, features, totals
  meta/stats.json                                  {feature: {min, max, mean, std, count, q01..q99}}
  meta/tasks.parquet                               task (the instruction, the pandas index) -> task_index
  meta/episodes/chunk-000/file-000.parquet         one row per episode: length, frame range, file locations,
                                                   per-episode stats, and our extras
                                                   task_name / seed / success
  data/chunk-XXX/file-XXX.parquet                  one row per frame: observation.state, action, next.success,
                                                   next.done, timestamp, frame_index, episode_index, index,
                                                   task_index
  videos/<key>/chunk-XXX/file-XXX.mp4              camera streams, episodes one after another
  .vlaforge/                                       ours, not LeRobot's: staged episodes, decoded-frame cache,
                                                   lock
```

Paths, names, column types and the ``huggingface`` parquet metadata follow LeRobot (``lerobot.datasets``),
checked against a dataset LeRobot 0.4.4 recorded. Every file here is written atomically (``vlaforge.fsutil``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlaforge import fsutil
from vlaforge.fsutil import atomic_path, write_atomic

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
DEFAULT_CHUNKS_SIZE = 1000  # files per chunk directory
DEFAULT_DATA_FILES_MB = 100
DEFAULT_VIDEO_FILES_MB = 200
#: our own working directory inside a dataset (staging, cache, lock); LeRobot ignores it
WORK_DIR = ".vlaforge"

#: the bookkeeping columns every LeRobot frame has
DEFAULT_FEATURES: dict[str, dict] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
SUCCESS = "next.success"
DONE = "next.done"
#: episode columns vlaforge adds to meta/episodes (LeRobot keeps unknown columns)
EPISODE_EXTRAS = ("task_name", "seed", "success")
#: the plain columns of an episode's row that the recorder fills itself (the others have a ``/`` in their
#: name: ``stats/``, ``data/``, ``videos/``, ``meta/``); any further plain column is an ``extra`` saved with
#: the episode (e.g. ``expert``)
EPISODE_ROW_KEYS = frozenset({"episode_index", "tasks", "length", "dataset_from_index", "dataset_to_index",
                              *EPISODE_EXTRAS})


class DatasetFormatError(ValueError):
    """A dataset on disk is broken or not what was expected; the message names the file and the problem."""


# ---------------------------------------------------------------------------------------------- atomic files


def write_json(path: str | Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=4) + "\n")


def write_parquet(path: str | Path, table) -> None:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="snappy")


def read_json(path: Path, what: str) -> Any:
    return fsutil.read_json(path, DatasetFormatError, missing=f"{path}: {what} is missing",
                            what=f"JSON ({what})")


def next_chunk_file(chunk: int, file: int, chunks_size: int) -> tuple[int, int]:
    """The (chunk, file) after ``(chunk, file)``: files 0..chunks_size-1 per chunk directory."""
    return (chunk + 1, 0) if file >= chunks_size - 1 else (chunk, file + 1)


# ---------------------------------------------------------------------------------------------- info.json


def video_keys(features: Mapping[str, Mapping]) -> list[str]:
    return [k for k, f in features.items() if f.get("dtype") == "video"]


def image_keys(features: Mapping[str, Mapping]) -> list[str]:
    """Camera features stored as images inside the parquet files (LeRobot's ``use_videos=False``)."""
    return [k for k, f in features.items() if f.get("dtype") == "image"]


def image_hwc(key: str, feature: Mapping) -> tuple[int, int, int]:
    """(H, W, C) of a camera feature, whichever order its ``names`` give."""
    shape = tuple(int(s) for s in feature["shape"])
    names = feature.get("names") or ["height", "width", "channels"]
    if len(shape) != 3:
        raise DatasetFormatError(f"features[{key!r}]: expected a 3-d image shape, got {list(shape)}")
    names = [str(n) for n in names]
    if names[:1] == ["channels"] or names[:1] == ["channel"]:
        return shape[1], shape[2], shape[0]
    return shape[0], shape[1], shape[2]


def make_features(
    cameras: Sequence[str],
    image_size: int,
    state_dim: int,
    action_dim: int,
    state_names: Sequence[str] | None = None,
    action_names: Sequence[str] | None = None,
    env_state_dim: int = 0,
    env_state_names: Sequence[str] | None = None,
) -> dict[str, dict]:
    """The features of a vlaforge recording, in LeRobot's ``info.json`` form (DEFAULT_FEATURES last).
    ``env_state_dim`` > 0 adds ``observation.environment_state``."""
    from vlaforge.types import ACTION, OBS_ENV_STATE, OBS_STATE, image_key

    for what, names, dim in (
        ("state_names", state_names, state_dim),
        ("action_names", action_names, action_dim),
        ("env_state_names", env_state_names, env_state_dim),
    ):
        if names is not None and len(names) != dim:
            raise ValueError(f"{what}: expected {dim} names, got {len(names)}: {list(names)}")
    feats: dict[str, dict] = {
        OBS_STATE: {
            "dtype": "float32",
            "shape": [state_dim],
            "names": list(state_names) if state_names else None,
        },
        ACTION: {
            "dtype": "float32",
            "shape": [action_dim],
            "names": list(action_names) if action_names else None,
        },
    }
    if env_state_dim > 0:
        feats[OBS_ENV_STATE] = {
            "dtype": "float32",
            "shape": [int(env_state_dim)],
            "names": list(env_state_names) if env_state_names else None,
        }
    for cam in cameras:
        feats[image_key(cam)] = {
            "dtype": "video",
            "shape": [image_size, image_size, 3],
            "names": ["height", "width", "channels"],
        }
    feats[SUCCESS] = {"dtype": "bool", "shape": [1], "names": None}
    feats[DONE] = {"dtype": "bool", "shape": [1], "names": None}
    feats.update(json.loads(json.dumps(DEFAULT_FEATURES)))
    return feats


def make_info(
    fps: int,
    robot_type: str | None,
    features: Mapping[str, dict],
    total_episodes: int = 0,
    total_frames: int = 0,
    total_tasks: int = 0,
    chunks_size: int = DEFAULT_CHUNKS_SIZE,
    data_files_size_in_mb: int = DEFAULT_DATA_FILES_MB,
    video_files_size_in_mb: int = DEFAULT_VIDEO_FILES_MB,
) -> dict:
    """``meta/info.json`` in LeRobot's key order."""
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": int(total_episodes),
        "total_frames": int(total_frames),
        "total_tasks": int(total_tasks),
        "chunks_size": int(chunks_size),
        "data_files_size_in_mb": int(data_files_size_in_mb),
        "video_files_size_in_mb": int(video_files_size_in_mb),
        "fps": int(fps),
        "splits": {"train": f"0:{int(total_episodes)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if video_keys(features) else None,
        "features": dict(features),
    }


def load_info(root: Path) -> dict:
    """Read and check ``meta/info.json``: the codebase version, the keys the reader needs, every feature."""
    path = root / INFO_PATH
    if not root.is_dir():
        raise DatasetFormatError(f"{root}: dataset directory does not exist")
    if not path.is_file():
        raise DatasetFormatError(
            f"{path}: meta/info.json is missing; {root} is not a LeRobot v3.0 dataset "
            f"(or it was never finished)"
        )
    info = read_json(path, "meta/info.json")
    version = info.get("codebase_version")
    if version != CODEBASE_VERSION:
        hint = ""
        if isinstance(version, str) and version.startswith("v2"):
            hint = " (convert it with LeRobot: python -m lerobot.datasets.v30.convert_dataset_v21_to_v30)"
        raise DatasetFormatError(
            f"{path}: expected codebase_version {CODEBASE_VERSION!r}, got {version!r}{hint}"
        )
    for key, kind in (("fps", (int, float)), ("features", dict), ("data_path", str)):
        if not isinstance(info.get(key), kind):
            raise DatasetFormatError(
                f"{path}: expected key {key!r} of type {kind}, got {info.get(key)!r:.80}"
            )
    if info["fps"] <= 0:
        raise DatasetFormatError(f"{path}: expected fps > 0, got {info['fps']}")
    for name, ft in info["features"].items():
        if not isinstance(ft, dict) or "dtype" not in ft or "shape" not in ft:
            raise DatasetFormatError(f"{path}: features[{name!r}] needs 'dtype' and 'shape', got {ft!r:.120}")
        if ft["dtype"] in ("video", "image"):
            image_hwc(name, ft)
    for name in DEFAULT_FEATURES:
        if name not in info["features"]:
            raise DatasetFormatError(f"{path}: features lack LeRobot's bookkeeping column {name!r}")
    if video_keys(info["features"]) and not isinstance(info.get("video_path"), str):
        raise DatasetFormatError(
            f"{path}: features include videos but 'video_path' is {info.get('video_path')!r}"
        )
    info.setdefault("chunks_size", DEFAULT_CHUNKS_SIZE)
    return info


# ---------------------------------------------------------------------------------------------- data parquet


def _hf_feature(ft: Mapping) -> dict:
    dtype, shape = ft["dtype"], list(ft["shape"])
    if dtype == "image":
        return {"_type": "Image"}
    if shape == [1]:
        return {"dtype": dtype, "_type": "Value"}
    if len(shape) == 1:
        return {"feature": {"dtype": dtype, "_type": "Value"}, "length": shape[0], "_type": "List"}
    return {"shape": shape, "dtype": dtype, "_type": f"Array{len(shape)}D"}


def _arrow_type(ft: Mapping):
    import pyarrow as pa

    dtype, shape = ft["dtype"], list(ft["shape"])
    base = {"bool": pa.bool_(), "string": pa.string()}.get(dtype) or pa.from_numpy_dtype(np.dtype(dtype))
    if shape == [1]:
        return base
    if len(shape) == 1:
        return pa.list_(base, shape[0])
    raise DatasetFormatError(
        f"feature with dtype {dtype} shape {shape}: only scalars and vectors are stored here"
    )


def data_features(features: Mapping[str, Mapping]) -> dict[str, Mapping]:
    """Features stored as parquet columns (everything except videos)."""
    return {k: f for k, f in features.items() if f.get("dtype") != "video"}


def frames_table(features: Mapping[str, Mapping], columns: Mapping[str, np.ndarray]):
    """A pyarrow table of frames: one column per non-video feature, with LeRobot's ``huggingface``
    metadata."""
    import pyarrow as pa

    arrays, fields, hf = [], [], {}
    n = None
    for key, ft in data_features(features).items():
        if ft["dtype"] == "image":
            raise DatasetFormatError(
                f"{key}: writing image features is not supported (vlaforge writes videos)"
            )
        if key not in columns:
            raise DatasetFormatError(f"frames: feature {key!r} has no values")
        typ = _arrow_type(ft)
        shape = list(ft["shape"])
        values = np.asarray(columns[key])
        rows = values.shape[0]
        if n is None:
            n = rows
        if rows != n:
            raise DatasetFormatError(f"frames: {key!r} has {rows} rows, expected {n}")
        if shape == [1]:
            values = values.reshape(rows)
            arr = pa.array(values.astype(np.dtype(ft["dtype"]) if ft["dtype"] != "string" else object), typ)
        else:
            if values.shape[1:] != tuple(shape):
                raise DatasetFormatError(
                    f"frames: {key!r} expected shape {tuple(shape)}, got {values.shape[1:]}"
                )
            flat = pa.array(values.astype(np.dtype(ft["dtype"])).reshape(-1))
            arr = pa.FixedSizeListArray.from_arrays(flat, shape[0])
        arrays.append(arr)
        fields.append(pa.field(key, typ))
        hf[key] = _hf_feature(ft)
    meta = {b"huggingface": json.dumps({"info": {"features": hf}}).encode()}
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=meta))


def check_data_schema(schema, features: Mapping[str, Mapping], path: Path) -> None:
    """Every non-video feature must be a column of the matching dtype and length."""
    import pyarrow as pa

    names = set(schema.names)
    for key, ft in data_features(features).items():
        if key not in names:
            raise DatasetFormatError(
                f"{path}: meta/info.json declares feature {key!r}, but the data file has no such column "
                f"(columns: {sorted(names)})"
            )
        if ft["dtype"] == "image":
            continue
        typ = schema.field(key).type
        shape = list(ft["shape"])
        want = np.dtype("bool" if ft["dtype"] == "bool" else ft["dtype"]) if ft["dtype"] != "string" else None
        if shape == [1]:
            got_shape, inner = [1], typ
            if pa.types.is_list(typ) or pa.types.is_fixed_size_list(typ):
                got_shape, inner = (
                    ([typ.list_size] if pa.types.is_fixed_size_list(typ) else ["?"]),
                    typ.value_type,
                )
        elif pa.types.is_fixed_size_list(typ):
            got_shape, inner = [typ.list_size], typ.value_type
        elif pa.types.is_list(typ) or pa.types.is_large_list(typ):
            got_shape, inner = shape, typ.value_type  # variable-length lists: lengths checked on read
        else:
            got_shape, inner = [1], typ
        try:
            got = inner.to_pandas_dtype() if want is not None else None
        except NotImplementedError:
            got = None
        if got_shape != shape or (want is not None and np.dtype(got) != want):
            raise DatasetFormatError(
                f"{path}: feature {key!r}: meta/info.json says {ft['dtype']} shape {tuple(shape)}, "
                f"the data column holds {typ} (shape {tuple(got_shape)})"
            )


def column_to_numpy(table, key: str, ft: Mapping, path: Path) -> np.ndarray:
    """One column as numpy: (N,) for scalars, (N, n) for vectors (checked against the feature shape)."""
    import pyarrow as pa

    col = table.column(key).combine_chunks()
    shape = list(ft["shape"])
    typ = col.type
    if pa.types.is_fixed_size_list(typ) or pa.types.is_list(typ) or pa.types.is_large_list(typ):
        if pa.types.is_fixed_size_list(typ):
            n = typ.list_size
        else:
            lengths = col.value_lengths().to_numpy(zero_copy_only=False)
            if len(lengths) and (lengths.min() != lengths.max()):
                raise DatasetFormatError(f"{path}: column {key!r} has rows of different lengths")
            n = int(lengths[0]) if len(lengths) else shape[0]
        values = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), n)
        if [n] != shape and not (shape == [1] and n == 1):
            raise DatasetFormatError(
                f"{path}: feature {key!r}: expected shape {tuple(shape)}, the data holds rows of length {n}"
            )
        if shape == [1]:
            values = values[:, 0]
    else:
        values = col.to_numpy(zero_copy_only=False)
    if ft["dtype"] not in ("string", "image"):
        values = values.astype(np.dtype(ft["dtype"]), copy=False)
    return values


# -------------------------------------------------------------------------------------------- tasks, episodes


def tasks_table(tasks: Sequence[str]):
    """``meta/tasks.parquet``: column ``task_index`` and the task strings as the pandas index named
    ``task``."""
    import pyarrow as pa

    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": "task",
                "field_name": "task",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    schema = pa.schema(
        [pa.field("task_index", pa.int64()), pa.field("task", pa.string())],
        metadata={b"pandas": json.dumps(pandas_meta).encode()},
    )
    return pa.Table.from_arrays(
        [pa.array(range(len(tasks)), pa.int64()), pa.array(list(tasks), pa.string())], schema=schema
    )


def read_tasks(root: Path) -> list[str]:
    """Task strings ordered by ``task_index`` (the string column is ``task`` or pandas'
    ``__index_level_0__``)."""
    import pyarrow.parquet as pq

    path = root / TASKS_PATH
    if not path.is_file():
        raise DatasetFormatError(f"{path}: meta/tasks.parquet is missing")
    t = pq.read_table(path)
    name = next((c for c in ("task", "__index_level_0__") if c in t.column_names), None)
    if name is None or "task_index" not in t.column_names:
        raise DatasetFormatError(
            f"{path}: expected columns 'task_index' and 'task' (or the pandas index), got {t.column_names}"
        )
    idx = t.column("task_index").to_pylist()
    strings = t.column(name).to_pylist()
    out = [""] * len(idx)
    if sorted(idx) != list(range(len(idx))):
        raise DatasetFormatError(f"{path}: task_index must be 0..{len(idx) - 1}, got {sorted(idx)[:10]}...")
    for i, s in zip(idx, strings):
        out[i] = s
    return out


def episodes_table(rows: Sequence[Mapping[str, Any]]):
    """``meta/episodes`` rows -> a pyarrow table; our extra columns get fixed types, the rest are inferred."""
    import pyarrow as pa

    if not rows:
        raise ValueError("episodes_table: expected at least one episode")
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    fixed = {
        "episode_index": pa.int64(),
        "tasks": pa.list_(pa.string()),
        "length": pa.int64(),
        "data/chunk_index": pa.int64(),
        "data/file_index": pa.int64(),
        "dataset_from_index": pa.int64(),
        "dataset_to_index": pa.int64(),
        "task_name": pa.string(),
        "seed": pa.int64(),
        "success": pa.bool_(),
        "meta/episodes/chunk_index": pa.int64(),
        "meta/episodes/file_index": pa.int64(),
    }
    arrays, fields = [], []
    for k in keys:
        values = [r.get(k) for r in rows]
        values = [v.tolist() if isinstance(v, (np.ndarray, np.generic)) else v for v in values]
        typ = fixed.get(k)
        if typ is None and k.startswith("videos/"):
            typ = pa.float64() if k.endswith("_timestamp") else pa.int64()
        try:
            arr = pa.array(values, typ) if typ is not None else pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # e.g. LeRobot's bool min/max next to our float ones
            arr = pa.array(_as_floats(values))
        arrays.append(arr)
        fields.append(pa.field(k, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _as_floats(v):
    if isinstance(v, list):
        return [_as_floats(x) for x in v]
    return None if v is None else float(v)


def read_episodes(root: Path) -> list[dict]:
    """All rows of ``meta/episodes/*/*.parquet`` in episode order, without the per-episode ``stats/``
    columns."""
    import pyarrow.parquet as pq

    files = sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    rows: list[dict] = []
    for f in files:
        schema = pq.read_schema(f)
        cols = [c for c in schema.names if not c.startswith("stats/")]
        rows.extend(pq.read_table(f, columns=cols).to_pylist())
    rows.sort(key=lambda r: r.get("episode_index", -1))
    return rows


def read_episode_stats(root: Path) -> list[dict[str, dict[str, np.ndarray]]]:
    """Per-episode ``stats/<feature>/<stat>`` columns as ``[{feature: {stat: array}}]`` in episode order."""
    import pyarrow.parquet as pq

    out: list[tuple[int, dict]] = []
    for f in sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet")):
        schema = pq.read_schema(f)
        cols = [c for c in schema.names if c.startswith("stats/")]
        t = pq.read_table(f, columns=["episode_index", *cols])
        for r in t.to_pylist():
            s: dict[str, dict[str, np.ndarray]] = {}
            for c in cols:
                feat, stat = c[len("stats/") :].rsplit("/", 1)
                if r[c] is not None:
                    s.setdefault(feat, {})[stat] = np.asarray(r[c])
            out.append((r["episode_index"], s))
    out.sort(key=lambda x: x[0])
    return [s for _, s in out]


def flatten_stats(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, list]:
    """``{feature: {stat: array}}`` -> ``{"stats/feature/stat": list}`` (LeRobot's episode columns)."""
    return {f"stats/{k}/{n}": np.asarray(v).tolist() for k, s in stats.items() for n, v in s.items()}


def file_fingerprint(paths: Iterable[Path]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of each file: what the decoded-frame cache is keyed by."""
    out = []
    for p in paths:
        st = p.stat()
        out.append((str(p), st.st_size, st.st_mtime_ns))
    return out
