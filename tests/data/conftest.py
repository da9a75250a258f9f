"""Fixtures for the data tests."""

from __future__ import annotations

import pytest
from data_testkit import write_episodes


@pytest.fixture
def small_dataset(tmp_path):
    """Six episodes (lengths 7, 3, 12, 5, 9, 4) packed in two groups; returns (root, what was written)."""
    root = tmp_path / "ds"
    return root, write_episodes(root, [7, 3, 12, 5, 9, 4], pack_every=4)
