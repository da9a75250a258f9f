"""The "sixth task" question: a policy trained on five Meta-World tasks, evaluated zero-shot (its instruction
only, no demonstration) on tasks it never saw but whose words it did. The held-out tasks recombine trained
verbs and objects: "open the drawer" after training on "close the drawer" and "open the door / window";
"close the door" after "open the door" and "close the drawer / window".

    .venv/bin/python benchmarks/sixth_task.py --root runs/sixth [--demos 50] [--steps 3000] [--episodes 20]

Steps (each reused from ROOT when done): ``--demos`` scripted demonstrations of each of the five ``--train``
tasks (64 px, ``corner``); the ``demo`` recipe for ``--steps`` steps; every trained task and every held-out
task evaluated on ``--episodes`` seeds from 1000 (one video each), success with Wilson 95% intervals.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from few_shot import collect_once, evaluate_once

from vlaforge.benchmarking import command, machine, markdown_table, write

TRAIN = "door-open-v3,drawer-close-v3,window-open-v3,window-close-v3,button-press-topdown-v3"
HELD_OUT = "drawer-open-v3,door-close-v3"


def main() -> None:
    from vlaforge.training import build_config
    from vlaforge.training.trainer import FINAL, train_or_resume

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="runs/sixth")
    ap.add_argument("--train", default=TRAIN)
    ap.add_argument("--held-out", default=HELD_OUT)
    ap.add_argument("--demos", type=int, default=50)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--name", default="sixth_task")
    args = ap.parse_args()
    root = Path(args.root)
    train_tasks, held_out = args.train.split(","), args.held_out.split(",")
    if set(train_tasks) & set(held_out):
        raise SystemExit(f"error: --held-out {sorted(set(train_tasks) & set(held_out))} also in --train")
    t0 = time.perf_counter()
    data = collect_once(root / "data", train_tasks, args.demos)
    train_or_resume(build_config("demo", [f"dataset={data}", f"out={root / 'train'}", "progress=false",
                                          f"steps={args.steps}"]))
    ckpt = root / "train" / FINAL
    log = [json.loads(x) for x in (root / "train" / "log.jsonl").read_text().splitlines()]
    minutes = next(e for e in log if e["event"] == "end")["time"] / 60
    results = {t: evaluate_once(ckpt, t, args.episodes, root / "eval" / t, videos=1)
               | {"trained": t in train_tasks} for t in [*train_tasks, *held_out]}
    rows = [{"task": t, "trained on": "yes" if r["trained"] else "no (zero-shot)",
             "success [95% CI]": f"{r['success_rate']:.0%} [{r['ci95'][0]:.0%}-{r['ci95'][1]:.0%}]"}
            for t, r in results.items()]
    table = markdown_table(rows, list(rows[0]))
    table += (f"\nOne policy, the demo recipe on {args.demos} scripted demonstrations of each trained task, "
              f"{args.steps} steps ({minutes:.1f} min); {args.episodes} episodes per task on seeds from "
              f"1000, each task's own instruction. Videos: {root}/eval/<task>/videos.\n")
    write(args.name, {"results": results, "args": vars(args), "train_minutes": round(minutes, 2),
                      "wall_s": round(time.perf_counter() - t0, 1), "machine": machine()}, table,
          command("sixth_task.py"))


if __name__ == "__main__":
    main()
