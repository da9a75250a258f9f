"""Atomic filesystem helpers: a directory or file is either the old one or the new one, never half of each."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def temp_dir_beside(target: Path) -> Path:
    """A fresh temporary directory next to ``target`` (same filesystem, so a rename can publish it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))


def replace_dir(src: Path, dst: Path) -> None:
    """Move a finished directory into place; an existing one is swapped out, never half-overwritten."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
