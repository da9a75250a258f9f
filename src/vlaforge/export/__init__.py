"""Faster policies (docs/export.md).

- :mod:`vlaforge.export.onnx_export`: ``export_onnx``, a checkpoint -> ONNX graphs (+ INT8 quantization);
  torch.
- :mod:`vlaforge.export.onnx_policy`: ``OnnxPolicy``, the exported graphs behind the policy API (numpy and
  onnxruntime only: a robot without torch runs it).
- :mod:`vlaforge.export.distillation`: ``distill``, a many-step flow/diffusion teacher into a few-step
  student.

Names are imported lazily, so importing ``OnnxPolicy`` never pulls in torch.
"""

from __future__ import annotations

from vlaforge.names import lazy_exports

_EXPORTS = {
    "ExportError": "manifest", "OnnxPolicy": "onnx_policy", "export_onnx": "onnx_export",
    "distill": "distillation", "DistillConfig": "distillation",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
