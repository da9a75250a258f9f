"""Several datasets of different robots as one training set: one policy, per-robot heads and statistics.

    mixed = MixedDataset([ChunkDataset("data/sawyer", 16), ChunkDataset("data/panda", 16)],
                         cameras=("main",))
    mixed.get(i, rng)            # an item of one robot, its images under the policy's camera names
    mixed.stats                  # {"sawyer": {...}, "panda": {...}}
    mixed.embodiment_cameras     # {"sawyer": ("corner",), "panda": ("agentview",)}: EmbodimentSpec.cameras

Each robot records its own cameras (Meta-World's ``corner``, robosuite's ``agentview``); item ``i`` of robot
``k`` renames them, in order, to the policy's camera names, so a batch has one set of image keys whatever the
robots in it (``collate`` pads the state and action of smaller robots; the policy reads each robot's own
width). The trained policy remembers each robot's own names (``EmbodimentSpec.cameras``) and reads them from
that robot's observations at deployment.

Balanced: every robot gets the same share of items whatever its dataset's size (a robot with 10
demonstrations is not drowned by one with 150): the mixture has ``robots * largest`` items, and item ``i`` is
item ``(i // robots) % len(dataset)`` of dataset ``i % robots``. The datasets must be of distinct robots (two
datasets of one robot: record them into one with ``vlaforge collect --resume``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vlaforge.types import image_key


class MixedDataset:
    def __init__(self, datasets: Sequence[Any], cameras: Sequence[str]):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("MixedDataset: expected at least one dataset, got none")
        robots = [d.embodiment for d in self.datasets]
        if len(set(robots)) != len(robots):
            raise ValueError(f"MixedDataset: expected datasets of distinct robots, got {robots}: record one "
                             f"robot's demonstrations into one dataset")
        self.cameras = tuple(cameras)
        self._renames: list[dict[str, str]] = []
        self.embodiment_cameras: dict[str, tuple[str, ...]] = {}
        for d in self.datasets:
            own = tuple(k.removeprefix("observation.images.") for k in d.camera_keys)
            if len(own) != len(self.cameras):
                raise ValueError(f"{d.reader.root}: records {len(own)} cameras {list(own)}; the policy has "
                                 f"{len(self.cameras)} ({list(self.cameras)}): every robot needs one camera "
                                 f"per policy camera (set --policy.cameras)")
            self._renames.append({image_key(o): image_key(c) for o, c in zip(own, self.cameras)})
            self.embodiment_cameras[d.embodiment] = own
        self._largest = max(len(d) for d in self.datasets)
        self.embodiment = "+".join(robots)

    def __len__(self) -> int:
        return len(self.datasets) * self._largest if all(len(d) for d in self.datasets) else 0

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.get(i)

    def get(self, i: int, rng: np.random.Generator | None = None) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        i %= len(self)
        k = i % len(self.datasets)
        d = self.datasets[k]
        item = d.get((i // len(self.datasets)) % len(d), rng)
        return {self._renames[k].get(key, key): v for key, v in item.items()}

    @property
    def stats(self) -> dict[str, Any]:
        return {e: s for d in self.datasets for e, s in d.stats.items()}

    @property
    def num_episodes(self) -> int:
        return sum(d.num_episodes for d in self.datasets)
