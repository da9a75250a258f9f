"""The confidence file format: a calibrated ``ConfidenceEstimator`` saved beside its policy's checkpoint.

    confidence.json          settings, calibration, thresholds; ``density_file``: name and SHA-256 of
    confidence.safetensors   the feature-density statistics (float64 means and precision matrices), if any

``write`` puts the tensors first and the JSON last, each atomically, so a reader never finds a JSON whose
tensors are missing or older; ``read`` checks the format version, the head, the tensors' SHA-256 and their
shapes against the policy. ``ConfidenceEstimator.save`` / ``.load`` (``vlaforge.online.confidence``) are
the way in; this module knows the files, not the estimator.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

from vlaforge.fsutil import read_json, write_atomic, write_json_atomic
from vlaforge.online.density import LEGACY_MODALITIES, MODALITIES, FeatureDensity

CONFIDENCE_FILE = "confidence.json"
DENSITY_FILE = "confidence.safetensors"  # the density statistics (float64 means and precision matrices)
FORMAT_VERSION = 3
# version 1: no density component, read as density=False; version 2: no pixel part, read without it
READABLE_VERSIONS = (1, 2, 3)


def write(checkpoint_dir: str | os.PathLike, meta: Mapping[str, Any], density: FeatureDensity | None) -> Path:
    """Write ``confidence.json`` (``meta`` plus ``density_file``) and, with density statistics,
    ``confidence.safetensors`` first; a stale tensors file is removed when there are none. Returns the JSON's
    path."""
    from safetensors.numpy import save as safetensors_bytes

    directory = Path(checkpoint_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: expected a checkpoint directory, found none")
    meta = {**meta, "density_file": None}
    if density is not None:
        data = safetensors_bytes(density.to_arrays(), metadata={"format_version": str(FORMAT_VERSION)})
        write_atomic(directory / DENSITY_FILE, data)
        meta["density_file"] = {"name": DENSITY_FILE, "sha256": hashlib.sha256(data).hexdigest()}
    path = directory / CONFIDENCE_FILE
    write_json_atomic(path, meta, indent=2)
    if density is None:
        (directory / DENSITY_FILE).unlink(missing_ok=True)  # a stale one from an earlier calibration
    return path


def read(policy: Any, checkpoint_dir: str | os.PathLike, dims: Mapping[str, int]
         ) -> tuple[Path, dict[str, Any], FeatureDensity | None]:
    """``(path of confidence.json, its contents, the density statistics or None)``, checked against the
    policy (its head; ``dims``: the width of each density part's features)."""
    path = Path(checkpoint_dir) / CONFIDENCE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no calibrated confidence estimator here (ConfidenceEstimator"
                                f".calibrate + save, or benchmarks/confidence.py --save-calibration)")
    meta = read_json(path)
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise ValueError(f"{path}: expected format_version in {READABLE_VERSIONS}, "
                         f"got {meta.get('format_version')!r}")
    if meta.get("head") != policy.config.head:
        raise ValueError(f"{path}: calibrated for a {meta.get('head')!r} head, the policy has "
                         f"{policy.config.head!r}")
    return path, meta, _read_density(policy, path, meta, dims)


def _read_density(policy: Any, path: Path, meta: Mapping[str, Any], dims: Mapping[str, int]
                  ) -> FeatureDensity | None:
    """The density statistics ``confidence.json`` points to, checked against it and against the policy."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as safetensors_load

    info = meta.get("density_file")
    if not info:
        return None
    tpath = path.parent / DENSITY_FILE
    if not tpath.is_file():
        raise FileNotFoundError(f"{tpath}: missing; {path.name} says the calibration's density statistics "
                                f"are there (copy both files together, or calibrate and save again)")
    data = tpath.read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != info.get("sha256"):
        raise ValueError(f"{tpath}: expected the file {path.name} was saved with (sha256 "
                         f"{info.get('sha256')}), got another one (sha256 {got}): calibrate and save again")
    try:
        arrays = safetensors_load(data)
    except (SafetensorError, ValueError, OSError) as e:
        raise ValueError(f"{tpath}: not a readable safetensors file ({e})") from None
    modalities = LEGACY_MODALITIES if meta.get("format_version") == 2 else MODALITIES
    return FeatureDensity.from_arrays(arrays, dims, policy.embodiments, meta["shrinkage"],
                                      meta["folds"], str(tpath), modalities)


def has_calibration(checkpoint_dir: str | os.PathLike) -> bool:
    return (Path(checkpoint_dir) / CONFIDENCE_FILE).is_file()
