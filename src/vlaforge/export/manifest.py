"""The exported directory's layout and its ``manifest.json``, on the standard library and numpy alone.

    <out>/manifest.json          format, versions, the policy config, graphs per robot, sampling, precision
    <out>/norm_stats.json        the checkpoint's normalization statistics (normalization runs outside the
                                 graphs)
    <out>/language.safetensors   sentence vectors of the instructions known at export (MiniLM), or the hashed
                                 encoder's word table
    <out>/policy-<robot>.onnx    one graph per robot: "images" (B, cameras, 3, S, S) in [0, 1], "state" (B, P)
                                 normalized, "language" (B, 384) sentence vectors [, "noise" (B*n, H, D)] ->
                                 "out": normalized actions (B, H, D) (regression), logits (B, H, D, bins)
                                 (tokens), or n chunks per row (B*n, H, D) (flow / diffusion: every sampling
                                 step unrolled into the graph)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlaforge.fsutil import read_json

FORMAT = "vlaforge-onnx"
FORMAT_VERSION = 1
MANIFEST, STATS, LANGUAGE = "manifest.json", "norm_stats.json", "language.safetensors"


class ExportError(ValueError):
    """A checkpoint that cannot be exported as asked, or an export directory that cannot be loaded."""


def graph_file(embodiment: str) -> str:
    return f"policy-{embodiment}.onnx"


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of an export directory, checked: format, version and every file it names present."""
    directory = Path(directory)
    path = directory / MANIFEST
    meta = read_json(path, ExportError, missing=f"{directory}: not an exported policy (missing {MANIFEST}; "
                     f"make one with `vlaforge export --checkpoint DIR --format onnx --out DIR`)")
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ExportError(f"{path}: expected format {FORMAT!r} version {FORMAT_VERSION}, got "
                          f"{meta.get('format')!r} version {meta.get('format_version')!r}")
    files = [STATS, LANGUAGE, *meta["graphs"].values()]
    missing = [f for f in files if not (directory / f).is_file()]
    if missing:
        raise ExportError(f"{directory}: missing {missing} (named in {MANIFEST})")
    return meta
