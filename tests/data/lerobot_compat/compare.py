# Compares ChunkDataset items with what read_with_lerobot.py saved (run with the project .venv).
import sys

import numpy as np

from vlaforge.data import ChunkDataset

d = np.load(sys.argv[2])
ds = ChunkDataset(sys.argv[1], chunk_size=8, split="all", augment=False, paraphrase=False, progress=False)
st = np.stack([ds[i]["observation.state"].numpy() for i in range(len(ds))])
ac = np.stack([ds[i]["action"].numpy() for i in range(len(ds))])
pad = np.stack([ds[i]["action_is_pad"].numpy() for i in range(len(ds))])
im = np.stack([(ds[i][ds.camera_keys[0]].numpy() * 255).round().astype(np.uint8) for i in range(len(ds))])
tasks = [ds[i]["task"] for i in range(len(ds))]
print(
    "state exact",
    np.array_equal(st, d["state"]),
    "action exact",
    np.array_equal(ac, d["action"]),
    "pad",
    np.array_equal(pad, d["pad"]),
)
print(
    "images max diff",
    np.abs(im.astype(int) - d["images"]).max(),
    "mean",
    np.abs(im.astype(int) - d["images"]).mean(),
)
print("tasks equal", tasks == list(d["task"]))
