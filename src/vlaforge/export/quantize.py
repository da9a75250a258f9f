"""INT8 for exported graphs with onnxruntime's quantization tools (rewrites the graphs of an export
directory).

Static QDQ quantization of the convolutions (per-channel int8 weights, activations calibrated by min/max on
real frames of the policy's dataset), then dynamic INT8 for every MatMul/Gemm (activation scales per call).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vlaforge.export.manifest import read_manifest

LINEAR_OPS = ["MatMul", "Gemm"]


class _Frames:
    """onnxruntime's CalibrationDataReader over encoder feeds, one frame per call."""

    def __init__(self, feeds: Sequence[dict]):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # pragma: no cover - called by some onnxruntime versions only
        pass


def quantize_int8(directory: Path, frames: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Quantize every graph in ``directory`` in place; returns what was done (kept in the manifest)."""
    # onnxruntime's quantizer logs its generic advice through the root logger on every call
    logging.disable(logging.WARNING)
    try:
        return _quantize(directory, frames)
    finally:
        logging.disable(logging.NOTSET)


def _quantize(directory: Path, frames: Sequence[dict[str, Any]]) -> dict[str, Any]:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    from vlaforge.export.onnx_policy import OnnxPolicy
    from vlaforge.processing.frames import check_frame

    reference = OnnxPolicy(directory)
    checked = [check_frame(reference.config, f) for f in frames]
    meta = read_manifest(directory)
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        for emb, graph in meta["graphs"].items():
            mine = [f for f in checked if f.embodiment == emb] or [
                type(f)(emb, _zeros_state(reference, emb), f.task, f.images) for f in checked]
            feeds = [reference.feeds([f]) for f in mine]
            if reference.head in ("flow", "diffusion"):
                spec = reference.config.embodiments[emb]
                rng = np.random.default_rng(0)
                for f in feeds:
                    f["noise"] = rng.standard_normal((1, reference.config.chunk_size, spec.action_dim),
                                                     dtype=np.float32)
            path = directory / graph
            static = Path(scratch) / f"static-{emb}.onnx"
            quantize_static(str(path), str(static), _Frames(feeds), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=["Conv"], per_channel=True, weight_type=QuantType.QInt8,
                            activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.MinMax)
            dynamic = Path(scratch) / f"dynamic-{emb}.onnx"
            quantize_dynamic(str(static), str(dynamic), op_types_to_quantize=LINEAR_OPS,
                             weight_type=QuantType.QInt8)
            os.replace(dynamic, path)
    return {"conv": "static QDQ (per-channel int8 weights, uint8 activations, min/max calibration)",
            "matmul_gemm": "dynamic int8", "calibration_frames": len(checked)}


def _zeros_state(policy, emb: str) -> np.ndarray:
    return np.zeros(policy.config.embodiments[emb].state_dim, np.float32)
