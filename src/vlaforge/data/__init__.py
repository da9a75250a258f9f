"""Datasets on disk (LeRobot v3.0 layout) and the training loader.

Kept light: the names below import their modules (and torch) only when first used.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "DatasetRecorder": "vlaforge.data.recorder",
    "DatasetReader": "vlaforge.data.reader",
    "DatasetFormatError": "vlaforge.data.format",
    "ChunkDataset": "vlaforge.data.dataset",
    "collate": "vlaforge.data.dataset",
    "VideoSettings": "vlaforge.data.video",
}

__all__ = [
    "ChunkDataset",
    "DatasetFormatError",
    "DatasetReader",
    "DatasetRecorder",
    "VideoSettings",
    "collate",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vlaforge.data' has no attribute {name!r}")
