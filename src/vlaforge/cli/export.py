"""``vlaforge export`` and ``vlaforge distill`` (logic in vlaforge.export; docs/export.md)."""

from __future__ import annotations

from typing import List, Optional

import typer

from vlaforge.cli.options import Checkpoint

FORMATS = ("onnx",)
DEVICES = ("cpu", "cuda", "tensorrt")


def export_cmd(
    checkpoint: Checkpoint,
    out: str = typer.Option(..., help="directory to write (replaced whole, atomically)"),
    format: str = typer.Option("onnx", "--format", help="export format: onnx"),
    quantize: str = typer.Option("none", help="none or int8 (static QDQ convolutions calibrated on the "
                                              "dataset's frames + dynamic int8 MatMul/Gemm)"),
    dataset: Optional[List[str]] = typer.Option(None, help="calibration frames and instructions (default: "
                                                          "the run's dataset from its config.json)"),
    calibration: int = typer.Option(256, min=1, help="calibration frames for --quantize int8"),
    instruction: Optional[List[str]] = typer.Option(None, help="an instruction to add to the exported "
                                                              "sentence table (repeatable)"),
    precision: str = typer.Option("fp32", help="fp32, or fp16 (GPU devices only: a CPU has no native fp16)"),
    device: str = typer.Option("cpu", help="where the export will run: cpu, cuda or tensorrt (GPU ones are "
                                           "checked here and refused on a machine without them)"),
) -> None:
    """Export a checkpoint for onnxruntime: one graph per robot, loaded by OnnxPolicy (no torch needed)."""
    from vlaforge.export.manifest import ExportError
    from vlaforge.export.onnx_export import export_onnx
    from vlaforge.export.onnx_policy import OnnxPolicy, check_provider
    from vlaforge.names import unknown_name

    if format not in FORMATS:
        raise unknown_name("format", format, FORMATS)
    if device not in DEVICES:
        raise unknown_name("device", device, DEVICES)
    check_provider(device)  # before any work: a GPU provider this machine lacks is refused here
    if quantize not in ("none", "int8"):
        raise ExportError(f"--quantize: expected none or int8, got {quantize!r}")
    if precision == "fp16" and device == "cpu":
        raise ExportError("--precision fp16: fp16 runs natively on GPUs (--device cuda or tensorrt); on "
                          "this CPU use --quantize int8, or bf16 in eager PyTorch where the CPU has it "
                          "(bf16=auto)")
    path = export_onnx(checkpoint, out, quantize=None if quantize == "none" else quantize,
                       precision=precision, dataset=dataset or None, calibration=calibration,
                       instructions=instruction or ())
    policy = OnnxPolicy(path, provider=device)
    policy.predict_chunk(policy.example_frame() | {"task": policy.manifest["language"].get(
        "instructions", ["probe"])[0]})
    typer.echo(f"ok: {path} loads and runs ({policy.inference_precision.describe()})")


def distill_cmd(
    teacher: str = typer.Option(..., help="flow or diffusion policy checkpoint to distill"),
    out: str = typer.Option(..., help="run directory: <out>/checkpoint, <out>/distill.json"),
    steps: int = typer.Option(1500, min=1, help="training steps"),
    sampling_steps: int = typer.Option(1, min=1, max=4, help="the student's sampling steps"),
    student_preset: str = typer.Option("", help="a smaller policy preset for the student (default: a copy "
                                                "of the teacher with fewer steps)"),
    train: str = typer.Option("heads", help="heads or all: what trains in a teacher copy"),
    dataset: Optional[List[str]] = typer.Option(None, help="frames to distill on (default: the teacher "
                                                          "run's dataset)"),
    batch_size: int = typer.Option(64, min=1),
    lr: float = typer.Option(1e-3, min=0.0),
    data_weight: float = typer.Option(0.0, min=0.0, help="weight of the head's loss on recorded actions"),
    threads: int = typer.Option(2, min=1),
    progress: bool = typer.Option(True, help="progress bar"),
) -> None:
    """Distill a many-step flow/diffusion teacher into a 1-2-step student trained on the teacher's samples."""
    from vlaforge.export.distillation import DistillConfig, distill

    distill(DistillConfig(teacher=teacher, out=out, steps=steps, sampling_steps=sampling_steps,
                          student_preset=student_preset or None, train=train, dataset=tuple(dataset or ()),
                          batch_size=batch_size, lr=lr, data_weight=data_weight, threads=threads),
            progress=progress)
