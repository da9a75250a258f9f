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


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a file via a temp file in the same directory, fsync, then rename: readers see old or new, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
