"""Training throughput of the real loop: samples/s and seconds per step per head, and where the time goes.

    python benchmarks/train_throughput.py [--preset scratch] [--image-size 96] [--batch 64] [--threads 2]
                                          [--steps 3] [--heads regression,tokens,flow,diffusion]

For each head, ``vlaforge.training.train`` runs the ``scratch`` preset (the ``default`` policy: 96 px, MiniLM
instructions, 16-step chunks) for 1 + ``--steps`` optimizer steps on a small dataset recorded to a temp dir
(synthetic 96 px frames, stored as mp4, read through ChunkDataset's frame cache with augmentation on), with
``num_workers=0`` so the data time is measured, not hidden behind workers. The first step (one-off costs:
MiniLM load, allocator warm-up) is dropped; reported are medians over the remaining steps of the trainer's own
per-step timings from log.jsonl: data (waiting for the batch), forward, backward, optimizer (clipping, AdamW,
EMA). Validation and checkpoints are off so they do not count. Writes benchmarks/results/train_throughput.json
and .md, with the machine's load average before and after (others using the CPU slow every number down).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vlaforge.benchmarking import command, machine, machine_line
from vlaforge.config import head_names
from vlaforge.fsutil import write_atomic

RESULTS = Path(__file__).resolve().parent / "results"


def make_dataset(root: Path, image_size: int, episodes: int = 8, length: int = 40) -> Path:
    """Synthetic vision+language episodes (vlaforge.synthetic) recorded with DatasetRecorder."""
    from vlaforge import synthetic
    from vlaforge.data import DatasetRecorder

    rng = np.random.default_rng(0)
    with DatasetRecorder(root, fps=10, cameras=("corner",), image_size=image_size, robot_type="sawyer",
                         state_dim=4, action_dim=4) as rec:
        for e in range(episodes):
            color = list(synthetic.COLORS)[e % 2]
            text = synthetic.INSTRUCTIONS[(e // 2) % 2]
            traj = synthetic.case_trajectory(color, text, length, 4)
            for t in range(length):
                rec.add_frame({"observation.images.corner": synthetic.make_frame(color, image_size, rng),
                               "observation.state": rng.normal(size=4).astype(np.float32), "action": traj[t]})
            rec.save_episode(task=f"case-{e % 4}", instruction=text, seed=e, success=True)
    return root


def run_head(head: str, preset: str, data: Path, out: Path, args) -> dict:
    from vlaforge.data import ChunkDataset
    from vlaforge.training import build_config, train

    cfg = build_config(preset, [
        f"policy.head={head}", f"policy.image_size={args.image_size}", f"dataset={data}", f"out={out}",
        f"steps={1 + args.steps}", f"batch_size={args.batch}", f"threads={args.threads}", "num_workers=0",
        "log_interval=1", "val_interval=0", "ckpt_interval=0", "warmup=0", "progress=false",
        "tensorboard=false", f"bf16={args.bf16}",
    ])
    ds = ChunkDataset(data, chunk_size=cfg.policy.chunk_size, split="all", augment=True, paraphrase=False,
                      progress=False)
    start = time.perf_counter()
    train(cfg, train_data=ds, val_data=None)
    wall = time.perf_counter() - start
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    steps = [x for x in lines if x["event"] == "train"][1:]  # drop the first step (one-off costs)
    precision = next(x for x in lines if x["event"] == "precision")
    med = {k: statistics.median(x[k] for x in steps) for k in
           ("s_per_step", "time/data", "time/forward", "time/backward", "time/optimizer")}
    from vlaforge.policy import Policy

    n_params = Policy.load(out / "checkpoint").num_parameters()
    return {
        "head": head, "precision": precision["precision"], "precision_reason": precision["reason"],
        "parameters": n_params, "measured_steps": len(steps),
        "s_per_step": med["s_per_step"], "samples_per_s": args.batch / med["s_per_step"],
        "s_per_step_best": min(x["s_per_step"] for x in steps),
        "data_s": med["time/data"], "forward_s": med["time/forward"], "backward_s": med["time/backward"],
        "optimizer_s": med["time/optimizer"], "s_per_step_all": [x["s_per_step"] for x in steps],
        "wall_s_incl_setup": wall,
    }


def to_markdown(res: dict) -> str:
    a = res["args"]
    rows = ["| head | precision | params | samples/s | s/step (median) | s/step (best) | data | forward | "
            "backward | optimizer |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["heads"]:
        s = r["s_per_step"]
        split = " | ".join(f"{r[k]:.3f} s ({100 * r[k] / s:.0f}%)"
                           for k in ("data_s", "forward_s", "backward_s", "optimizer_s"))
        rows.append(f"| {r['head']} | {r['precision']} | {r['parameters'] / 1e6:.2f} M | "
                    f"{r['samples_per_s']:.1f} | {s:.2f} | "
                    f"{r['s_per_step_best']:.2f} | {split} |")
    load = res["machine"]["load_avg_1m"], res["load_avg_after"]
    return "\n".join([
        "# Training throughput", "",
        f"`{res['command']}`", "",
        (f"Preset `{a['preset']}` ({res['policy']}), {a['image_size']} px, bf16={a['bf16']}, "
         f"batch {a['batch']}, {a['threads']} torch threads, `num_workers=0`; median of {a['steps']} steps "
         f"after one warm-up step; times per step from the trainer's own log."), "",
        *rows, "",
        (f"{machine_line(res['machine'])} "
         f"Load average (1 min) before the run: {load[0]:.2f}, after: {load[1]:.2f} (the run itself adds "
         f"about {a['threads']})"
         + (": other processes were using the CPU too, so these numbers are pessimistic."
            if load[0] >= 0.5 else ".")), "",
    ])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="scratch")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3,
                        help="measured steps per head (after one warm-up step)")
    parser.add_argument("--heads", default=",".join(head_names()), help="comma-separated registered heads")
    parser.add_argument("--bf16", default="auto",
                        help="training precision: auto (vlaforge.precision), true, false")
    parser.add_argument("--name", default="train_throughput",
                        help="results file name (e.g. for the other CPU kind)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    from tqdm import tqdm

    from vlaforge.training import build_config

    heads = [h for h in args.heads.split(",") if h]
    started = machine()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(Path(tmp) / "data", args.image_size)
        for head in tqdm(heads, desc="heads", unit="head", file=sys.stderr):
            results.append(run_head(head, args.preset, data, Path(tmp) / f"run-{head}", args))
    pc = build_config(args.preset).policy
    started["precision"] = "/".join(sorted({r["precision"] for r in results}))
    started["torch_threads"] = args.threads  # what the runs used (the trainer sets it for its duration)
    res = {
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "command": command("train_throughput.py", argv),
        "policy": (f"d_model {pc.d_model}, depth {pc.depth}, vision {list(pc.vision_channels)}, "
                   f"{pc.language_encoder}"),
        "heads": results, "machine": started, "load_avg_after": round(os.getloadavg()[0], 2),
    }
    out = Path(args.out)
    write_atomic(out / f"{args.name}.json", json.dumps(res, indent=2))
    write_atomic(out / f"{args.name}.md", to_markdown(res))
    print(to_markdown(res))
    return res


if __name__ == "__main__":
    main()
