import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# measured precision choices (vlaforge.precision) go to a directory of this test session, not the user's cache
if "VLAFORGE_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["VLAFORGE_CACHE_DIR"] = tempfile.mkdtemp(prefix="vlaforge-test-cache-")

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers on two cores: one torch thread each
    import torch

    torch.set_num_threads(1)

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def uniform_stats(p: int, d: int) -> dict:
    def s(n):
        return {"mean": [0.0] * n, "std": [1.0] * n, "min": [-1.0] * n, "max": [1.0] * n,
                "q01": [-1.0] * n, "q99": [1.0] * n}

    return {"observation.state": s(p), "action": s(d)}


@pytest.fixture
def rng():
    return np.random.default_rng(0)
