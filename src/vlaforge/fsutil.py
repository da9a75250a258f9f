"""Atomic filesystem writes: a file or directory is either the old one or the new one, never half of each.

Every writer here fills a temporary file (or directory) beside its target, on the same filesystem, fsyncs
what it wrote, renames it into place and fsyncs the parent directory: after a crash at any moment a reader
finds the previous version or the new one, whole. Nothing heavy is imported here (matplotlib, torch):
callers bring the object that writes itself.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file's data to the disk."""
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory's entries (a rename into it) to the disk; best effort, as some filesystems refuse."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` to write to (``suffix`` for writers that take the format from it).
    On a clean exit it is fsynced and renamed onto ``path``; on an error it is removed, ``path`` untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _unique(path.parent, f".{path.name}.", suffix)
    # the umask applies, unlike mkstemp's 0600
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` (a str is UTF-8 encoded) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def write_json_atomic(path: str | os.PathLike, obj: Any, **json_kw: Any) -> None:
    """``json.dumps(obj, **json_kw)`` written to ``path`` atomically (``indent=2`` unless told otherwise)."""
    write_atomic(path, json.dumps(obj, **{"indent": 2, **json_kw}))


def read_json(path: str | os.PathLike, error: type[Exception] = ValueError, missing: str | None = None,
              what: str = "JSON") -> Any:
    """The JSON document at ``path``. A parse error raises ``error`` naming the file and what was expected
    (``what``); with ``missing``, a file that is not there raises ``error(missing)``."""
    path = Path(path)
    if missing is not None and not path.is_file():
        raise error(missing)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise error(f"{path}: expected {what}, got a parse error: {e}") from None


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    """The records of the JSON-lines file at ``path``, in order; empty when there is none. A line that does
    not parse (one cut short by a kill) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def save_figure_atomic(fig: Any, path: str | os.PathLike, **savefig_kw: Any) -> Path:
    """``fig.savefig`` (a matplotlib figure) to ``path`` atomically; the format comes from the file's suffix
    (png without one) unless ``format=`` is given."""
    path = Path(path)
    savefig_kw.setdefault("format", path.suffix.lstrip(".") or "png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **savefig_kw)
    return path


@contextmanager
def atomic_dir(directory: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary directory beside ``directory`` to fill. On a clean exit everything in it is fsynced
    and it replaces ``directory`` (an existing one is swapped out whole, never half-overwritten); on an error
    it is removed and ``directory`` is untouched."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = _unique(directory.parent, f".{directory.name}.tmp-", "")
    # mode 0777 less the umask, unlike mkdtemp's 0700: a checkpoint others may read stays readable
    os.mkdir(tmp)
    try:
        yield tmp
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                fsync_file(p)
            elif p.is_dir():
                fsync_dir(p)
        fsync_dir(tmp)
        _replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(directory.parent)


def _unique(parent: Path, prefix: str, suffix: str) -> Path:
    """A name beside the target that no other writer (thread or process) picks; created by the caller."""
    return parent / f"{prefix}{os.getpid()}-{secrets.token_hex(6)}{suffix}"


def _replace_dir(src: Path, dst: Path) -> None:
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
