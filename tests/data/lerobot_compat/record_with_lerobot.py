# Records a tiny dataset with LeRobot 0.4.4 (compatibility harness; run in a LeRobot venv, see README.md).
import shutil
import sys
from pathlib import Path

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset

root = Path(sys.argv[1])
shutil.rmtree(root, ignore_errors=True)
size = int(sys.argv[2]) if len(sys.argv) > 2 else 32
features = {
    "observation.state": {"dtype": "float32", "shape": (4,), "names": ["x", "y", "z", "gripper"]},
    "action": {"dtype": "float32", "shape": (4,), "names": ["dx", "dy", "dz", "grip"]},
    "observation.images.corner": {
        "dtype": "video",
        "shape": (size, size, 3),
        "names": ["height", "width", "channels"],
    },
    "next.success": {"dtype": "bool", "shape": (1,), "names": None},
}
ds = LeRobotDataset.create(
    "test/tiny",
    fps=10,
    features=features,
    root=root,
    robot_type="sawyer",
    use_videos=True,
    image_writer_threads=0,
)
rng = np.random.default_rng(0)
for ep, (n, task) in enumerate([(7, "reach the goal"), (5, "push the puck"), (6, "reach the goal")]):
    for i in range(n):
        img = np.zeros((size, size, 3), np.uint8)
        img[..., 0] = 20 * i
        img[..., 1] = 60 * ep
        img[: size // 2, :, 2] = 200
        ds.add_frame(
            {
                "observation.state": np.array([ep, i, 0.5, -1], np.float32),
                "action": np.array([i, -i, ep, 1], np.float32),
                "observation.images.corner": img,
                "next.success": np.array([i == n - 1]),
                "task": task,
            }
        )
    ds.save_episode()
ds.finalize()
print("ok")
