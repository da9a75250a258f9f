"""Acceleration: chunk latency and Meta-World success of every speed-up, each as a ratio to eager fp32.

For the demo checkpoint (regression head) and a flow teacher (10 Euler steps) with its distilled 1-step
student: eager fp32, eager bf16 (where this CPU runs it natively), ``torch.compile``, vision-encoder caching,
ONNX fp32 and ONNX int8 (``vlaforge export``), each timed on one real dataset frame (p50/p99 of
``predict_chunk``, batch 1, 2 threads, after warm-up) and rolled out on the demo tasks (20 episodes per task,
seeds 1000-1019). Ratios are to the eager fp32 variant of the same checkpoint, measured in the same run.

    python benchmarks/acceleration.py [--checkpoint runs/demo/train/checkpoint]
        [--teacher runs/accel/flow-teacher/checkpoint --student runs/accel/student-1step/checkpoint]
        [--episodes 20] [--calls 200] [--no-success] [--name acceleration]
    vlaforge bench --checkpoint DIR     (the same for DIR; --teacher '' leaves the flow rows out)

The teacher and student are made with (docs/export.md):

    vlaforge train --preset demo --dataset runs/demo/data --out runs/accel/flow-teacher --policy.head flow
    vlaforge distill --teacher runs/accel/flow-teacher/checkpoint --out runs/accel/student-1step --steps 1500

Goals on a 2-core AVX2 machine: ONNX >= 1.3x, int8 >= 1.5x with <= 2 points of success lost, the student >= 4x
faster than the 10-step teacher with <= 5 points lost, flow chunk p50 <= 5 ms for the best flow variant.
onnxruntime picks its kernels by CPUID, so the AVX2 emulation of torch (docs/machines.md) does not slow it:
ONNX ratios measured under emulation are not AVX2 figures, and the table says so.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vlaforge.apps.demo import DEMO_TASKS
from vlaforge.benchmarking import command, machine, markdown_table, results_dir, write
from vlaforge.evaluation.rollout import EvalConfig, evaluate
from vlaforge.export.onnx_export import calibration_frames, export_onnx, run_dataset
from vlaforge.export.onnx_policy import OnnxPolicy
from vlaforge.policy import Policy
from vlaforge.precision import cpu_bf16_support


def interleaved_latency(entries: list[dict], calls: int, rounds: int = 5, warmup: int = 20) -> None:
    """p50/p99 ms of ``predict_chunk`` for every entry (``policy``, ``frame``), timed in ``rounds`` blocks per
    variant, the variants visited in turn, so drift in the machine's load hits all of them alike. Each block
    starts with a few untimed calls: onnxruntime's threads spin for a while after a call, and a block timed
    right after another variant's would pay for them."""
    for e in entries:
        t0 = time.perf_counter()
        for _ in range(warmup):  # torch.compile compiles here
            e["policy"].predict_chunk(e["frame"])
        e["row"]["warmup_s"] = round(time.perf_counter() - t0, 1)
        e["times"] = []
    per = max(1, calls // rounds)
    for _ in range(rounds):
        for e in entries:
            for _ in range(5):
                e["policy"].predict_chunk(e["frame"])
            for _ in range(per):
                t0 = time.perf_counter()
                e["policy"].predict_chunk(e["frame"])
                e["times"].append((time.perf_counter() - t0) * 1000)
    for e in entries:
        e["row"].update(p50_ms=round(float(np.percentile(e["times"], 50)), 2),
                        p99_ms=round(float(np.percentile(e["times"], 99)), 2), calls=len(e["times"]))


def compiled(path: str) -> Policy:
    """The checkpoint with its vision encoder, fusion and heads under ``torch.compile`` (fp32)."""
    p = Policy.load(path).eval()
    p.vision = torch.compile(p.vision, dynamic=False)
    p.fusion = torch.compile(p.fusion, dynamic=False)
    for e in p.embodiments:
        head = p.heads[e]
        for part in ("net", "proj"):  # the generative heads' denoiser, the others' readout
            if hasattr(head, part):
                setattr(head, part, torch.compile(getattr(head, part), dynamic=False))
    return p


def variants(path: str, label: str, work: Path, skip_onnx: bool):
    """(name, policy factory, note) for every variant of one checkpoint, eager fp32 first."""
    native, why = cpu_bf16_support()

    def eager(bf16=False, cache=None):
        def make():
            p = Policy.load(path).eval()
            p.set_precision(bf16, warn=False)
            if cache is not None:
                p.set_vision_cache(cache)
            return p
        return make

    def onnx(quantize):
        def make():
            out = work / f"{label}-{quantize or 'fp32'}"
            export_onnx(path, out, quantize=quantize, log=lambda *_: None)
            return OnnxPolicy(out, threads=2)
        return make

    out = [("eager fp32", eager(), ""),
           ("eager bf16", eager(True) if native else None, "" if native else f"skipped: {why}"),
           ("torch.compile", lambda: compiled(path), "fp32, vision + fusion + head compiled"),
           ("vision cache", eager(cache=1.0), "fp32; features reused while a frame changes <= 1/255; "
                                               "timed on one repeated frame (every call a reuse)")]
    if not skip_onnx:
        out += [("ONNX fp32", onnx(None), "onnxruntime"), ("ONNX int8", onnx("int8"), "static QDQ conv + "
                                                                                    "dynamic MatMul")]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="runs/demo/train/checkpoint")
    ap.add_argument("--teacher", default="runs/accel/flow-teacher/checkpoint",
                    help="a flow checkpoint ('' to skip the flow rows)")
    ap.add_argument("--student", default="runs/accel/student-1step/checkpoint",
                    help="its distilled student (vlaforge distill)")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--no-success", action="store_true", help="latency only")
    ap.add_argument("--no-onnx", action="store_true", help="eager variants only")
    ap.add_argument("--name", default="acceleration")
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot from results/NAME.json")
    args = ap.parse_args()
    if args.plot_only:
        import json

        plot(json.loads((results_dir() / f"{args.name}.json").read_text())["rows"],
             results_dir() / f"{args.name}.png")
        return
    os.environ.setdefault("MUJOCO_GL", "egl")
    torch.set_num_threads(2)
    groups = [("policy", args.checkpoint)]
    if args.teacher and Path(args.teacher).is_dir():
        groups.append(("flow teacher", args.teacher))
        if args.student and Path(args.student).is_dir():
            groups.append(("student", args.student))
    emulated = bool(os.environ.get("ATEN_CPU_CAPABILITY"))
    rows, entries = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for label, path in groups:
            ref = Policy.load(path)
            frame = calibration_frames(ref, run_dataset(Path(path)), 1)[0]
            steps = ref.heads[ref.embodiments[0]].sampling_steps
            for name, make, note in variants(path, label.replace(" ", "-"), Path(tmp), args.no_onnx):
                row = {"checkpoint": label, "head": f"{ref.config.head} ({steps} step{'s' * (steps > 1)})",
                       "variant": name, "note": note}
                rows.append(row)
                if make is None:
                    continue
                if name.startswith("ONNX") and emulated:
                    row["note"] += "; onnxruntime is not slowed by the AVX2 emulation: not an AVX2 figure"
                t0 = time.perf_counter()
                entries.append({"row": row, "policy": make(), "frame": frame})
                row["setup_s"] = round(time.perf_counter() - t0, 1)
                print(f"{label} / {name}: ready in {row['setup_s']} s", flush=True)
        interleaved_latency(entries, args.calls)
        for e in entries:
            row, policy = e["row"], e["policy"]
            if not args.no_success:
                cache = getattr(policy, "vision_cache", None)
                if cache is not None:  # count the rollouts' frames only
                    cache.reset()
                    cache.hits = cache.misses = 0
                r = evaluate(EvalConfig(checkpoint=None, tasks=DEMO_TASKS, episodes=args.episodes,
                                        seed=1000, videos=0, bf16=bool(policy.inference_precision.bf16)),
                             progress=False, print_table=False, policy=policy)
                o = r["overall"]
                row.update(success=round(100 * o["success_rate"], 1), episodes=o["episodes"],
                           rollout_chunk_p50_ms=o["chunk_latency_ms_p50"])
                if cache is not None:
                    row["note"] += f"; rollouts reused {cache.hits} of {cache.hits + cache.misses} frames"
            print(row, flush=True)
            e["policy"] = None
    # ratios to the same checkpoint's eager fp32; the student's to the teacher's eager fp32 too
    base = {r["checkpoint"]: r for r in rows if r["variant"] == "eager fp32"}
    for row in rows:
        if "p50_ms" not in row:
            continue
        ref_row = base[row["checkpoint"]]
        row["speedup"] = round(ref_row["p50_ms"] / row["p50_ms"], 2)
        if "success" in row:
            row["success_delta"] = round(row["success"] - ref_row["success"], 1)
        teacher = base.get("flow teacher")
        if row["checkpoint"] == "student" and teacher is not None:
            row["vs_teacher"] = round(teacher["p50_ms"] / row["p50_ms"], 2)
            if "success" in row:
                row["success_vs_teacher"] = round(row["success"] - teacher["success"], 1)
    columns = ["checkpoint", "head", "variant", "p50_ms", "p99_ms", "speedup", "vs_teacher", "success",
               "success_delta", "success_vs_teacher", "rollout_chunk_p50_ms", "setup_s", "warmup_s", "note"]
    table = markdown_table(rows, columns)
    payload = {"tasks": list(DEMO_TASKS), "episodes_per_task": args.episodes,
               "seeds": [1000, 999 + args.episodes], "calls": args.calls, "threads": 2, "batch": 1,
               "checkpoints": dict(groups), "rows": rows,
               "emulated_avx2": emulated, "machine": machine(precision="per row"),
               "goals": {"onnx_speedup_min": 1.3, "int8_speedup_min": 1.5, "int8_success_loss_max": 2,
                         "student_vs_teacher_min": 4, "student_success_loss_max": 5,
                         "best_flow_p50_ms_max": 5}}
    write(args.name, payload, table, command("acceleration.py"))
    plot(rows, results_dir() / f"{args.name}.png")


def plot(rows: list[dict], path: Path) -> None:
    """Accuracy against speed: one bar per measured variant (chunk p50, log scale), its success written on it
    and its colour (red 0% .. green 100%)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    pts = [r for r in rows if "p50_ms" in r]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(pts) + 1.2))
    cmap = plt.get_cmap("RdYlGn")
    y = np.arange(len(pts))[::-1]
    for yi, r in zip(y, pts):
        ok = r.get("success")
        ax.barh(yi, r["p50_ms"], color=cmap(ok / 100) if ok is not None else "0.7")
        ax.text(r["p50_ms"] * 1.03, yi, f"{r['p50_ms']:.1f} ms" + (f", {ok:.0f}% success" if ok is not None
                                                                  else ""), va="center", fontsize=7)
    ax.set_yticks(y, [f"{r['checkpoint']}: {r['variant']}" for r in pts], fontsize=7)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlim(right=max(r["p50_ms"] for r in pts) * 4)
    ax.set_xlabel("predict_chunk p50, ms (log scale; batch 1, 2 threads); colour: success on the demo tasks")
    ax.set_title("Accuracy against speed")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
