"""Deployment runtime: wrappers around any policy (chunk execution, safety, monitoring, control).

Nothing here reaches into the model: everything works on ``policy.predict_chunk(obs)`` and on
action / observation arrays. Names are imported lazily so ``import vlaforge.runtime`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SafetyConfig": "safety", "SafetyLayer": "safety", "SafeAction": "safety",
    "ChunkExecutor": "chunking", "StaleChunkError": "chunking", "ExecInfo": "chunking",
    "Monitor": "monitor",
    "Controller": "controller", "StepResult": "controller", "Status": "controller",
    # confidence, online adaptation
    "ConfidenceEstimator": "confidence", "Confidence": "confidence", "ConfidenceNotSupported": "confidence",
    "OnlineAdapter": "adaptation", "AdaptResult": "adaptation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"vlaforge.runtime.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'vlaforge.runtime' has no attribute {name!r}")
