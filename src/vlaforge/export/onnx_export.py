"""``export_onnx``: a checkpoint -> a directory ``OnnxPolicy`` runs (layout in ``vlaforge.export.manifest``).

One graph per robot, traced with torch's dynamo exporter (opset 18, batch dimensions dynamic): vision,
language projection, state encoder and fusion (``Policy.fuse_tensors``), then the head. Flow and diffusion
heads are exported with every sampling step unrolled (10 Euler or DDIM steps, fixed at export: re-export after
changing them), so a chunk is one ``run`` call; n samples per frame are one call too (``noise`` holds B*n
draws). Measured on the flow demo policy (2 cores): one graph 4.2 ms p50 per chunk, the same as an encoder
graph and a head graph in two onnxruntime sessions 5.9 ms (the sessions' thread pools contend), so one graph
it is.

``quantize="int8"``: onnxruntime static QDQ quantization of the convolutions, calibrated on frames of the
policy's dataset, then dynamic INT8 for every MatMul/Gemm (weights int8, activations quantized per call).
Dynamic quantization of convolutions is not offered: onnxruntime's ConvInteger kernel is slower than fp32.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from vlaforge import __version__
from vlaforge.export.manifest import (
    FORMAT,
    FORMAT_VERSION,
    LANGUAGE,
    MANIFEST,
    STATS,
    ExportError,
    graph_file,
)
from vlaforge.fsutil import atomic_dir
from vlaforge.policy import Policy
from vlaforge.processing.normalize import stats_to_json

OPSET = 18  # GroupNormalization-18 is mis-specified and has no opset-21 kernel: GroupNorm exports decomposed
QUANTIZE = ("int8",)


class PolicyGraph(nn.Module):
    """One robot's policy on tensors: images (B, cams, 3, S, S) in [0, 1], normalized state (B, P), sentence
    vectors (B, 384) [, noise (B*n, H, D)] -> normalized actions (B, H, D), logits (B, H, D, bins) (tokens) or
    n chunks per row from the noise (B*n, H, D) (generative heads)."""

    def __init__(self, policy: Policy, embodiment: str):
        super().__init__()
        self.policy, self.embodiment, self.head = policy, embodiment, policy.heads[embodiment]

    def forward(self, images: torch.Tensor, state: torch.Tensor, language: torch.Tensor,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        cams = [images[:, i] for i in range(len(self.policy.config.cameras))]
        cond = self.policy.fuse_tensors(self.embodiment, cams, state, language)  # (B, H, d)
        if self.head.generative:
            b, h, d = cond.shape
            n = noise.shape[0] // b
            return self.head.sample_from(cond.unsqueeze(1).expand(b, n, h, d).reshape(b * n, h, d), noise)
        return self.head.logits(cond) if self.head.name == "tokens" else self.head(cond)


def _export(module: nn.Module, args: tuple, names: Sequence[str], path: Path) -> None:
    rows, draws = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("draws", min=1, max=65536)
    shapes = {n: {0: draws if n == "noise" else rows} for n in names}
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=list(names), output_names=["out"],
                          dynamo=True, opset_version=OPSET, dynamic_shapes=shapes, verbose=False,
                          external_data=False)


def _instructions(policy: Policy, extra: Sequence[str], datasets: Sequence[Path]) -> list[str]:
    """Every Meta-World instruction and paraphrase, the datasets' instructions, and ``extra``."""
    from vlaforge.data import DatasetReader
    from vlaforge.sim.instructions import all_tasks, instructions

    out = [s for t in all_tasks() for s in instructions(t)]
    for root in datasets:
        reader = DatasetReader(root)
        out += [reader.task_of(ep) for ep in reader.episodes]
    return list(dict.fromkeys([*out, *extra]))


def _language_table(policy: Policy, sentences: list[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    lang = policy.language
    if policy.config.language_encoder == "hash":
        return ({"kind": "hash", "buckets": lang.buckets},
                {"bag": lang.bag.weight.detach().float().cpu().numpy()})
    return {"kind": "table", "instructions": sentences}, {"vectors": lang.embed(sentences)}


def run_dataset(checkpoint: Path) -> list[Path]:
    """The dataset(s) the checkpoint was trained (or distilled) on, from its run's config.json or
    distill.json, where they still exist."""
    for run in (checkpoint.parent, checkpoint.parent.parent.parent):
        for name in ("config.json", "distill.json"):
            if not (run / name).is_file():
                continue
            try:
                ds = json.loads((run / name).read_text()).get("dataset")
            except json.JSONDecodeError:
                continue
            found = [Path(d) for d in ([ds] if isinstance(ds, str) else ds or []) if Path(d).is_dir()]
            if found:
                return found
    return []


def calibration_frames(policy: Policy, datasets: Sequence[Path], count: int, seed: int = 0) -> list[dict]:
    """``count`` frames spread evenly over the datasets' training episodes, as observation dicts."""
    from vlaforge.data import ChunkDataset
    from vlaforge.types import EMBODIMENT, OBS_STATE, TASK

    frames: list[dict] = []
    for root in datasets:
        ds = ChunkDataset(root, policy.config.chunk_size, augment=False, paraphrase=False, progress=False)
        keys = [f"observation.images.{c}" for c in policy.config.cameras]
        want = [k for k in keys if k not in ds.camera_keys]
        if want:
            raise ExportError(f"{root}: calibration needs the policy's cameras {want}; the dataset has "
                              f"{ds.camera_keys}")
        per = max(1, count // len(datasets))
        for i in np.linspace(0, len(ds) - 1, min(per, len(ds))).round().astype(int):
            item = ds.get(int(i), np.random.default_rng(seed))
            frame = {k: (item[k].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for k in keys}
            frames.append(frame | {OBS_STATE: item[OBS_STATE].numpy(), TASK: item[TASK],
                                   EMBODIMENT: item[EMBODIMENT]})
    return frames


def to_fp16(directory: Path, graphs: dict[str, str]) -> None:
    """Every graph's weights and arithmetic in float16, inputs and outputs kept float32 (for GPUs: CPUs have
    no native fp16 arithmetic)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    for f in graphs.values():
        model = convert_float_to_float16(onnx.load(str(directory / f)), keep_io_types=True)
        onnx.save(model, str(directory / f))


def export_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike, *, quantize: str | None = None,
                precision: str = "fp32",
                dataset: Sequence[str | os.PathLike] | None = None, calibration: int = 256,
                instructions: Sequence[str] = (), log=print) -> Path:
    """Export ``checkpoint`` into ``out`` (written to a temporary directory, then renamed: a failed export
    leaves what was at ``out`` untouched). ``dataset``: calibration data for ``quantize="int8"`` and
    instructions for the table (default: the run's dataset from its config.json)."""
    from safetensors.numpy import save_file

    checkpoint, out = Path(checkpoint), Path(out)
    if quantize not in (None, *QUANTIZE):
        raise ExportError(f"quantize: expected one of {QUANTIZE} or none, got {quantize!r}")
    if precision not in ("fp32", "fp16") or (precision == "fp16" and quantize):
        raise ExportError(f"precision: expected fp32, or fp16 without --quantize, got {precision!r}"
                          + (f" with quantize={quantize!r}" if quantize else ""))
    policy = Policy.load(checkpoint).eval()
    datasets = [Path(d) for d in dataset] if dataset else run_dataset(checkpoint)
    missing = [str(d) for d in datasets if not Path(d).is_dir()]
    if missing:
        raise ExportError(f"dataset: expected dataset directories, got {missing} (not found)")
    if quantize and not datasets:
        raise ExportError(f"--quantize {quantize}: calibration needs frames from the policy's dataset; none "
                          f"is recorded beside {checkpoint} (pass --dataset DIR)")
    cfg, sentences = policy.config, _instructions(policy, instructions, datasets)
    s, cams = cfg.image_size, len(cfg.cameras)
    graphs: dict[str, str] = {}
    with atomic_dir(out) as tmp, torch.no_grad():
        for emb, spec in cfg.embodiments.items():
            head = policy.heads[emb]
            log(f"export: {emb}: encoders + fusion + {cfg.head} head, one graph"
                + (f" ({head.sampling_steps} sampling steps unrolled)" if head.generative else ""))
            args = (torch.rand(2, cams, 3, s, s), torch.randn(2, spec.state_dim), torch.randn(2, 384))
            names = ["images", "state", "language"]
            if head.generative:
                args, names = (*args, torch.randn(6, cfg.chunk_size, spec.action_dim)), [*names, "noise"]
            graphs[emb] = graph_file(emb)
            _export(PolicyGraph(policy, emb), args, names, tmp / graphs[emb])
        lang_meta, lang_tensors = _language_table(policy, sentences)
        save_file(lang_tensors, str(tmp / LANGUAGE))
        (tmp / STATS).write_text(json.dumps(stats_to_json(policy.stats), indent=2))
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "vlaforge_version": __version__,
                    "torch_version": torch.__version__, "opset": OPSET, "source": str(checkpoint),
                    "policy": cfg.to_dict(), "head": cfg.head,
                    "sampling": "unrolled" if policy.heads[policy.embodiments[0]].generative else "one pass",
                    "sampling_steps": policy.heads[policy.embodiments[0]].sampling_steps,
                    "precision": "fp32", "graphs": graphs, "language": lang_meta}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if precision == "fp16":
            log("precision: fp16 graphs (float32 inputs and outputs)")
            to_fp16(tmp, graphs)
            manifest["precision"] = "fp16"
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if quantize == "int8":
            from vlaforge.export.quantize import quantize_int8

            frames = calibration_frames(policy, datasets, calibration)
            log(f"quantize: int8 (static QDQ convolutions calibrated on {len(frames)} frames of "
                f"{', '.join(map(str, datasets))}; dynamic MatMul/Gemm)")
            manifest["precision"] = "int8"
            manifest["quantization"] = quantize_int8(tmp, frames)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    log(f"export: {out} ({sum(f.stat().st_size for f in out.iterdir()) / 1e6:.1f} MB)")
    return out
