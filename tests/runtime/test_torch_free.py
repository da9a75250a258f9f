"""The robot side imports no torch: safety, chunk execution, monitor, controller and the episode loop run on
numpy alone.

A fresh interpreter where ``import torch`` fails imports those modules, wraps a tiny numpy policy in a
SafetyLayer + ChunkExecutor + Monitor + Controller and steps it. Any attempt to import torch (even one caught
by a ``try``) is recorded and fails the test, as does torch appearing in ``sys.modules``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

ROBOT_SIDE = ("vlaforge.types", "vlaforge.runtime.safety", "vlaforge.runtime.chunking",
              "vlaforge.runtime.monitor", "vlaforge.runtime.controller", "vlaforge.sim.episode",
              "vlaforge.serving.protocol", "vlaforge.serving.client", "vlaforge.export.onnx_policy",
              "vlaforge.processing.frames", "vlaforge.processing.normalize")

NO_TORCH = textwrap.dedent(
    """
    import importlib
    import importlib.abc
    import sys

    BLOCKED = ("torch",)
    attempts = []

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                attempts.append(name)
                raise ImportError(f"{name} is blocked in this test (robot side: no torch)")
            return None

    sys.meta_path.insert(0, NoTorch())
    for name in [m for m in sys.modules if m.split(".")[0] in BLOCKED]:
        del sys.modules[name]

    try:  # the blocker really blocks: otherwise this test could not fail
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the torch blocker did not block")
    assert attempts == ["torch"], attempts
    attempts.clear()

    """
)

#: appended to a script run by run_without_torch: nothing tried to import torch, and none is loaded
CHECK = textwrap.dedent(
    """
    assert not attempts, f"something tried to import torch: {attempts}"
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("no torch: ok")
    """
)

SCRIPT = textwrap.dedent(
    """
    for name in MODULES:
        importlib.import_module(name)

    from types import SimpleNamespace

    import numpy as np

    from vlaforge.runtime import ChunkExecutor, Controller, Monitor, SafetyConfig, SafetyLayer, Status
    from vlaforge.types import ACTION, OBS_STATE

    class NumpyPolicy:
        # predict_chunk + config.chunk_size + stats: all the runtime needs of a policy
        def __init__(self, chunk_size=4, action_dim=4, state_dim=2):
            self.config = SimpleNamespace(chunk_size=chunk_size)
            self.action = np.full(action_dim, 0.05, np.float32)
            self.calls = 0
            s = lambda n: {"mean": np.zeros(n, np.float32), "std": np.ones(n, np.float32),
                           "min": -np.ones(n, np.float32), "max": np.ones(n, np.float32),
                           "q01": -np.ones(n, np.float32), "q99": np.ones(n, np.float32)}
            self.stats = {"sawyer": {OBS_STATE: s(state_dim), ACTION: s(action_dim)}}

        def predict_chunk(self, obs):
            self.calls += 1
            return np.tile(self.action, (self.config.chunk_size, 1))  # (H, D)

    policy = NumpyPolicy()
    safety = SafetyLayer(SafetyConfig(low=[-1.0] * 4, high=[1.0] * 4, max_velocity=2.0, max_acceleration=40.0,
                                      max_force=5.0, dt=0.05, initial_action=[0.0] * 4))
    executor = ChunkExecutor(policy, "recycle", recompute_every=2)
    monitor = Monitor(policy.stats, "sawyer", latency_budget_s=1.0)
    controller = Controller(policy, safety, executor, monitor)
    frame = lambda t: {"observation.images.corner": np.zeros((8, 8, 3), np.uint8),
                       OBS_STATE: np.array([0.0, 0.0], np.float32), "task": "reach", "embodiment": "sawyer"}
    statuses = []
    for t in range(6):
        r = controller.step(frame(t))
        statuses.append(r.status)
        np.testing.assert_array_equal(r.action, policy.action)
    assert statuses == [Status.OK] * 6 and policy.calls == 3, (statuses, policy.calls)
    policy.action = np.array([np.nan, 0.0, 0.0, 0.0], np.float32)
    executor.reset()
    r = controller.step(frame(6))
    assert r.status == Status.HOLD and np.isfinite(r.action).all(), r
    assert controller.step(frame(7), force=np.array([50.0, 0.0, 0.0])).status == Status.ESTOP
    controller.end_episode(False)
    report = monitor.report()
    assert isinstance(report, dict) and report, report
    """
)


def run_without_torch(code: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where importing torch fails (and any attempt is recorded); the
    script fails if anything tried, and prints ``no torch: ok`` at its end otherwise. Returns the finished
    process."""
    script = NO_TORCH + "\n" + textwrap.dedent(code) + "\n" + CHECK
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout,
                          **kwargs)


def test_robot_side_runs_without_torch():
    proc = run_without_torch(f"MODULES = {ROBOT_SIDE!r}\n" + SCRIPT)
    assert proc.returncode == 0 and "no torch: ok" in proc.stdout, (f"stdout:\n{proc.stdout}\n"
                                                                    f"stderr:\n{proc.stderr}")
