# Opens a dataset with LeRobot 0.4.4 and saves every item (compatibility harness; see README.md).
import logging
import sys

import numpy as np

logging.disable(logging.WARNING)
from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata  # noqa: E402 - after silencing its logs

root, out = sys.argv[1], sys.argv[2]
backend = sys.argv[3] if len(sys.argv) > 3 else "pyav"
meta = LeRobotDatasetMetadata("local/test", root=root)
print("meta", meta.total_episodes, meta.total_frames, meta.video_keys, meta.tasks.index.tolist())
fps = meta.fps
ds = LeRobotDataset(
    "local/test", root=root, video_backend=backend, delta_timestamps={"action": [k / fps for k in range(8)]}
)
print("len", len(ds), "episodes", ds.num_episodes)
items = [ds[i] for i in range(len(ds))]
key = meta.video_keys[0]
np.savez(
    out,
    state=np.stack([it["observation.state"].numpy() for it in items]),
    action=np.stack([it["action"].numpy() for it in items]),
    pad=np.stack([it["action_is_pad"].numpy() for it in items]),
    images=np.stack([(it[key].numpy() * 255).round().astype(np.uint8) for it in items]),
    task=np.array([it["task"] for it in items]),
    ep=np.array([int(it["episode_index"]) for it in items]),
)
print("ok", items[0][key].shape, items[0]["task"])
