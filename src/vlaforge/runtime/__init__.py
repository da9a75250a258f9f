"""Deployment runtime, the robot side: wrappers around any policy (chunking, safety, monitoring, control).

Nothing here reaches into the model: everything works on ``policy.predict_chunk(obs)`` and on
action / observation arrays, with numpy only (no torch; tests/runtime/test_torch_free.py). The model-aware
parts that plug into the controller (confidence, online adaptation) live in ``vlaforge.online``. Names are
imported lazily so ``import vlaforge.runtime`` stays light.
"""

from __future__ import annotations

from vlaforge.names import lazy_exports

_EXPORTS = {
    "SafetyConfig": "safety", "SafetyLayer": "safety", "SafeAction": "safety",
    "ChunkExecutor": "chunking", "StaleChunkError": "chunking", "ExecInfo": "chunking",
    "Monitor": "monitor",
    "Controller": "controller", "StepResult": "controller", "Status": "controller",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
