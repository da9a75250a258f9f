"""Training-loader throughput: ChunkDataset samples per second from the decoded-frame cache, one process.

    python benchmarks/loader_throughput.py [--dataset DIR] [--episodes 40] [--length 150] [--seconds 3]

Without ``--dataset`` it records a synthetic dataset (structured 96 px frames, H.264 4:4:4 lossless) in a temp
directory. It reports the cache build (decoding every frame once), then random-order ``__getitem__`` rates
with and without random-shift augmentation, and the rate of whole batches of 64 through ``collate``.
Writes benchmarks/results/loader_throughput.json and .md. Target: >= 2000 samples/s at 96 px with
augmentation.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from vlaforge.benchmarking import machine, markdown_table, write

TARGET = 2000.0


def synthetic(root: Path, episodes: int, length: int, size: int) -> None:
    from vlaforge.data.recorder import DatasetRecorder

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    with DatasetRecorder(root, fps=80, cameras=["corner"], image_size=size, pack_every=25) as rec:
        for e in range(episodes):
            for t in range(length):
                img = np.stack([x * 255 // size, y * 255 // size, np.full_like(x, (e * 7 + t) % 256)], -1)
                c = t % (size - 12)
                img[c : c + 12, c : c + 12] = (240, 40, 40)
                rec.add_frame(
                    {
                        "observation.state": rng.normal(size=4),
                        "action": rng.uniform(-1, 1, 4),
                        "observation.images.corner": img.astype(np.uint8),
                    }
                )
            rec.save_episode(task=f"task-{e % 10}", seed=e, success=True)


def rate(fn, seconds: float) -> tuple[float, int]:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += fn()
    return n / (time.perf_counter() - t0), n


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=Path, default=None)
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--length", type=int, default=150)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args(argv)

    import torch

    from vlaforge.data import ChunkDataset, collate
    from vlaforge.data.dataset import CACHE_DIR

    torch.set_num_threads(1)
    tmp = None
    root = args.dataset
    if root is None:
        tmp = Path(tempfile.mkdtemp(prefix="vlaforge-loader-bench-"))
        root = tmp / "ds"
        t0 = time.perf_counter()
        synthetic(root, args.episodes, args.length, args.size)
        record_s = time.perf_counter() - t0
    else:
        record_s = None
    try:
        shutil.rmtree(root / CACHE_DIR, ignore_errors=True)
        t0 = time.perf_counter()
        ds = ChunkDataset(
            root, chunk_size=args.chunk, split="all", augment=True, paraphrase=True, progress=False
        )
        build_s = time.perf_counter() - t0
        frames = ds.reader.num_frames
        size = ds[0][ds.camera_keys[0]].shape[-1]
        order = np.random.default_rng(0).permutation(len(ds))
        rows = []

        def items(dataset):
            pos = [0]

            def step():
                for _ in range(256):
                    dataset[int(order[pos[0] % len(order)])]
                    pos[0] += 1
                return 256

            return step

        for name, aug in (("getitem, augment", True), ("getitem, no augment", False)):
            ds.augment = aug
            r, n = rate(items(ds), args.seconds)
            rows.append({"mode": name, "samples_per_s": round(r), "samples": n})
        ds.augment = True
        pos = [0]

        def batches():
            idx = order[(pos[0] + np.arange(64)) % len(order)]
            pos[0] += 64
            collate([ds[int(i)] for i in idx])
            return 64

        r, n = rate(batches, args.seconds)
        rows.append({"mode": "batch of 64 + collate, augment", "samples_per_s": round(r), "samples": n})
        payload = {
            "dataset": "synthetic" if tmp else str(root),
            "frames": frames,
            "episodes": ds.reader.num_episodes,
            "image_size": size,
            "chunk_size": args.chunk,
            "cache_build_s": round(build_s, 2),
            "cache_build_frames_per_s": round(frames / build_s),
            "record_s": None if record_s is None else round(record_s, 2),
            "results": rows,
            "target_samples_per_s": TARGET,
            "meets_target": rows[0]["samples_per_s"] >= TARGET and size >= 96,
            "machine": machine(),
        }
        table = markdown_table(rows, ["mode", "samples_per_s", "samples"])
        table += (
            f"\nCache build (decode {frames} frames of {size} px once): {build_s:.2f} s "
            f"({frames / build_s:.0f} frames/s). Target >= {TARGET:.0f} samples/s with augmentation: "
            f"{'met' if payload['meets_target'] else 'NOT met'}.\n"
        )
        cmd = "python benchmarks/loader_throughput.py" + (
            f" --dataset {args.dataset}" if args.dataset else ""
        )
        write("loader_throughput", payload, table, cmd)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
