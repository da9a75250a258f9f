"""``vlaforge dataset info``: what a dataset on disk holds (counts, tasks, features, statistics).

Pure data: reads the dataset's files and statistics; no simulator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlaforge.types import ACTION, OBS_STATE


def dataset_size_bytes(root: str | Path, include_work: bool = False) -> int:
    """Bytes on disk of a dataset (without our .vlaforge cache/staging unless asked)."""
    total = 0
    for p in Path(root).rglob("*"):
        if p.is_file() and (include_work or ".vlaforge" not in p.parts):
            total += p.stat().st_size
    return total


def describe(root: str | Path) -> list[str]:
    """Lines for ``vlaforge dataset info``: counts, tasks, features, statistics."""
    import json

    from vlaforge.data import format as fmt
    from vlaforge.data.reader import DatasetReader

    r = DatasetReader(root)
    s = r.summary()
    lines = [
        (
            f"dataset {s['root']}  (LeRobot {s['codebase_version']}, robot_type {s['robot_type']}, "
            f"{s['fps']} fps)"
        ),
        (
            f"episodes {s['episodes']} ({s['staged_episodes']} staged, not yet packed)   "
            f"frames {s['frames']}   "
            f"tasks {s['tasks']}   size {dataset_size_bytes(root) / 2**20:.1f} MiB"
        ),
    ]
    counts: dict[str, list[int]] = {}
    for ep in r.episodes:
        c = counts.setdefault(ep.task_name or r.task_of(ep), [0, 0, 0])
        c[0] += 1
        c[1] += ep.length
        c[2] += 1 if ep.success else 0
    lines.append("tasks:")
    for name, (n, frames, ok) in counts.items():
        lines.append(f"  {name:40s} {n:5d} episodes {frames:7d} frames {ok:5d} successful")
    lines.append("features:")
    for key, ft in r.features.items():
        extra = ""
        if ft["dtype"] == "video" and ft.get("info"):
            i = ft["info"]
            extra = f"  {i.get('video.codec')} {i.get('video.pix_fmt')}"
        lines.append(f"  {key:32s} {ft['dtype']:8s} {tuple(ft['shape'])!s:16s}{extra}")
    stats_path = Path(root) / fmt.STATS_PATH
    if stats_path.is_file():
        stats = json.loads(stats_path.read_text())
        lines.append("statistics (meta/stats.json):")
        for key in (OBS_STATE, ACTION):
            if key in stats:
                for name in ("mean", "std", "min", "max", "q01", "q99"):
                    if name in stats[key]:
                        vals = np.asarray(stats[key][name], dtype=float).reshape(-1)
                        lines.append(f"  {key:18s} {name:4s} " + " ".join(f"{v:8.3f}" for v in vals))
        lines.extend(f"  note: {n}" for n in _normalization_notes(stats, s["robot_type"]))
        for key in r.camera_keys:
            if key in stats and "mean" in stats[key]:
                m = np.asarray(stats[key]["mean"], dtype=float).reshape(-1)
                sd = np.asarray(stats[key]["std"], dtype=float).reshape(-1)
                lines.append(
                    f"  {key:18s} mean {' '.join(f'{v:.3f}' for v in m)}  "
                    f"std {' '.join(f'{v:.3f}' for v in sd)}"
                )
    return lines


def _normalization_notes(stats: dict, robot: str) -> list[str]:
    """What the policy's (quantile) normalization does with this data's zero-spread dimensions."""
    from vlaforge.processing.normalize import Normalizer, as_stats

    try:
        return Normalizer(as_stats({robot or "robot": {k: stats[k] for k in (OBS_STATE, ACTION)}}),
                          "quantile").notes()
    except (KeyError, ValueError) as e:  # statistics a policy could not use: say so, do not hide it
        return [f"the statistics cannot be used for normalization: {e}"]
