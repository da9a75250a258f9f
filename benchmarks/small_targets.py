"""What makes small targets work? Ablations of the MT10 policy on the four MT10 tasks whose target is small
(reach, push, pick-place, peg-insert-side; issue 18), each measured the same way.

    .venv/bin/python benchmarks/small_targets.py [--root runs/small] [--variants corner,corner+corner4]
        [--steps 3000] [--horizons 8,4] [--expert centred] [--cameras corner,gripperPOV]

One dataset: 50 scripted demonstrations per task (seeds 0-49), 96 px images from ``corner`` and ``corner4``
(the "moved corner2" of SmolVLA / LeRobot, ~80 degrees from ``corner``: two views resolve the depth of a goal
that floats above the table); ``--cameras`` records others (e.g. ``corner,gripperPOV``, the wrist view) into a
dataset of their own. Each variant trains the ``mt10`` recipe (the ``demo`` policy) with its overrides
for ``--steps`` steps on these four tasks alone, and is evaluated on 20 unseen seeds per task (1000-1019).
``--horizons`` evaluates each checkpoint again with that many actions executed per 16-step chunk (8: the
default, half the chunk; fewer: closer to closed loop) at no training cost. Finished trainings and
evaluations are reused, so the variants can be run one at a time. ``--expert centred`` records reach-v3 with
the expert that aims the gripper centre, not the hand, at the goal
(``vlaforge.sim.metaworld.CENTRED_EXPERT_TASKS``), into a dataset of its own (``data-centred``); its runs and
cells are named ``-centred``. Writes ``benchmarks/results/<name>.json`` and ``.md`` with every cell measured
so far under ``--root``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vlaforge.benchmarking import command, machine, markdown_table, run_precision, train_minutes, write
from vlaforge.fsutil import write_json_atomic

TASKS = ("reach-v3", "push-v3", "pick-place-v3", "peg-insert-side-v3")
CAMERAS = ("corner", "corner4")
#: variant -> training overrides on top of the mt10 recipe
BASE = ["policy.head=flow"]  # as the MT10 benchmark runs it (benchmarks/results/mt10_flow.md)
TASK_AUX = ["policy.aux_env_weight=1.0", "policy.aux_env_per_task=true", "policy.env_token=true"]
VARIANTS = {
    "corner": ["policy.cameras=corner"],
    "corner+corner4": ["policy.cameras=corner,corner4"],
    "corner+coords": ["policy.cameras=corner", "policy.vision_coords=true"],
    "corner+aux": ["policy.cameras=corner", "policy.aux_env_weight=1.0"],
    "corner+corner4+coords": ["policy.cameras=corner,corner4", "policy.vision_coords=true"],
    # the objects' and goal's positions, standardized per task, read from the image tokens before fusion and
    # given to it as a token (policy.env_token)
    "corner+task-aux": ["policy.cameras=corner", *TASK_AUX],
    "corner+corner4+task-aux": ["policy.cameras=corner,corner4", *TASK_AUX],
    # the wrist view: the puck fills it between the fingers as the hand comes down (needs --cameras
    # corner,gripperPOV)
    "corner+gripperPOV+task-aux": ["policy.cameras=corner,gripperPOV", *TASK_AUX],
}


def main() -> None:
    from vlaforge.apps.collect import parse_cameras
    from vlaforge.apps.multitask import recorded_dataset
    from vlaforge.evaluation.rollout import EvalConfig, evaluate
    from vlaforge.sim.metaworld import EXPERTS
    from vlaforge.training import build_config
    from vlaforge.training.trainer import FINAL, train_or_resume

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="runs/small")
    ap.add_argument("--variants", default="corner,corner+corner4",
                    help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--horizons", default="8", help="actions executed per chunk in evaluation (comma list)")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], help="extra training override for every variant")
    ap.add_argument("--name", default="small_targets")
    ap.add_argument("--cameras", default=",".join(CAMERAS),
                    help="cameras recorded in the dataset (comma list); other than the default, a dataset of "
                         "its own (data[-expert]-<cameras>)")
    ap.add_argument("--expert", default="metaworld", choices=EXPERTS,
                    help="reach-v3's demonstrations: Meta-World's expert (hand onto the goal, gripper centre "
                         "4.5 cm from it) or centred (gripper centre onto the goal); a dataset of its own")
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"error: unknown variants {unknown}; expected some of {', '.join(VARIANTS)}")
    horizons = [int(h) for h in args.horizons.split(",")]
    root = Path(args.root)
    tag = "" if args.expert == "metaworld" else f"-{args.expert}"  # its dataset, runs and cells
    cameras = parse_cameras(args.cameras)
    data = recorded_dataset(root, list(TASKS), 50, args.expert, cameras, CAMERAS, args.workers)
    cells_file = root / "cells.json"
    cells = json.loads(cells_file.read_text()) if cells_file.is_file() else {}
    for variant in variants:
        run = root / f"train-{variant}{tag}"
        t0 = time.perf_counter()
        train_or_resume(build_config("mt10", [f"dataset={data}", f"out={run}", f"steps={args.steps}",
                                              *BASE, *VARIANTS[variant], *args.set]))
        minutes = train_minutes(run) or (time.perf_counter() - t0) / 60
        cfg = json.loads((run / "config.json").read_text())
        for horizon in horizons:
            name = f"{variant}{tag}@{horizon}"
            out = root / f"eval-{variant}{tag}-h{horizon}"
            if not (out / "results.json").is_file():
                evaluate(EvalConfig(checkpoint=str(run / FINAL), tasks=TASKS, episodes=args.episodes,
                                    seed=1000, workers=args.workers, execute_steps=horizon, out=str(out),
                                    videos=1))
            res = json.loads((out / "results.json").read_text())
            cells[name] = {"variant": variant, "horizon": horizon, "expert": args.expert,
                           "dataset_cameras": list(cameras),
                           "overrides": BASE + VARIANTS[variant] + args.set,
                           "steps": cfg["steps"], "train_minutes": round(minutes, 1),
                           "precision": run_precision(run),
                           "tasks": {t: {"success_rate": v["success_rate"], "ci95": v["ci95"]}
                                     for t, v in res["tasks"].items()},
                           "mean": res["overall"]["success_rate"],
                           "chunk_latency_ms_p50": res["overall"]["chunk_latency_ms_p50"]}
            write_json_atomic(cells_file, cells, indent=1)  # an interrupted run keeps the cells so far
            print(f"{name}: mean {cells[name]['mean']:.0%} "
                  + " ".join(f"{t.removesuffix('-v3')} {v['success_rate']:.0%}"
                             for t, v in cells[name]["tasks"].items()), flush=True)
    rows = []
    for name, c in cells.items():
        expert = c.get("expert", "metaworld")
        row = {"variant": c["variant"] + ("" if expert == "metaworld" else f", {expert} reach demos"),
               "executed / chunk": c["horizon"]}
        for t in TASKS:
            v = c["tasks"][t]
            row[t.removesuffix("-v3")] = f"{v['success_rate']:.0%} [{v['ci95'][0]:.0%}-{v['ci95'][1]:.0%}]"
        row.update({"mean": f"{c['mean']:.1%}", "steps": c["steps"], "train min": c["train_minutes"],
                    "chunk p50 ms": c["chunk_latency_ms_p50"]})
        rows.append(row)
    table = markdown_table(rows, list(rows[0])) if rows else "(no cells yet)\n"
    table += (f"\nThe `mt10` recipe (`demo` policy, flow head as in the MT10 benchmark) on the four "
              f"small-target MT10 tasks alone, 50 demonstrations each (96 px; the variant names the "
              f"cameras the policy reads), "
              f"{args.episodes} episodes per task on seeds 1000+. Training minutes are on the machine below "
              f"and are in the precision each run chose (`precision` in the JSON).\n")
    write(args.name, {"cells": cells, "tasks": TASKS, "variants": {v: VARIANTS[v] for v in VARIANTS},
                      "machine": machine()}, table, command("small_targets.py"))


if __name__ == "__main__":
    main()
