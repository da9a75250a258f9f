"""Action heads: one file each, one registry line each (``vlaforge.config.register_head``).

A head's file is imported when a policy first builds that head, not before.
"""

from __future__ import annotations

from vlaforge.config import HEADS
from vlaforge.models.heads.base import ActionHead
from vlaforge.names import load_object, unknown_name


def head_class(name: str) -> type[ActionHead]:
    """The ActionHead subclass registered as ``name`` (its module imported now)."""
    if name not in HEADS:
        raise unknown_name("head", name, HEADS.names(), known_label="Known heads")
    return load_object(HEADS.get(name).cls)


def make_head(name: str, d_model: int, chunk_size: int, action_dim: int, low, high, config) -> ActionHead:
    return head_class(name)(d_model, chunk_size, action_dim, low, high, config)
