"""Meta-World env throughput: steps per second with one camera rendered into every observation.

    MUJOCO_GL=egl python benchmarks/render_fps.py [--task drawer-open-v3] [--steps 100] [--repeats 5]

Each repeat resets the env (seed = repeat index) and times ``--steps`` calls of
``env.step(env.expert_action())``, each of which renders the camera at the given size and
builds the frame dict. Reported: the median over repeats of frames per second, per image size,
and the same loop with no camera (physics + expert only) for reference.
Writes benchmarks/results/render_fps.json and .md. Target: >= 50 fps at 96 px.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from tqdm import tqdm

from vlaforge.benchmarking import machine, machine_line
from vlaforge.fsutil import write_atomic

os.environ.setdefault("MUJOCO_GL", "egl")

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_FPS_96 = 50.0


def measure(task: str, camera: str | None, size: int, steps: int, repeats: int, bar) -> list[float]:
    from vlaforge.sim.metaworld import MetaWorldEnv

    env = MetaWorldEnv(task, cameras=(camera,) if camera else (), image_size=size, max_steps=steps + 1)
    try:
        env.reset(seed=0)
        env.step(env.expert_action())  # warm-up: creates the GL context and renderer
        fps = []
        for r in range(repeats):
            env.reset(seed=r)
            start = time.perf_counter()
            for _ in range(steps):
                env.step(env.expert_action())
            fps.append(steps / (time.perf_counter() - start))
            bar.update(1)
        return fps
    finally:
        env.close()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="drawer-open-v3")
    parser.add_argument("--camera", default="corner")
    parser.add_argument("--sizes", default="64,96,128")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    rows = []
    configs = [(args.camera, s) for s in sizes] + [(None, sizes[0])]
    with tqdm(total=len(configs) * args.repeats, desc="render_fps") as bar:
        for camera, size in configs:
            fps = measure(args.task, camera, size, args.steps, args.repeats, bar)
            rows.append({
                "camera": camera or "none", "image_size": size if camera else None,
                "fps_median": round(statistics.median(fps), 1), "fps_min": round(min(fps), 1),
                "fps_max": round(max(fps), 1), "repeats": args.repeats, "steps": args.steps,
            })

    fps96 = next((r["fps_median"] for r in rows if r["image_size"] == 96), None)
    import mujoco

    result = {
        "benchmark": "render_fps",
        "what": "env.step(env.expert_action()) per second, one camera rendered per step (median of repeats)",
        "task": args.task,
        "mujoco_gl": os.environ.get("MUJOCO_GL"),
        "mujoco": mujoco.__version__,
        "machine": {**machine(), "platform": platform.platform()},  # the machine is shared: its load is in it
        "target": {"image_size": 96, "fps": TARGET_FPS_96,
                   "met": fps96 is not None and fps96 >= TARGET_FPS_96},
        "results": rows,
    }
    out = args.out
    write_atomic(out / "render_fps.json", json.dumps(result, indent=2) + "\n")
    lines = [
        "# render_fps",
        "",
        f"`env.step(env.expert_action())` per second on `{args.task}`, one `{args.camera}` camera rendered",
        (f"into every observation (MUJOCO_GL={result['mujoco_gl']}, mujoco {result['mujoco']}, "
         f"{os.cpu_count()} CPUs, shared: load average {result['machine']['load_avg_1m']}). "
         f"Median of {args.repeats} repeats of {args.steps} steps."),
        "",
        "| camera | image size | fps (median) | min | max |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        size = r["image_size"] if r["image_size"] else "-"
        lines.append(f"| {r['camera']} | {size} | {r['fps_median']} | {r['fps_min']} | {r['fps_max']} |")
    met = "met" if result["target"]["met"] else "NOT met"
    lines += ["", f"Target >= {TARGET_FPS_96:g} fps at 96 px: {met} ({fps96} fps).", "",
              machine_line(result["machine"]), ""]
    write_atomic(out / "render_fps.md", "\n".join(lines))
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
